"""`python -m pipeline finetune` with `training.workers: 2`: Ray Train workers with DDP on a real
local Ray cluster that the tests start (and end by process id), the CLI as the driver. The
demo model trains for a few steps on synthetic scenes with their masks (and the bad rows a real
dataset has), on local files in one test and on S3 (moto's server) in the other; one worker is
SIGKILLed mid-run in the first and the driver in the second, and each run must go on from its
latest training checkpoint and end with a checkpoint the job accepts."""

import hashlib
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from helpers.owned_processes import RAY_TOKEN_AUTH, OwnedProcess, session_members, start_ray_head
from helpers.paths import ROOT
from helpers.pipeline_data import labelled_parquet

from pipeline.checks.checkpoint import check_checkpoint
from pipeline.cli import main
from pipeline.config import StorageConfig
from pipeline.storage import Location, s3_options
from samhq_core import SamHQModel
from samhq_core.training.recipe import HQ_PARAMETER_PREFIXES, trains

pytestmark = [pytest.mark.cluster, pytest.mark.slow]  # a Ray head, Ray Train workers, minutes of CPU

DEMO = os.path.join(ROOT, "models", "samhq-demo-synthetic")
STEPS = 6
# Ray Train's record of the checkpoints it has registered, written as each one is: a run
# killed after it appears resumes from that checkpoint.
SNAPSHOT = "checkpoint_manager_snapshot.json"


def env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": ROOT, **RAY_TOKEN_AUTH, **extra}


@pytest.fixture(scope="module")
def ray_head(s3_endpoint):
    """A one-node Ray cluster of 3 CPUs: 2 workers of 1 CPU and 1 for the decode tasks,
    started after the S3 server so that its workers have the server's credentials. Yields
    (address, session id: every process of the cluster is in that session)."""
    with start_ray_head(3, env(), "ray_tune_") as (address, session_id):
        yield address, session_id
    assert not session_members(session_id)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """16 scenes with their masks, and a corrupt, a misaligned and a malformed-RLE row: about 7
    training rows in each worker's shard."""
    path, _ = labelled_parquet(tmp_path_factory.mktemp("labelled"), num_images=16)
    return path


def config_file(tmp_path, train: str, output: str, storage: StorageConfig, **training) -> str:
    config = {
        "data": {"train": train, "id_column": "image_id", "image_column": "image", "boxes_column": "boxes",
                 "validation_fraction": 0.25, "shuffle_buffer": 4},
        "model": {"checkpoint": DEMO, "output": output},
        "storage": storage.model_dump(exclude_none=True),
        "training": {"workers": 2, "steps": STEPS, "warmup_steps": 1, "log_every": 1,
                     "checkpoint_every": 2, "torch_threads": 1, **training},
    }
    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def start_finetune(config: str, address: str) -> OwnedProcess:
    return OwnedProcess([sys.executable, "-m", "pipeline", "finetune", "--config", config],
                        env=env(RAY_ADDRESS=address), cwd=ROOT)


def wait_for_checkpoint(output: Location, driver: OwnedProcess, timeout: float = 300) -> None:
    snapshot = output.join("_training").join("ray_train").join(SNAPSHOT)
    deadline = time.time() + timeout
    while not snapshot.exists():
        assert driver.process.poll() is None, f"the run ended before a training checkpoint:\n{driver.output_tail()}"
        assert time.time() < deadline, f"no training checkpoint after {timeout} s:\n{driver.output_tail()}"
        time.sleep(0.2)


def worker_pids(session_id: int) -> list:
    """The Ray Train workers' processes: Ray titles them after the actor's class."""
    pids = []
    for pid in session_members(session_id):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read().decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::RayTrainWorker"):
            pids.append(pid)
    return pids


def digest(model: SamHQModel, phase: str) -> str:
    """What the workers log of their trained parameters (pipeline.finetune.worker)."""
    parameters = dict(model.named_parameters())
    h = hashlib.sha256()
    for name in sorted(n for n in parameters if trains(n, phase)):
        h.update(parameters[name].detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def changed_parameters(model: SamHQModel) -> set:
    before, after = SamHQModel.from_pretrained(DEMO).state_dict(), model.state_dict()
    return {k for k in before if not torch.equal(before[k], after[k])}


def check_result(output: Location, printed: str, phase: str, resumed_at: int):
    """The output is the job's checkpoint and the run's report, nothing else; the two workers
    ended with the same trained parameters, those of the output. Returns the model and the
    report."""
    assert sorted(output.names()) == ["config.json", "finetune_report.md", "model.safetensors"]
    model = SamHQModel.from_pretrained(output.url, storage_options=s3_options(output.storage))
    (ranks,) = re.findall(r"workers: 2 ranks trained in step; trained parameters per rank: (.*)", printed)
    digests = dict(re.findall(r"rank (\d) sha256 ([0-9a-f]{16})", ranks))
    assert sorted(digests) == ["0", "1"] and set(digests.values()) == {digest(model, phase)}, ranks
    assert check_checkpoint(output.url, None, output.storage, "model.checkpoint")[1] == []
    with output.join("finetune_report.md").open("rb") as f:
        report = f.read().decode()
    assert report in printed
    assert "Trained by 2 Ray Train workers (DDP)." in report
    assert f"Resumed from a training checkpoint at step {resumed_at}." in report
    for source in ("sam_plus_hq", "hq_only", "sam_only"):
        cells = [c.strip() for c in next(line for line in report.splitlines()
                                         if line.startswith(f"| {source} |")).strip("|").split("|")]
        assert int(cells[1]) > 0 and all(re.fullmatch(r"\d\.\d{4}", c) for c in cells[2:]), cells
    return model, report


def resumed_step(printed: str) -> int:
    (step,) = re.findall(rf"resume: from the training checkpoint at step (\d+) of {STEPS}", printed)
    return int(step)


def test_two_workers_train_hq_in_step_and_go_on_after_a_killed_worker(ray_head, labelled, tmp_path, capsys):
    address, session_id = ray_head
    output = Location(str(tmp_path / "tuned"))
    # 12 images a worker: more than its shard has, so the workers begin a second pass together.
    config = config_file(tmp_path, labelled, output.url, StorageConfig(), batch_size=2, max_failures=1)
    start = time.time()
    driver = start_finetune(config, address)
    try:
        wait_for_checkpoint(output, driver)
        workers = worker_pids(session_id)
        assert len(workers) == 2, workers
        os.kill(workers[-1], signal.SIGKILL)
        assert driver.process.wait(400) == 0, driver.output_tail(20000)
        printed = driver.output_tail(200000)
    finally:
        driver.stop()
    step = resumed_step(printed)
    with capsys.disabled():
        print(f"\nworker {workers[-1]} SIGKILLed; the restarted workers went on from step {step}; "
              f"{time.time() - start:.0f} s in all")
    assert step in (2, 4)
    # Within the first run or the restarted one, the workers began a pass together mid-run.
    attempts = printed.split("resume: from the training checkpoint")
    assert any(len(re.findall(r"data: pass \d+ over the training rows begins", a)) >= 2 for a in attempts), printed
    model, report = check_result(output, printed, "hq", step)
    changed = changed_parameters(model)
    assert changed and all(k.startswith(HQ_PARAMETER_PREFIXES) for k in changed)
    assert "sam_only is unchanged by design" in report

    # A job takes the result as its model.checkpoint.
    job = {"input": {"path": labelled, "id_column": "image_id", "image_column": "image", "boxes_column": "boxes"},
           "output": {"path": str(tmp_path / "masks")}, "model": {"checkpoint": output.url}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    capsys.readouterr()
    assert main(["validate", "--config", str(tmp_path / "job.yaml")]) == 0, capsys.readouterr().err
    assert "config OK" in capsys.readouterr().out


def test_a_killed_driver_is_resumed_by_running_the_command_again(ray_head, labelled, s3_endpoint, tmp_path, capsys):
    """On S3: the labelled rows, the training checkpoints and the result. The whole mask
    decoder trains (training.trainable: decoder); the driver is SIGKILLed after a training
    checkpoint, which ends its Ray Train run with it; the same command again goes on from that
    checkpoint."""
    import boto3

    address, _ = ray_head
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket="tune")
    storage = StorageConfig(endpoint_url=s3_endpoint)
    Location("s3://tune/train/part-0.parquet", storage).fs.put_file(labelled, "tune/train/part-0.parquet")
    output = Location("s3://tune/tuned", storage)
    config = config_file(tmp_path, "s3://tune/train/", output.url, storage, trainable="decoder", batch_size=1,
                         max_failures=0)
    driver = start_finetune(config, address)
    try:
        wait_for_checkpoint(output, driver)
        os.kill(driver.process.pid, signal.SIGKILL)  # the driver alone
        driver.process.wait(30)
    finally:
        driver.stop()
    assert output.names() == ["_training"]
    # An unfinished run is resumed only with its own settings.
    capsys.readouterr()
    assert main(["finetune", "--config", config, "--set", "training.steps=7"]) == 2
    assert "holds an unfinished run of other settings (training.steps: 6 there, 7 here)" in capsys.readouterr().err

    proc = subprocess.run([sys.executable, "-m", "pipeline", "finetune", "--config", config],
                          env=env(RAY_ADDRESS=address), cwd=ROOT, capture_output=True, text=True, timeout=400)
    printed = proc.stdout + proc.stderr
    assert proc.returncode == 0, printed[-6000:]
    assert f"resume: {output.url} holds an unfinished run of these settings" in printed
    step = resumed_step(printed)
    done = [int(s) for s in re.findall(rf"\[decoder\] step (\d+)/{STEPS}", printed)]
    with capsys.disabled():
        print(f"\ndriver SIGKILLed; the rerun went on from step {step} and ran steps {done}")
    assert step >= 2 and done == list(range(step + 1, STEPS + 1))
    model, report = check_result(output, printed, "decoder", step)
    changed = changed_parameters(model)
    assert all(k.startswith("mask_decoder.") for k in changed)
    assert any(k.startswith("mask_decoder.transformer.") for k in changed)  # SAM's decoder trained too
    assert not any(k.startswith("mask_decoder.iou_prediction_head.") for k in changed)  # no gradient reaches it
    assert "sam_only changed too" in report
    # Finished: the next run needs a new directory or --replace-output.
    assert main(["finetune", "--config", config]) == 2
    assert "holds an earlier fine-tuning run's checkpoint" in capsys.readouterr().err
