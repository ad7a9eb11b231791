"""One writer per output: the lease that a run takes before it writes (pipeline/output/lease.py)
on the conditional file each store allows (pipeline/storage/conditional.py). Real processes
race for it on a local directory and on SeaweedFS (conditional S3 requests); a stopped run's
lease is taken over only by a run that continues the output; a run whose lease was taken
learns it; the job-level race of two `run` processes is in tests/e2e/test_faults.py."""

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time

import pytest
from helpers.seaweedfs import CREDENTIALS, SeaweedFS

from pipeline.config import StorageConfig
from pipeline.output import LEASE_FILE, LeaseHeld, OutputLease
from pipeline.output.lease import LeaseHolder
from pipeline.storage import Location
from pipeline.storage.conditional import BEST_EFFORT, LOCAL, S3, ConditionalFile, ConditionFailed

ROUNDS = 12


def _contend(url: str, endpoint, barrier, results) -> None:
    """One contender: each round, reach for the lease when every contender is ready, report,
    and hold it until every contender has reported."""
    for n in range(ROUNDS):
        lease = OutputLease(Location(f"{url}/round{n}", StorageConfig(endpoint_url=endpoint)), "run", take_over=False)
        barrier.wait()
        try:
            lease.acquire()
            results.put((n, "took", lease.holder.pid))
        except LeaseHeld as e:
            results.put((n, "refused", str(e)))
        barrier.wait()
        lease.release()


def race(url: str, endpoint=None, contenders: int = 2):
    """Each round: `contenders` processes reach for a new output's lease at once; their outcomes."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(contenders, timeout=120), context.Queue()
    processes = [context.Process(target=_contend, args=(url, endpoint, barrier, results)) for _ in range(contenders)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(300)
        assert process.exitcode == 0
    rounds = [[] for _ in range(ROUNDS)]
    for _ in range(ROUNDS * contenders):
        n, kind, detail = results.get(timeout=5)
        rounds[n].append((kind, detail))
    return rounds


def assert_one_winner(rounds) -> None:
    for outcomes in rounds:
        winners = [detail for kind, detail in outcomes if kind == "took"]
        refusals = [detail for kind, detail in outcomes if kind == "refused"]
        assert len(winners) == 1, outcomes
        for refusal in refusals:
            # The loser names the holder: its host and process.
            assert "another run is writing this output" in refusal
            assert f"on host {socket.gethostname()}, pid {winners[0]}," in refusal


def test_two_processes_race_on_a_local_directory(tmp_path):
    assert_one_winner(race(str(tmp_path)))


@pytest.mark.slow
def test_two_processes_race_on_seaweedfs(tmp_path, monkeypatch):
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    store = SeaweedFS(str(tmp_path / "weed")).start()
    try:
        store.create_bucket("leases")
        assert ConditionalFile(Location("s3://leases/x", StorageConfig(endpoint_url=store.endpoint))).kind == S3
        assert_one_winner(race("s3://leases/out", store.endpoint))
    finally:
        store.stop()


def stale_lease(directory, pid: int, age: float, host: str = "elsewhere") -> None:
    holder = LeaseHolder("earlier", host, pid, time.time() - age - 10, time.time() - age, "run")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, LEASE_FILE), "wb") as f:
        f.write(holder.to_json())


def test_a_stopped_runs_lease_is_taken_over_only_to_continue(tmp_path):
    stale_lease(tmp_path, 4242, age=120)
    with pytest.raises(LeaseHeld, match="lease of a run that stopped is still there .* output.mode: resume"):
        OutputLease(Location(str(tmp_path)), "run", take_over=False).acquire()
    with OutputLease(Location(str(tmp_path)), "run", take_over=True) as lease:
        assert lease.taken_over is not None and lease.taken_over.run == "earlier"
        with open(tmp_path / LEASE_FILE) as f:
            assert json.load(f)["pid"] == os.getpid()
    assert not os.path.exists(tmp_path / LEASE_FILE)  # released at the end


def test_a_live_holder_elsewhere_is_never_taken_over(tmp_path):
    stale_lease(tmp_path, 4242, age=5)  # refreshed 5 s ago on another host
    with pytest.raises(LeaseHeld, match=r"another run is writing this output \(`run` on host elsewhere, pid 4242"):
        OutputLease(Location(str(tmp_path)), "run", take_over=True).acquire()


def test_a_holder_on_this_host_whose_process_is_gone_is_dead_at_once(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale_lease(tmp_path, gone.pid, age=1, host=socket.gethostname())
    with OutputLease(Location(str(tmp_path)), "run", take_over=True) as lease:
        assert lease.taken_over is not None and lease.taken_over.pid == gone.pid


def test_a_run_whose_lease_was_taken_learns_it(tmp_path):
    lost = []
    first = OutputLease(Location(str(tmp_path)), "run", take_over=False, ttl_s=0.3, refresh_s=60, on_lost=lost.append)
    first.acquire()
    time.sleep(0.5)  # the first run has not refreshed for longer than its ttl
    second = OutputLease(Location(str(tmp_path)), "run", take_over=True, ttl_s=0.3)
    second.acquire()
    first.refresh()
    assert first.lost is not None and lost == [first.lost] and "taken by another run" in first.lost
    first.release()  # not its lease any more: left alone
    with open(tmp_path / LEASE_FILE) as f:
        assert json.load(f)["run"] == second.holder.run
    second.release()
    assert not os.path.exists(tmp_path / LEASE_FILE)


def test_refreshes_keep_the_lease_alive(tmp_path):
    with OutputLease(Location(str(tmp_path)), "run", take_over=False, ttl_s=1.0, refresh_s=0.2):
        time.sleep(1.5)  # longer than the ttl: only the refreshes keep it
        with pytest.raises(LeaseHeld, match="another run is writing"):
            OutputLease(Location(str(tmp_path)), "run", take_over=True, ttl_s=1.0).acquire()


def test_a_link_planted_at_the_lease_is_not_written_through(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("not yours")
    os.makedirs(tmp_path / "out")
    os.symlink(target, tmp_path / "out" / LEASE_FILE)
    with pytest.raises(ValueError, match="not a lease this version wrote"):
        OutputLease(Location(str(tmp_path / "out")), "run", take_over=True).acquire()
    assert target.read_text() == "not yours"


@pytest.mark.parametrize("url, kind", [("local", LOCAL), ("memory://leases/out", BEST_EFFORT)])
def test_conditional_file(tmp_path, url, kind):
    """Create once, replace and delete only the version read; on each kind of store."""
    location = Location(str(tmp_path / "lease") if url == "local" else url)
    file = ConditionalFile(location, settle_s=0.05)
    assert file.kind == kind and file.read() is None
    tag = file.create(b"one")
    with pytest.raises(FileExistsError):
        file.create(b"two")
    assert file.read() == (b"one", tag)
    newer = file.replace(b"three", tag)
    with pytest.raises(ConditionFailed):
        file.replace(b"four", tag)
    with pytest.raises(ConditionFailed):
        file.delete(tag)
    assert file.read() == (b"three", newer)
    file.delete(newer)
    assert file.read() is None
