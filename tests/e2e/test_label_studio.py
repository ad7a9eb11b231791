"""The Label Studio export in a real Label Studio server (pip's `label-studio`, started on
127.0.0.1 in the test's own data directory, ended by process id): a project made from the
export's labeling config takes its tasks, and each task's image, a local-files URL under the
document root (`export --label-studio-root`), is served as the image's bytes.

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

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.owned_processes import OwnedProcess, free_port
from helpers.paths import ROOT
from helpers.result_data import describe_job, rect_mask, result_row

from pipeline.cli import main
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


def test_label_studio_serves_the_exported_tasks_images(tmp_path, capsys):
    root = tmp_path / "root"  # the document root; Label Studio's storages must lie below it
    pictures = root / "pictures"
    (pictures / "scenes").mkdir(parents=True)
    image_bytes = {name: os.urandom(64) + name.encode() for name in ("scenes/a.png", "b.png")}
    for name, data in image_bytes.items():
        (pictures / name).write_bytes(data)
    results = tmp_path / "results"
    results.mkdir()
    rows = [{**result_row(f"r{k}", (H, W), [rect_mask(H, W, 2, 12, 3, 20)], [0.9], categories=["box"]),
             "path": str(pictures / name)} for k, name in enumerate(image_bytes)]
    schema = pa.schema([pa.field("id", pa.string()), pa.field("cat", pa.list_(pa.string())),
                        pa.field("path", pa.string()), *RESULT_FIELDS])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), results / "masks-0-000000-0.parquet")
    describe_job(str(results), 2, {"id_column": "id", "category_column": "cat", "image_uri_column": "path",
                                   "allowed_uri_prefixes": [str(pictures)]})
    tasks_path = tmp_path / "tasks.json"
    assert main(["export", "--format", "label-studio", "--input", str(results), "--output", str(tasks_path),
                 "--label-studio-root", str(root)]) == 0
    assert "local_files: 2" in capsys.readouterr().out

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    environment = {**os.environ, "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
                   "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(root), "LABEL_STUDIO_BASE_DATA_DIR": str(tmp_path)}
    with OwnedProcess([LABEL_STUDIO, "start", "--no-browser", "--data-dir", str(tmp_path / "ls-data"),
                       "--internal-host", "127.0.0.1", "--port", str(port), "--username", "test@example.com",
                       "--password", "test-password", "--user-token", TOKEN, "--enable-legacy-api-token"],
                      env=environment, cwd=str(tmp_path)) as server:
        wait_until_up(base, server)
        project = api(base, "/api/projects", {"title": "review",
                                              "label_config": (tmp_path / "tasks.labeling_config.xml").read_text()})
        api(base, "/api/storages/localfiles", {"project": project["id"], "path": str(pictures), "title": "pictures",
                                               "use_blob_urls": False})
        api(base, f"/api/projects/{project['id']}/import", json.loads(tasks_path.read_text()))
        tasks = api(base, f"/api/tasks?project={project['id']}&fields=all")
        tasks = tasks["tasks"] if isinstance(tasks, dict) else tasks
        assert sorted(t["data"]["source_id"] for t in tasks) == ["r0", "r1"]
        for task in tasks:
            name = list(image_bytes)[int(task["data"]["source_id"][1:])]
            assert task["data"]["image"] == f"/data/local-files/?d=pictures/{name}"
            assert api(base, task["data"]["image"]) == image_bytes[name]  # served by Label Studio itself
            (prediction,) = api(base, f"/api/predictions?task={task['id']}")
            assert prediction["result"][0]["value"]["brushlabels"] == ["box"]
