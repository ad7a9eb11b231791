"""Faults with real processes: a local Ray cluster the test starts (and ends by process id),
the CLI as the driver, and a SIGKILL to the driver or to the model actor mid-run. In every
case the output must end holding every input id exactly once (read from every result file in
the directory, not only those the manifest lists)."""

import dataclasses
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import yaml
from helpers.owned_processes import OwnedProcess, session_members, start_ray_head
from helpers.paths import ROOT
from helpers.pipeline_data import png_bytes, write_rows
from helpers.seaweedfs import CREDENTIALS, SeaweedFS

pytestmark = pytest.mark.cluster  # every test starts a Ray head, nodes and SeaweedFS

NUM_FILES, ROWS_PER_FILE = 8, 10


def env(**extra) -> dict:
    # The cluster's workers read and write the S3 test server with its credentials.
    return {**os.environ, **CREDENTIALS, "PYTHONPATH": ROOT, "RAY_AUTH_MODE": "token", **extra}


@dataclasses.dataclass
class RayHead:
    address: str
    session_id: int  # every process of the cluster, its workers included, is in this session


@pytest.fixture
def ray_head():
    """A one-node Ray cluster with 2 CPUs, as in CI."""
    with start_ray_head(2, env(), "ray_faults_") as (address, session_id):
        yield RayHead(address, session_id)
    assert not session_members(session_id)


def write_input(directory) -> set:
    os.makedirs(directory)
    ids = set()
    for f in range(NUM_FILES):
        rows = []
        for r in range(ROWS_PER_FILE):
            row_id = f"img{f:02}-{r:02}"
            rows.append({"id": row_id, "image": png_bytes(96, 128, f * 100 + r), "boxes": [[10.0, 12.0, 90.0, 80.0]],
                         "labels": ["a"], "source": "faults"})
            ids.add(row_id)
        write_rows(os.path.join(directory, f"part-{f}.parquet"), rows, row_group_size=ROWS_PER_FILE)
    return ids


def job_file(tmp_path, checkpoint, input_path=None, output_path=None, **sections) -> str:
    config = {
        "input": {"path": input_path or str(tmp_path / "input"), "id_column": "id", "image_column": "image",
                  "boxes_column": "boxes",
                  # Small blocks: each is one result file and one checkpoint entry, so a kill
                  # costs at most the blocks in flight.
                  "num_blocks": NUM_FILES * 4},
        "output": {"path": output_path or str(tmp_path / "output")},
        "model": {"checkpoint": checkpoint},
        # The default CPU reservations, which fill the 2-CPU cluster: a resumed run must fit too.
        "compute": {"num_actors": 1, "torch_threads": 1, "batch_size": 2, "decode_batch_size": 2},
        **sections,
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def start_run(config: str, address: str, *extra: str) -> OwnedProcess:
    return OwnedProcess([sys.executable, "-m", "pipeline", "run", "--config", config, "--progress-interval", "2",
                         *extra], env=env(RAY_ADDRESS=address), cwd=ROOT)


def run_to_end(config: str, address: str, *extra: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "pipeline", "run", "--config", config, *extra], env=env(
        RAY_ADDRESS=address), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"run failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def committed_entries(output) -> int:
    checkpoint = os.path.join(output, "_checkpoint")
    if not os.path.isdir(checkpoint):
        return 0
    return sum(map(is_committed_entry, os.listdir(checkpoint)))


def wait_until(condition, what: str, process: OwnedProcess, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert process.process.poll() is None, f"the run ended before {what}:\n{process.output_tail()}"
        assert time.time() < deadline, f"no {what} after {timeout} s:\n{process.output_tail()}"
        time.sleep(0.2)


def ids_in_every_result_file(output) -> list:
    ids = []
    for name in sorted(os.listdir(output)):
        if name.startswith("masks-") and name.endswith(".parquet"):
            ids += pq.read_table(os.path.join(output, name), columns=["id"]).column(0).to_pylist()
    return ids


def start_job(tmp_path, checkpoint, head: RayHead, committed: int):
    """Input, config and a driver running the job, once `committed` result files are written:
    (input ids, config path, output directory, driver)."""
    ids = write_input(tmp_path / "input")
    config, output = job_file(tmp_path, checkpoint), tmp_path / "output"
    driver = start_run(config, head.address)
    try:
        wait_until(lambda: committed_entries(output) >= committed, f"{committed} committed result files", driver)
    except BaseException:
        driver.stop()
        raise
    return ids, config, output, driver


def test_driver_killed_then_resume(ray_head, vit_pair, tmp_path):
    ids, config, output, driver = start_job(tmp_path, vit_pair.pth, ray_head, committed=16)
    try:
        os.kill(driver.process.pid, signal.SIGKILL)  # the driver alone, mid-run
        driver.process.wait(30)
    finally:
        driver.stop()
    written_before = ids_in_every_result_file(output)
    assert not os.path.exists(output / "_SUCCESS")

    printed = run_to_end(config, ray_head.address, "--set", "output.mode=resume")
    done = int(printed.split(" already written by the run resumed")[0].rsplit("(", 1)[1])
    print(f"driver SIGKILLed with {len(written_before)} rows in result files; the resumed run skipped {done} and "
          f"processed {len(ids) - done} of {len(ids)}")
    assert 0 < done < len(ids) and done <= len(written_before)
    assert ("resume:  the model actors reserve 0 CPUs each instead of 1, leaving one for Ray Data's checkpoint "
            "filter") in printed
    assert f"closing check: passed ({len(ids)} rows out for {len(ids)} in, every id once)" in printed
    final = ids_in_every_result_file(output)
    assert sorted(final) == sorted(ids)  # every id exactly once: no file of the killed run left over twice
    manifest = json.loads((output / "_SUCCESS").read_text())
    assert manifest["rows_out"] == len(ids) and not os.path.exists(output / "_checkpoint")

    again = run_to_end(config, ray_head.address, "--set", "output.mode=resume")
    assert "holds a completed run (_SUCCESS); nothing to resume" in again


def model_actor_pid(head: RayHead) -> int:
    """The model actor's worker process: Ray titles it after the actor's class."""
    for pid in session_members(head.session_id):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read().decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::") and "ModelUDF" in title:
            return pid
    return 0


def test_model_actor_killed_mid_run(ray_head, vit_pair, tmp_path):
    ids, _, output, driver = start_job(tmp_path, vit_pair.pth, ray_head, committed=2)
    try:
        pid = model_actor_pid(ray_head)
        assert pid, "no live model actor found"
        os.kill(pid, signal.SIGKILL)
        assert driver.process.wait(600) == 0, driver.output_tail()
        printed = driver.output_tail(20000)
    finally:
        driver.stop()
    print(f"model actor {pid} SIGKILLed; the run ended with: "
          + next(line for line in printed.splitlines() if "rows in:" in line))
    assert f"closing check: passed ({len(ids)} rows out for {len(ids)} in, every id once)" in printed
    assert sorted(ids_in_every_result_file(output)) == sorted(ids)


def is_committed_entry(name: str) -> bool:
    return name.endswith(".parquet") and ".pending." not in name


def s3_job(store: SeaweedFS, bucket: str, tmp_path, checkpoint):
    """The test input uploaded to a new bucket of `store`, and a job config reading it and
    writing to the bucket's output/: (input ids, config path)."""
    store.create_bucket(bucket)
    ids = write_input(tmp_path / "input")
    client = store.client()
    for name in sorted(os.listdir(tmp_path / "input")):
        client.upload_file(str(tmp_path / "input" / name), bucket, f"input/{name}")
    return ids, job_file(tmp_path, checkpoint, f"s3://{bucket}/input/", f"s3://{bucket}/output/",
                         storage={"endpoint_url": store.endpoint})


def ids_in_result_objects(store: SeaweedFS, bucket: str) -> list:
    """The ids of every result object under the bucket's output/."""
    client, ids = store.client(), []
    for key in store.keys(bucket, "output/"):
        if key.startswith("output/masks-") and key.endswith(".parquet"):
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            ids += pq.read_table(io.BytesIO(body), columns=["id"]).column(0).to_pylist()
    return ids


def test_s3_server_down_mid_run(ray_head, vit_pair, tmp_path):
    """Input, output and checkpoint on SeaweedFS; the server is stopped for 10 s mid-run and
    started again on the same data. The run completes, or fails naming the storage error and
    a resumed run completes it; either way the output holds every id exactly once."""
    store = SeaweedFS(str(tmp_path / "weed")).start()
    try:
        ids, config = s3_job(store, "faults", tmp_path, vit_pair.pth)
        driver = start_run(config, ray_head.address)
        try:
            wait_until(lambda: sum(map(is_committed_entry, store.keys("faults", "output/_checkpoint/"))) >= 4,
                       "4 committed result files", driver)
            store.stop()
            time.sleep(10)
            assert driver.process.poll() is None or driver.process.returncode != 0, "the run ended before the outage"
            store.start()
            returncode = driver.process.wait(600)
            printed = driver.output_tail(20000)
        finally:
            driver.stop()
        if returncode == 0:
            outcome = "the run completed"
        else:
            outcome = "the run failed; a resumed run completed it"
            assert "error: the job stopped: " in printed and "output.mode: resume" in printed, printed[-6000:]
            printed = run_to_end(config, ray_head.address, "--set", "output.mode=resume")
        print(f"S3 server down for 10 s mid-run: {outcome}: "
              + next(line for line in printed.splitlines() if "rows in:" in line))
        assert f"closing check: passed ({len(ids)} rows out for {len(ids)} in, every id once)" in printed
        assert sorted(ids_in_result_objects(store, "faults")) == sorted(ids)
    finally:
        store.stop()


def race_two_runs(config: str, head: RayHead, *extra: str):
    """Two drivers of one config started together; (exit status, output) of each."""
    runs = [start_run(config, head.address, *extra) for _ in range(2)]
    try:
        return [(run.process.wait(600), run.output_tail(20000)) for run in runs]
    finally:
        for run in runs:
            run.stop()


REFUSED = ("another run is writing this output", "is not empty", "another run wrote into")


def assert_one_wrote(outcomes, ids, final_ids) -> None:
    """One run wrote every row; the other was refused before writing, naming why (or, when it
    came after the first had finished a resumable output, found nothing to do)."""
    ran = [printed for code, printed in outcomes if code == 0 and "closing check: passed" in printed]
    assert len(ran) == 1, [printed[-3000:] for _, printed in outcomes]
    other_code, other = next((code, printed) for code, printed in outcomes if printed is not ran[0])
    assert (other_code == 2 and "error: output.path:" in other and any(r in other for r in REFUSED)) or (
        other_code == 0 and "nothing to resume" in other), other[-3000:]
    if "another run is writing this output" in other:
        assert f"on host {socket.gethostname()}, pid " in other
    print("the second run: " + next(line for line in other.splitlines() if "error:" in line or "nothing" in line))
    assert sorted(final_ids) == sorted(ids)  # every id exactly once


def test_two_runs_on_one_local_output(ray_head, vit_pair, tmp_path):
    ids = write_input(tmp_path / "input")
    config = job_file(tmp_path, vit_pair.pth)
    outcomes = race_two_runs(config, ray_head)
    assert_one_wrote(outcomes, ids, ids_in_every_result_file(tmp_path / "output"))
    assert os.path.exists(tmp_path / "output" / "_SUCCESS")
    assert not os.path.exists(tmp_path / "output" / "_samhq_lease.json")


def test_two_resumed_runs_on_one_seaweedfs_output(ray_head, vit_pair, tmp_path):
    store = SeaweedFS(str(tmp_path / "weed")).start()
    try:
        ids, config = s3_job(store, "race", tmp_path, vit_pair.pth)
        outcomes = race_two_runs(config, ray_head, "--set", "output.mode=resume")
        assert_one_wrote(outcomes, ids, ids_in_result_objects(store, "race"))
        keys = store.keys("race", "output/")
        assert "output/_SUCCESS" in keys and "output/_samhq_lease.json" not in keys
    finally:
        store.stop()


def test_sigterm_stops_the_driver_cleanly_then_resume(ray_head, vit_pair, tmp_path):
    """SIGTERM (a node's preemption notice) to the driver mid-run: one error line saying the
    run was stopped and how to go on, exit status 143, no stack dump, the lease released; a
    resumed run completes the output."""
    ids, config, output, driver = start_job(tmp_path, vit_pair.pth, ray_head, committed=8)
    try:
        os.kill(driver.process.pid, signal.SIGTERM)
        code = driver.process.wait(120)
        printed = driver.output_tail(20000)
    finally:
        driver.stop()
    assert code == 143, printed[-4000:]
    assert "error: the run was stopped by SIGTERM before it finished" in printed and "output.mode: resume" in printed
    for dump in ("Traceback", "SIGABRT", "Stack trace", "Fatal Python error", "*** "):
        assert dump not in printed, printed[-4000:]
    assert not os.path.exists(output / "_samhq_lease.json") and not os.path.exists(output / "_SUCCESS")
    printed = run_to_end(config, ray_head.address, "--set", "output.mode=resume")
    assert f"closing check: passed ({len(ids)} rows out for {len(ids)} in, every id once)" in printed
    assert sorted(ids_in_every_result_file(output)) == sorted(ids)
