"""End to end, as users run it: the CLI against a SeaweedFS S3 server, and `ray job submit`
of a config to a two-node local Ray cluster. Each test starts what it uses in sessions of its
own and ends exactly those processes, by id (tests/helpers/owned_processes.py), also when it fails."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
import yaml
from helpers.models import samhq_core_masks
from helpers.owned_processes import RAY_TOKEN_AUTH, OwnedProcess, free_port, ray_port_flags, session_members, wait_for_port
from helpers.paths import ROOT
from helpers.pipeline_data import sample_rows, write_rows
from helpers.seaweedfs import CREDENTIALS, SeaweedFS
from pycocotools.coco import COCO


def env(**extra) -> dict:
    # Token authentication, as the README's ray job submit section sets it: the cluster, the
    # nodes joining it and the CLIs talking to it all use one token (RAY_TOKEN_AUTH's).
    return {**os.environ, **CREDENTIALS, "PYTHONPATH": ROOT, **RAY_TOKEN_AUTH, **extra}


def run(args, **kwargs):
    proc = subprocess.run(args, capture_output=True, text=True, env=env(), timeout=600, **kwargs)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture
def seaweedfs(tmp_path):
    server = SeaweedFS(str(tmp_path / "weed")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.cluster
def test_cli_on_seaweedfs_and_coco_export(seaweedfs, vit_pair, tmp_path):
    seaweedfs.create_bucket("e2e")
    client = seaweedfs.client()
    rows = sample_rows(num_good=4)
    write_rows(str(tmp_path / "input.parquet"), rows, row_group_size=4)
    client.upload_file(str(tmp_path / "input.parquet"), "e2e", "input/part-0.parquet")
    client.upload_file(vit_pair.pth, "e2e", "models/vit_small.pth")
    config = {
        "input": {"path": "s3://e2e/input/", "id_column": "id", "image_column": "image", "boxes_column": "boxes",
                  "category_column": "labels"},
        "output": {"path": "s3://e2e/output/"},
        "model": {"checkpoint": "s3://e2e/models/vit_small.pth"},
        "compute": {"num_actors": 1, "batch_size": 2},
        "storage": {"endpoint_url": seaweedfs.endpoint},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    run([sys.executable, "-m", "pipeline", "validate", "--config", str(path)], cwd=ROOT)
    proc = run([sys.executable, "-m", "pipeline", "run", "--config", str(path)], cwd=ROOT)
    assert f"rows in: {len(rows)}, rows out: {len(rows)}" in proc.stdout
    assert "e2e-secret" not in proc.stdout + proc.stderr

    coco_path = tmp_path / "instances.json"
    run([sys.executable, "-m", "pipeline", "export-coco", "--input", "s3://e2e/output/", "--output", str(coco_path),
         "--id-column", "id", "--category-column", "labels", "--endpoint-url", seaweedfs.endpoint], cwd=ROOT)
    coco = COCO(str(coco_path))
    good = [r for r in rows if r["id"].startswith("good")]
    assert len(coco.getImgIds()) == len(good) + 3  # + bad_boxes, no_boxes, null_boxes; failed rows have no image
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} >= {"a", "b"}
    # Each good image's exported masks, decoded by pycocotools, are the masks samhq_core gives
    # for its boxes when run directly (no Ray, no S3, no export).
    images = {image["source_id"]: image["id"] for image in coco.loadImgs(coco.getImgIds())}
    for row in good:
        expected, scores, _ = samhq_core_masks(vit_pair.ours, row["image"], row["boxes"])
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[images[row["id"]]]))
        assert len(annotations) == len(row["boxes"])
        for annotation, mask, score in zip(annotations, expected, scores, strict=True):
            assert (coco.annToMask(annotation).astype(bool) == mask).mean() > 0.999
            assert annotation["score"] == pytest.approx(float(score), abs=1e-3)


# Ray's GCS logs at error level when it stops an actor whose worker has already exited (a
# released Ray Data pool actor, say): "the success behavior for KillActor is the rpc failing"
# (ray-project/ray#53412; quieted in the actor manager by #58544, not in the scheduler). The job
# is unaffected; any other error line still fails the test.
RAY_KILL_ACTOR_RACE = re.compile(r"\(pid=gcs_server\).*KillActor RPC failed for actor \S+: RpcError: RPC error: Socket closed")


def alive_nodes(gcs_port: int) -> int:
    listing = run(["ray", "list", "nodes", f"--address=127.0.0.1:{gcs_port}", "--format=json"]).stdout
    try:
        return sum(n["state"] == "ALIVE" for n in json.loads(listing))
    except json.JSONDecodeError:  # "No resource in the cluster" while the nodes register
        return 0


@pytest.mark.cluster
def test_ray_job_submit_to_two_node_cluster(vit_pair, tmp_path):
    gcs_port, dashboard_port = free_port(), free_port()
    # Ray's socket paths must stay short (107 bytes): a temp dir of its own under /tmp.
    ray_temp = tempfile.mkdtemp(prefix="ray_e2e_", dir="/tmp")
    head = ["ray", "start", "--head", "--block", f"--port={gcs_port}", "--num-cpus=1", "--include-dashboard=true",
            "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1", f"--temp-dir={ray_temp}",
            "--disable-usage-stats", *ray_port_flags(head=True, dashboard_port=dashboard_port)]
    worker = ["ray", "start", "--block", f"--address=127.0.0.1:{gcs_port}", "--num-cpus=2",
              "--node-ip-address=127.0.0.1", *ray_port_flags(head=False)]
    os.makedirs(tmp_path / "input")
    rows = sample_rows(num_good=4)
    write_rows(str(tmp_path / "input" / "part-0.parquet"), rows, row_group_size=3)
    config = {
        "input": {"path": str(tmp_path / "input"), "id_column": "id", "image_column": "image", "boxes_column": "boxes"},
        "output": {"path": str(tmp_path / "output")},
        "model": {"checkpoint": vit_pair.pth},
        "compute": {"num_actors": 1, "batch_size": 2},
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    started = []
    try:
        started.append(OwnedProcess(head, env=env()))
        wait_for_port(dashboard_port, timeout=120, process=started[0])
        started.append(OwnedProcess(worker, env=env()))
        deadline = time.time() + 120
        while alive_nodes(gcs_port) < 2 and time.time() < deadline:
            time.sleep(1)
        assert alive_nodes(gcs_port) == 2
        proc = run(["ray", "job", "submit", f"--address=http://127.0.0.1:{dashboard_port}", "--working-dir", ROOT,
                    "--", "python", "-m", "pipeline", "run", "--config", str(tmp_path / "job.yaml")], cwd=ROOT)
        printed = proc.stdout + proc.stderr
        assert f"rows in: {len(rows)}, rows out: {len(rows)}" in proc.stdout and "succeeded" in proc.stdout, printed
        assert re.search(r"^model: +1 actor \(1 CPU, 0 GPU each\) on CPU", proc.stdout, re.M), printed
        for noise in ("core_worker.cc", " E ", "Traceback", "Total Progress"):
            assert not [line for line in printed.splitlines()
                        if noise in line and not RAY_KILL_ACTOR_RACE.search(line)], (noise, printed)
    finally:
        for owned in reversed(started):
            owned.stop()
        shutil.rmtree(ray_temp, ignore_errors=True)
    assert not any(session_members(owned.session_id) for owned in started)


@pytest.mark.cluster
def test_demo_command(tmp_path):
    """`python -m pipeline demo`, the README's first command, end to end with the shipped
    demo model: its masks are real (evaluated against the scenes' exact masks)."""
    proc = run([sys.executable, "-m", "pipeline", "demo", "--workdir", str(tmp_path / "demo"), "--num-images", "3"],
               cwd=ROOT)
    assert "trained by this project on synthetic scenes" in proc.stdout
    assert "rows in: 3, rows out: 3" in proc.stdout
    coco = COCO(str(tmp_path / "demo" / "instances.json"))
    assert len(coco.getImgIds()) == 3 and len(coco.getAnnIds()) > 0
    overlays = sorted(os.listdir(tmp_path / "demo" / "overlays"))
    assert len(overlays) == 3 and all(name.endswith(".png") for name in overlays)
    report = (tmp_path / "demo" / "evaluation.md").read_text()
    miou = float(re.search(r"\| mIoU \| ([0-9.]+) \|", report).group(1))
    assert miou > 0.5, report  # measured 0.79 on these scenes; a random model scores about 0.03


def test_console_script_is_the_cli():
    """`samhq-annotate`, installed with the project, is `python -m pipeline`."""
    from pipeline.config.command import config_schema

    script = shutil.which("samhq-annotate") or os.path.join(os.path.dirname(sys.executable), "samhq-annotate")
    proc = run([script, "schema", "finetune"])
    assert proc.stdout == config_schema("finetune")


def imported_modules(args, cwd):
    """The top-level packages a `python -m pipeline` command imported (python -X importtime)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "pipeline", *args], capture_output=True,
                          text=True, env=env(), cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in proc.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


@pytest.mark.slow  # several CLI processes
def test_help_exports_and_review_import_neither_torch_nor_ray(tmp_path):
    """What only reads a job's output or an export, and the help, start quickly: no torch, no Ray."""
    from helpers.review_data import write_job

    job = write_job(str(tmp_path / "job"), 12, image_files=True)
    for args in (["--help"], ["run", "--help"],
                 ["export", "--format", "coco-polygons", "--input", job["output"], "--output", str(tmp_path / "c.json")],
                 ["export", "--format", "label-studio", "--input", job["output"], "--output", str(tmp_path / "l.json")],
                 ["review", "--input", job["output"], "--out", str(tmp_path / "page")], ["import", "--help"],
                 ["import", "--format", "coco", "--input", str(tmp_path / "c.json"), "--output",
                  str(tmp_path / "labelled.parquet")]):
        modules = imported_modules(args, tmp_path)
        assert "pipeline" in modules and not modules & {"torch", "ray"}, (args, sorted(modules & {"torch", "ray"}))
