"""Faults with real processes, on a local Ray cluster of a head and worker nodes that the
module starts (each node a process of its own, ended by process id): the CLI as the driver, a
SIGKILL to the driver (in a run and in its resumed run), to the model actor, or to a whole
worker node, a worker node preempted (SIGTERM, then SIGKILL), and the S3 server down. In every
case the output must end holding every input id exactly once (read from every result file in
the directory, not only those the manifest lists)."""

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import yaml
from helpers.owned_processes import RAY_TOKEN_AUTH, OwnedProcess, RayCluster, start_ray_cluster
from helpers.paths import ROOT
from helpers.pipeline_data import png_bytes, write_rows
from helpers.seaweedfs import CREDENTIALS, SeaweedFS

pytestmark = pytest.mark.cluster  # every test runs on a Ray cluster of several nodes, some on SeaweedFS

NUM_FILES, ROWS_PER_FILE = 8, 10
# The cluster between tests: a head that runs no task (0 CPUs: the GCS, the drivers' node) and
# two worker nodes of 1 CPU each, which place the model actor and the read, decode and write
# tasks: 2 CPUs in all, as in CI, so that a resumed run finds its first run's cluster full. A
# test that loses a node adds a third worker first (a spot node joining), so that the job still
# has a CPU for its tasks beside the model actor once a node is gone.
WORKER_CPUS = (1, 1)
# The head's GCS marks a node dead after 5 failed health checks; once a second instead of every
# 3 s, so that a killed node's actor is restarted elsewhere after ~5 s instead of ~15 s. A
# check that merely answers slowly (a loaded machine) fails only after the default 10 s.
CLUSTER_ENV = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "5"}
MODEL_ACTOR = "ModelUDF"  # Ray titles an actor's worker process after its class


def env(**extra) -> dict:
    # The cluster's workers read and write the S3 test server with its credentials.
    return {**os.environ, **CREDENTIALS, "PYTHONPATH": ROOT, **RAY_TOKEN_AUTH, **extra}


@pytest.fixture(scope="module")
def ray_nodes():
    """The module's Ray cluster (see WORKER_CPUS); every process of it is ended afterwards."""
    with start_ray_cluster(WORKER_CPUS, env(**CLUSTER_ENV), "ray_faults_") as cluster:
        yield cluster
    left = [(node, node.pids()) for node in [cluster.head, *cluster.workers, *cluster.gone] if node and node.pids()]
    assert not left


@pytest.fixture
def cluster(ray_nodes: RayCluster):
    """The module's cluster as the test finds it: the head and two worker nodes, no model actor
    of an earlier test's job left; put back in that shape after a test that changed it (lost
    or added a node, also when it failed)."""
    if len(ray_nodes.workers) != len(WORKER_CPUS):
        while len(ray_nodes.workers) < len(WORKER_CPUS):
            ray_nodes.add_worker(WORKER_CPUS[0])
        while len(ray_nodes.workers) > len(WORKER_CPUS):
            ray_nodes.kill(ray_nodes.workers[-1])
        ray_nodes.wait_for_nodes()
    deadline = time.time() + 60  # the actor of a job whose driver was killed ends with that job
    while (node := ray_nodes.node_running(MODEL_ACTOR)) is not None:
        if time.time() > deadline:
            pid = node.process_titled(MODEL_ACTOR)
            if pid:
                described = ray_nodes.describe_worker(pid)
                os.kill(pid, signal.SIGKILL)  # a process of this module's cluster: the next test's starts clean
                pytest.fail(f"a model actor of an earlier job is still alive after 60 s on {node}; "
                            f"SIGKILLed it after recording it:\n{described}")
        time.sleep(0.2)
    gone = len(ray_nodes.gone)
    yield ray_nodes
    if len(ray_nodes.gone) != gone:  # the next test's resource check must not count a dead node
        ray_nodes.wait_for_nodes()


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


def start_job(tmp_path, checkpoint, cluster: RayCluster, committed: int):
    """Input, config and a driver running the job, once `committed` result files are written:
    (input ids, config path, output directory, driver)."""
    ids = write_input(tmp_path / "input")
    config, output = job_file(tmp_path, checkpoint), tmp_path / "output"
    driver = start_run(config, cluster.address)
    try:
        wait_until(lambda: committed_entries(output) >= committed, f"{committed} committed result files", driver)
    except BaseException:
        driver.stop()
        raise
    return ids, config, output, driver


def kill_driver(driver: OwnedProcess) -> None:
    try:
        os.kill(driver.process.pid, signal.SIGKILL)  # the driver alone, mid-run
        driver.process.wait(30)
    finally:
        driver.stop()


def rows_skipped(printed: str) -> int:
    """The rows a resumed run found written already, from its summary."""
    return int(printed.split(" already written by the run resumed")[0].rsplit("(", 1)[1])


def test_driver_killed_then_resume(cluster, vit_pair, tmp_path):
    """The driver SIGKILLed mid-run, then the driver of the resumed run SIGKILLed mid-run too:
    the run resumed once more completes the output, every id once."""
    ids, config, output, driver = start_job(tmp_path, vit_pair.pth, cluster, committed=8)
    kill_driver(driver)
    written_before = ids_in_every_result_file(output)
    committed_before = committed_entries(output)
    assert not os.path.exists(output / "_SUCCESS")

    resumed = start_run(config, cluster.address, "--set", "output.mode=resume")
    try:
        wait_until(lambda: committed_entries(output) >= committed_before + 4,
                   f"4 result files committed by the resumed run (after {committed_before})", resumed)
    except BaseException:
        resumed.stop()
        raise
    kill_driver(resumed)
    printed = resumed.output_tail(20000)
    done_first = int(re.search(rf"^resume: +(\d+) of {len(ids)} rows already written", printed, re.M).group(1))
    assert 0 < done_first <= len(written_before), printed[-4000:]
    # The first run filled the 2-CPU cluster; the resumed run makes room for the checkpoint filter.
    assert ("resume:  the model actors reserve 0 CPUs each instead of 1, leaving one for Ray Data's checkpoint "
            "filter") in printed
    written_second = ids_in_every_result_file(output)
    assert not os.path.exists(output / "_SUCCESS")

    printed = run_to_end(config, cluster.address, "--set", "output.mode=resume")
    done = rows_skipped(printed)
    print(f"driver SIGKILLed with {len(written_before)} rows in result files, the resumed run's driver with "
          f"{len(written_second)}; the run resumed again skipped {done} (the first resumed run {done_first}) and "
          f"processed {len(ids) - done} of {len(ids)}")
    assert done_first < done < len(ids) and done <= len(written_second)
    assert f"closing check: passed ({len(ids)} rows out for {len(ids)} in, every id once)" in printed
    final = ids_in_every_result_file(output)
    assert sorted(final) == sorted(ids)  # every id exactly once: no file of the killed runs left over twice
    manifest = json.loads((output / "_SUCCESS").read_text())
    assert manifest["rows_out"] == len(ids) and not os.path.exists(output / "_checkpoint")

    again = run_to_end(config, cluster.address, "--set", "output.mode=resume")
    assert "holds a completed run (_SUCCESS); nothing to resume" in again


def test_model_actor_killed_mid_run(cluster, vit_pair, tmp_path):
    ids, _, output, driver = start_job(tmp_path, vit_pair.pth, cluster, committed=2)
    try:
        node = cluster.node_running(MODEL_ACTOR)
        assert node is not None, "no live model actor found"
        pid = node.process_titled(MODEL_ACTOR)
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


def test_s3_server_down_mid_run(cluster, vit_pair, tmp_path):
    """Input, output and checkpoint on SeaweedFS; the server is stopped for 10 s mid-run and
    started again on the same data. The run completes, or fails naming the storage error and
    a resumed run completes it; either way the output holds every id exactly once."""
    store = SeaweedFS(str(tmp_path / "weed")).start()
    try:
        ids, config = s3_job(store, "faults", tmp_path, vit_pair.pth)
        driver = start_run(config, cluster.address)
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
            printed = run_to_end(config, cluster.address, "--set", "output.mode=resume")
        print(f"S3 server down for 10 s mid-run: {outcome}: "
              + next(line for line in printed.splitlines() if "rows in:" in line))
        assert f"closing check: passed ({len(ids)} rows out for {len(ids)} in, every id once)" in printed
        assert sorted(ids_in_result_objects(store, "faults")) == sorted(ids)
    finally:
        store.stop()


def race_two_runs(config: str, cluster: RayCluster, *extra: str):
    """Two drivers of one config started together; (exit status, output) of each."""
    runs = [start_run(config, cluster.address, *extra) for _ in range(2)]
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


_OFF_DRIVER_PROBE = r"""
import json, sys
import ray
from pipeline.job.off_driver import run_off_driver

def node_id():
    return ray.get_runtime_context().get_node_id()

ray.init(address=sys.argv[1], logging_level="ERROR")
memory = {n["NodeID"]: n["Resources"].get("memory", 0.0) for n in ray.nodes() if n["Alive"]}
print(json.dumps({"driver": node_id(), "ran_on": run_off_driver(node_id), "memory": memory}))
"""


def test_the_closing_check_runs_off_the_drivers_node(cluster):
    # Every job of this module runs its closing check through run_off_driver; here, where.
    proc = subprocess.run([sys.executable, "-c", _OFF_DRIVER_PROBE, cluster.address], env=env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    others = {node: memory for node, memory in found["memory"].items() if node != found["driver"]}
    assert len(others) == len(WORKER_CPUS)
    assert found["ran_on"] in others and others[found["ran_on"]] == max(others.values())


def test_two_runs_on_one_local_output(cluster, vit_pair, tmp_path):
    ids = write_input(tmp_path / "input")
    config = job_file(tmp_path, vit_pair.pth)
    outcomes = race_two_runs(config, cluster)
    assert_one_wrote(outcomes, ids, ids_in_every_result_file(tmp_path / "output"))
    assert os.path.exists(tmp_path / "output" / "_SUCCESS")
    assert not os.path.exists(tmp_path / "output" / "_samhq_lease.json")


def test_two_resumed_runs_on_one_seaweedfs_output(cluster, vit_pair, tmp_path):
    store = SeaweedFS(str(tmp_path / "weed")).start()
    try:
        ids, config = s3_job(store, "race", tmp_path, vit_pair.pth)
        outcomes = race_two_runs(config, cluster, "--set", "output.mode=resume")
        assert_one_wrote(outcomes, ids, ids_in_result_objects(store, "race"))
        keys = store.keys("race", "output/")
        assert "output/_SUCCESS" in keys and "output/_samhq_lease.json" not in keys
    finally:
        store.stop()


def test_sigterm_stops_the_driver_cleanly_then_resume(cluster, vit_pair, tmp_path):
    """SIGTERM (a node's preemption notice) to the driver mid-run: one error line saying the
    run was stopped and how to go on, exit status 143, no stack dump, the lease released; a
    resumed run completes the output."""
    ids, config, output, driver = start_job(tmp_path, vit_pair.pth, cluster, committed=8)
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
    printed = run_to_end(config, cluster.address, "--set", "output.mode=resume")
    assert f"closing check: passed ({len(ids)} rows out for {len(ids)} in, every id once)" in printed
    assert sorted(ids_in_every_result_file(output)) == sorted(ids)


def model_rows(printed: str) -> int:
    """Rows through the model in the driver's last progress line (0 before the first)."""
    found = re.findall(r"^progress: \d+ / \d+ rows decoded, (\d+) through the model", printed, re.M)
    return int(found[-1]) if found else 0


def row_errors(output) -> list:
    """The error of every result row that has one, from every result file."""
    errors = []
    for name in sorted(os.listdir(output)):
        if name.startswith("masks-") and name.endswith(".parquet"):
            column = pq.read_table(os.path.join(output, name), columns=["error"]).column(0)
            errors += [error for error in column.to_pylist() if error is not None]
    return errors


def titles(pids) -> dict:
    """Process id → its program's name (or Ray's title for a worker process)."""
    found = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                found[pid] = os.path.basename(f.read().split(b"\0")[0].decode(errors="replace")).strip()
        except OSError:
            pass
    return found


def lose_the_model_actors_node(cluster: RayCluster, tmp_path, checkpoint, lose):
    """A spot worker node joins (3 CPUs in all), the job starts, and once the model actor has
    run some rows, `lose` is called on the worker node that runs the actor (whichever it is):
    (input ids, config, output directory, what `lose` returned, the node's processes before,
    rows through the model by then, the driver's exit status, its output)."""
    cluster.add_worker(1)
    ids = write_input(tmp_path / "input")
    config, output = job_file(tmp_path, checkpoint), tmp_path / "output"
    driver = start_run(config, cluster.address)
    try:
        wait_until(lambda: model_rows(driver.output_tail(20000)) >= 4, "4 rows through the model", driver)
        node = cluster.node_running(MODEL_ACTOR)
        assert node is not None and node is not cluster.head, f"the model actor runs on {node}"
        processes = titles(node.pids())
        assert "raylet" in processes.values() and node.process_titled(MODEL_ACTOR), processes
        modelled = model_rows(driver.output_tail(20000))
        lost = lose(node)
        assert not node.pids()
        code = driver.process.wait(300)  # a run takes under a minute here; a hang fails
        printed = driver.output_tail(50000)
    finally:
        driver.stop()
    assert modelled < len(ids), f"the model had run every row before its node was lost:\n{printed[-4000:]}"
    return ids, config, output, lost, processes, modelled, code, printed


def test_worker_node_killed_mid_run(cluster, vit_pair, tmp_path):
    """Every process of the worker node that runs the model actor (its raylet, which holds the
    node's object store, its agents and workers) SIGKILLed at once, mid-run: Ray retries the
    node's tasks and restarts the actor on a surviving node, and the job completes with every
    id once and no row failed."""
    ids, _, output, killed, processes, modelled, code, printed = lose_the_model_actors_node(
        cluster, tmp_path, vit_pair.pth, cluster.kill)
    assert code == 0, printed[-6000:]
    print(f"worker node SIGKILLed ({len(killed)} processes: {', '.join(processes.get(p, '?') for p in killed)}) with "
          f"{modelled} of {len(ids)} rows through the model; the run ended with: "
          + next(line for line in printed.splitlines() if "rows in:" in line))
    assert f"closing check: passed ({len(ids)} rows out for {len(ids)} in, every id once)" in printed
    assert "rows with errors: none" in printed and not row_errors(output)
    assert sorted(ids_in_every_result_file(output)) == sorted(ids)


def test_worker_node_preempted_mid_run(cluster, vit_pair, tmp_path):
    """The worker node that runs the model actor goes as a spot node does, mid-run: SIGTERM to
    each of its processes, SIGKILL to those left 3 s later. The run completes, or stops saying
    how to resume and a resumed run completes it; either way every id once, no row failed."""
    ids, config, output, (terminated, killed), processes, modelled, code, printed = lose_the_model_actors_node(
        cluster, tmp_path, vit_pair.pth, lambda node: cluster.preempt(node, grace=3.0))
    if code == 0:
        outcome = "the run completed"
    else:
        outcome = "the run stopped; a resumed run completed it"
        assert "error: the job stopped: " in printed and "output.mode: resume" in printed, printed[-6000:]
        printed = run_to_end(config, cluster.address, "--set", "output.mode=resume")
    left = ", ".join(processes.get(p, "?") for p in killed) or "none"
    print(f"worker node preempted ({len(terminated)} processes SIGTERMed, {len(killed)} SIGKILLed 3 s later: {left}) "
          f"with {modelled} of {len(ids)} rows through the model: {outcome}: "
          + next(line for line in printed.splitlines() if "rows in:" in line))
    assert f"closing check: passed ({len(ids)} rows out for {len(ids)} in, every id once)" in printed
    assert "rows with errors: none" in printed and not row_errors(output)
    assert sorted(ids_in_every_result_file(output)) == sorted(ids)
