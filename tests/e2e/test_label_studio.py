"""The Label Studio export and import in a real Label Studio server (pip's `label-studio`,
started on 127.0.0.1 in the tests' own data directory, ended by process id): a project made
from the export's labeling config takes its tasks, and each task's image, a local-files URL
under the document root (`export --label-studio-root`), is served as the image's bytes; the
annotations submitted there come back through the project's JSON export and `import`.

Label Studio (Django and its dependencies) does not install beside this project's pins: it
runs from a virtual environment of its own, named by LABEL_STUDIO_BIN (default
.venv-label-studio/bin/label-studio; `python3 -m venv .venv-label-studio &&
.venv-label-studio/bin/pip install label-studio==1.23.2`). Without one the test is skipped,
saying so."""

import json
import os
import time
import urllib.error
import urllib.request

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.owned_processes import OwnedProcess, free_port
from helpers.paths import ROOT
from helpers.result_data import describe_job, disk_mask, rect_mask, result_row

from pipeline.cli import main
from pipeline.masks import rle
from pipeline.schema import RESULT_FIELDS

LABEL_STUDIO = os.environ.get("LABEL_STUDIO_BIN", os.path.join(ROOT, ".venv-label-studio", "bin", "label-studio"))
TOKEN = "samhq-annotate-test-token"
H, W = 20, 30

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not os.access(LABEL_STUDIO, os.X_OK), reason=f"no Label Studio at {LABEL_STUDIO} (LABEL_STUDIO_BIN)")]


def api(base: str, path: str, body=None, method=None):
    request = urllib.request.Request(base + path, method=method or ("POST" if body is not None else "GET"),
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            data = response.read()
            return json.loads(data) if response.headers.get_content_type() == "application/json" else data
    except urllib.error.HTTPError as e:
        raise AssertionError(f"{request.method} {path}: HTTP {e.code}: {e.read()[:2000]!r}") from None


def wait_until_up(base: str, server: OwnedProcess, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert server.process.poll() is None, f"Label Studio exited:\n{server.output_tail()}"
        try:
            urllib.request.urlopen(base + "/health", timeout=5)
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(1)
    raise TimeoutError(f"Label Studio did not answer within {timeout} s:\n{server.output_tail()}")


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    """A Label Studio server for the module's tests, each with projects of its own: (its URL,
    its document root, under which each test puts its images)."""
    home = tmp_path_factory.mktemp("label_studio")
    root = home / "root"  # the document root; Label Studio's storages must lie below it
    root.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    environment = {**os.environ, "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
                   "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(root), "LABEL_STUDIO_BASE_DATA_DIR": str(home)}
    with OwnedProcess([LABEL_STUDIO, "start", "--no-browser", "--data-dir", str(home / "ls-data"),
                       "--internal-host", "127.0.0.1", "--port", str(port), "--username", "test@example.com",
                       "--password", "test-password", "--user-token", TOKEN, "--enable-legacy-api-token"],
                      env=environment, cwd=str(home)) as server:
        wait_until_up(base, server)
        yield base, root


def exported_job(tmp_path, pictures, masks_by_name, categories):
    """A job's output over the images `pictures/<name>` (rows r0, r1, ...), exported as Label
    Studio tasks for the document root above `pictures`; the tasks' path."""
    results = tmp_path / "results"
    results.mkdir()
    rows = [{**result_row(f"r{k}", (H, W), masks, [0.9] * len(masks), categories=categories[name]),
             "path": str(pictures / name)} for k, (name, masks) in enumerate(masks_by_name.items())]
    schema = pa.schema([pa.field("id", pa.string()), pa.field("cat", pa.list_(pa.string())),
                        pa.field("path", pa.string()), *RESULT_FIELDS])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), results / "masks-0-000000-0.parquet")
    describe_job(str(results), len(rows), {"id_column": "id", "category_column": "cat", "image_uri_column": "path",
                                           "allowed_uri_prefixes": [str(pictures)]})
    tasks_path = tmp_path / "tasks.json"
    assert main(["export", "--format", "label-studio", "--input", str(results), "--output", str(tasks_path),
                 "--label-studio-root", str(pictures.parent)]) == 0
    return tasks_path


def project_with_tasks(base, title, tasks_path, pictures):
    """A project made from the export's labeling config, its images served from `pictures`
    (a local-files storage), with the exported tasks imported: the project, its tasks."""
    config = tasks_path.with_name(tasks_path.name.replace(".json", ".labeling_config.xml")).read_text()
    project = api(base, "/api/projects", {"title": title, "label_config": config})
    api(base, "/api/storages/localfiles", {"project": project["id"], "path": str(pictures), "title": "pictures",
                                           "use_blob_urls": False})
    api(base, f"/api/projects/{project['id']}/import", json.loads(tasks_path.read_text()))
    tasks = api(base, f"/api/tasks?project={project['id']}&fields=all")
    return project, tasks["tasks"] if isinstance(tasks, dict) else tasks


def test_label_studio_serves_the_exported_tasks_images(label_studio, tmp_path, capsys):
    base, root = label_studio
    pictures = root / "pictures"
    (pictures / "scenes").mkdir(parents=True)
    image_bytes = {name: os.urandom(64) + name.encode() for name in ("scenes/a.png", "b.png")}
    for name, data in image_bytes.items():
        (pictures / name).write_bytes(data)
    tasks_path = exported_job(tmp_path, pictures, {name: [rect_mask(H, W, 2, 12, 3, 20)] for name in image_bytes},
                              {name: ["box"] for name in image_bytes})
    assert "local_files: 2" in capsys.readouterr().out

    _, tasks = project_with_tasks(base, "review", tasks_path, pictures)
    assert sorted(t["data"]["source_id"] for t in tasks) == ["r0", "r1"]
    for task in tasks:
        name = list(image_bytes)[int(task["data"]["source_id"][1:])]
        assert task["data"]["image"] == f"/data/local-files/?d=pictures/{name}"
        assert api(base, task["data"]["image"]) == image_bytes[name]  # served by Label Studio itself
        (prediction,) = api(base, f"/api/predictions?task={task['id']}")
        assert prediction["result"][0]["value"]["brushlabels"] == ["box"]


def test_corrections_submitted_in_label_studio_come_back_for_fine_tuning(label_studio, tmp_path, capsys):
    """Annotations submitted as Label Studio's editor submits them (the prediction's regions
    under their ids, `parent_prediction` naming it): one region repainted, one kept, one
    deleted, one drawn; the project's JSON export, imported, gives the masks pixel-exact with
    whether a person changed each. That export lists only the ids of a task's predictions and
    nests the one each annotation started from in its `prediction`: what `changed` is judged by."""
    base, root = label_studio
    pictures = root / "corrections"
    pictures.mkdir()
    for name in ("a.png", "b.png"):
        (pictures / name).write_bytes(os.urandom(64))
    predicted = {"a.png": [rect_mask(H, W, 2, 12, 3, 20), disk_mask(H, W, 12, 20, 6)], "b.png": [rect_mask(H, W, 0, 5, 0, 5)]}
    tasks_path = exported_job(tmp_path, pictures, predicted, {"a.png": ["box", "disk"], "b.png": ["box"]})
    project, tasks = project_with_tasks(base, "corrections", tasks_path, pictures)
    by_row = {task["data"]["source_id"]: task for task in tasks}

    repainted = predicted["a.png"][0].astype(bool)
    repainted[14:18, 22:29] = True
    drawn = rect_mask(H, W, 10, 18, 10, 25).astype(bool)
    for row_id, edit in (("r0", lambda regions: [brush_region(regions[0], repainted), regions[1]]),
                         ("r1", lambda regions: [brush_region({**regions[0], "id": "drawn"}, drawn)])):
        (prediction,) = api(base, f"/api/predictions?task={by_row[row_id]['id']}")
        api(base, f"/api/tasks/{by_row[row_id]['id']}/annotations/",
            {"result": edit(prediction["result"]), "parent_prediction": prediction["id"], "was_cancelled": False})
    export = api(base, f"/api/projects/{project['id']}/export?exportType=JSON")
    exported = json.loads(export)
    assert all(isinstance(p, int) for task in exported for p in task["predictions"])  # ids alone, here
    (tmp_path / "export.json").write_bytes(export)

    labelled = tmp_path / "labelled.parquet"
    capsys.readouterr()
    assert main(["import", "--format", "label-studio", "--input", str(tmp_path / "export.json"), "--output",
                 str(labelled), "--label-studio-root", str(root)]) == 0
    printed = capsys.readouterr().out
    assert "read 2 tasks: 3 annotations imported into 2 rows" in printed
    assert "1 changed by a person, 1 unchanged, 1 added; 1 predicted region deleted" in printed
    rows = {row["id"]: row for row in pq.read_table(labelled).to_pylist()}
    assert sorted(rows) == ["r0", "r1"]
    masks = {row_id: [rle.decode(m, row_id, "mask") for m in row["masks"]] for row_id, row in rows.items()}
    assert np.array_equal(masks["r0"][0], repainted) and np.array_equal(masks["r0"][1], predicted["a.png"][1])
    assert np.array_equal(masks["r1"][0], drawn)
    assert rows["r0"]["changed"] == [True, False] and rows["r1"]["changed"] == [True]
    assert rows["r0"]["categories"] == ["box", "disk"] and rows["r0"]["image_uri"] == str(pictures / "a.png")


def brush_region(region, mask):
    """A brush region with its pixels repainted as Label Studio's editor encodes them."""
    from label_studio_converter.brush import mask2rle

    return {**region, "value": {**region["value"], "rle": mask2rle(mask.astype(np.uint8) * 255)}}
