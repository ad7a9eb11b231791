"""The whole pipeline at growing scale with the smallest model the code supports, so that the
data plane (Parquet read, decode, Ray Data's scheduling, RLE encode, Parquet write, the
checkpoint, the closing check) dominates: small images in files of 100 rows each (1M images in
10,000 files), on local disk or on a SeaweedFS S3 server the bench starts.

Each run is a `python -m pipeline run` of its own (the CLI as users run it) against a local Ray
cluster the bench starts and ends by process id: one node of 2 CPUs (`--workers 0`), or a head
of 0 CPUs (the driver's node) and `--workers` nodes of 1 CPU each, every node a `ray start`
process of its own. Measured per run:
- wall time of the driver process (start-up and the closing check included), and rows/s;
- time to the first result file (a block's rows through every stage and written);
- the driver's peak RSS (`wait4`'s ru_maxrss of the CLI process), its RSS at a quarter, half
  and three quarters of the run, and its CPU seconds;
- each node's CPU seconds (user + system of the node's processes, read from /proc every
  second), and which node ran the model actor: is the work spread?
- result files written, their total and mean size; the host's load average while it ran.

A run `STORAGE:ROWS:kill` SIGKILLs the driver once half the rows are encoded for writing, then
resumes (`output.mode=resume`) and reports the rows the checkpoint held, the rows the model had
done at the kill, the rows redone, and that the resumed output holds every id once.

Each run appends its record to `--json`; the report (`--out`) renders every record there.

    python -m bench.scale [--workers 4] [--runs local:10000,local:100000,s3:10000,local:100000:kill]
                          [--rows-per-file 100] [--encode-cpus 1] [--batch-size 16]
                          [--json bench/results/scale_cluster.jsonl] [--out bench/results/scale_cluster.md]
"""

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml
from PIL import Image

from bench.common.machine import cpu_model, memory_gib
from bench.scale_report import render
from bench.scale_storage import LocalStore, SeaweedStore, Store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the processes and servers the tests own, shared

from helpers.owned_processes import RAY_TOKEN_AUTH, session_members, start_ray_cluster, start_ray_head  # noqa: E402
from helpers.seaweedfs import CREDENTIALS, SeaweedFS  # noqa: E402

from bench.common.sampling import PeriodicSampler  # noqa: E402
from samhq_core import SamHQModel  # noqa: E402
from samhq_core.random_weights import smallest_config  # noqa: E402

IMAGE_SIDE = 64
NODE_OBJECT_STORE = 1 << 30  # per worker node
PROGRESS = re.compile(r"progress: (\d+) / (\d+) rows decoded, (\d+) through the model.*?, (\d+) encoded for writing")
MODEL_ACTOR = "ModelUDF"  # Ray titles an actor's worker process after its class


def smallest_model(path: str) -> None:
    """A ViT SAM-HQ of 64 px input, one 32-wide encoder block and a 32-wide decoder."""
    torch.manual_seed(0)
    SamHQModel(smallest_config(side=IMAGE_SIDE)).save_pretrained(path)


def write_input(store: Store, prefix: str, rows: int, rows_per_file: int) -> None:
    rng = np.random.default_rng(0)
    for start in range(0, rows, rows_per_file):
        records = []
        for i in range(start, min(rows, start + rows_per_file)):
            pixels = np.full((IMAGE_SIDE, IMAGE_SIDE, 3), rng.integers(0, 255, 3), np.uint8)
            x0, y0 = rng.integers(4, 28, 2)
            x1, y1 = x0 + rng.integers(12, 32), y0 + rng.integers(12, 32)
            pixels[y0:y1, x0:x1] = rng.integers(0, 255, 3)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG")
            records.append({"id": f"img{i:08}", "image": buffer.getvalue(),
                            "boxes": [[float(x0), float(y0), float(x1), float(y1)]]})
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(records), sink)
        store.put(f"{prefix}/part-{start // rows_per_file:05}.parquet", sink.getvalue().to_pybytes())


def _cpu_seconds(pid: int) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


class RunSampler(PeriodicSampler):
    """Every second: the host's load average, the driver's RSS, each node's CPU seconds (a
    process's last count is kept once it has exited) and the nodes that ran a model actor."""

    def __init__(self, driver_pid: int, nodes: Dict[str, int]) -> None:
        super().__init__()
        self.driver_pid, self.nodes = driver_pid, nodes
        self.loads: List[float] = []
        self.rss: List[Tuple[float, int]] = []  # (seconds since start, bytes)
        self.start = time.perf_counter()
        self._cpu: Dict[str, Dict[int, float]] = {name: {} for name in nodes}
        # A node's processes outlive a run (its raylet, agents, reused workers): what they had
        # spent when the run started is not the run's.
        self._before: Dict[int, float] = {}
        self._started = False
        self.model_nodes: set = set()

    def sample(self) -> None:
        with open("/proc/loadavg") as f:
            self.loads.append(float(f.read().split()[0]))
        try:
            with open(f"/proc/{self.driver_pid}/statm") as f:
                self.rss.append((time.perf_counter() - self.start, int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")))
        except OSError:
            pass
        for name, session in self.nodes.items():
            for pid in session_members(session):
                seconds = _cpu_seconds(pid)
                if seconds is None:
                    continue
                if not self._started:  # the first sample: the run has barely started
                    self._before.setdefault(pid, seconds)
                self._cpu[name][pid] = seconds - self._before.get(pid, 0.0)
                if name not in self.model_nodes and MODEL_ACTOR in _title(pid):
                    self.model_nodes.add(name)
        self._started = True

    def node_cpu_seconds(self) -> Dict[str, float]:
        return {name: sum(pids.values()) for name, pids in self._cpu.items()}

    def rss_at(self, share: float, seconds: float) -> float:
        """The driver's RSS (MiB) at the sample nearest `share` of the run."""
        if not self.rss:
            return 0.0
        return min(self.rss, key=lambda s: abs(s[0] - share * seconds))[1] / 2**20


def last_progress(log_path: str) -> Optional[Dict[str, int]]:
    with open(log_path, errors="replace") as f:
        found = PROGRESS.findall(f.read())
    if not found:
        return None
    decoded, total, modelled, encoded = (int(v) for v in found[-1])
    return {"decoded": decoded, "total": total, "modelled": modelled, "encoded": encoded}


def drive(config_path: str, env: Dict[str, str], store: Store, output: str, nodes: Dict[str, int], log_path: str,
          extra: Tuple[str, ...] = (), kill_when_encoded: Optional[int] = None) -> dict:
    """One driver run to its end (or to its SIGKILL once `kill_when_encoded` rows are encoded)."""
    first_file, killed_at = None, None
    with open(log_path, "w") as log:
        driver = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--config", config_path,
                                   "--progress-interval", "5" if kill_when_encoded else "30", *extra],
                                  stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    with RunSampler(driver.pid, nodes) as sampler:
        start, next_look = time.perf_counter(), 0.0
        while True:  # wait4, not poll(): it gives the driver's own peak RSS and CPU time
            pid, status, usage = os.wait4(driver.pid, os.WNOHANG)
            if pid:
                driver.returncode = os.waitstatus_to_exitcode(status)
                break
            now = time.perf_counter() - start
            if now >= next_look:
                next_look = now + store.poll_interval
                if first_file is None and store.result_files(output):
                    first_file = now
                progress = last_progress(log_path) if kill_when_encoded and killed_at is None else None
                if progress and kill_when_encoded and progress["encoded"] >= kill_when_encoded:
                    os.kill(driver.pid, signal.SIGKILL)  # the driver alone, mid-run
                    killed_at = progress
            time.sleep(0.1)
        seconds = time.perf_counter() - start
    with open(log_path, errors="replace") as f:
        printed = f.read()
    if driver.returncode != 0 and killed_at is None:
        raise RuntimeError(f"the run ({config_path} {extra}) failed:\n{printed[-4000:]}")
    cpu = sampler.node_cpu_seconds()
    return {
        "seconds": seconds, "first_file_s": first_file, "driver_peak_rss_mib": usage.ru_maxrss / 1024,
        "driver_rss_quarters_mib": [sampler.rss_at(q, seconds) for q in (0.25, 0.5, 0.75)],
        "driver_cpu_s": usage.ru_utime + usage.ru_stime, "node_cpu_s": cpu, "model_nodes": sorted(sampler.model_nodes),
        "load_mean": float(np.mean(sampler.loads or [0])), "load_max": float(np.max(sampler.loads or [0])),
        "killed_at": killed_at, "printed": printed,
    }


@contextlib.contextmanager
def ray_cluster(workers: int, env: Dict[str, str]) -> Iterator[Tuple[str, Dict[str, int]]]:
    """(the cluster's address, {node name: the session id holding the node's processes})."""
    if workers == 0:
        with start_ray_head(2, env, "ray_scale_") as (address, session):
            yield address, {"head": session}
        return
    with start_ray_cluster([1] * workers, env, "ray_scale_", head_cpus=0, object_store_bytes=NODE_OBJECT_STORE) as cluster:
        cluster.wait_for_nodes()
        yield cluster.address, {n.name: n.process.session_id for n in [cluster.head, *cluster.workers] if n}


def job_config(work: str, name: str, store: Store, checkpoint: str, args: argparse.Namespace) -> str:
    config = {
        "input": {"path": store.url(f"{name}/input"), "id_column": "id", "image_column": "image",
                  "boxes_column": "boxes"},
        "output": {"path": store.url(f"{name}/output")},
        "model": {"checkpoint": checkpoint},
        "compute": {"num_actors": 1, "num_cpus_per_actor": 1, "torch_threads": 1, "batch_size": args.batch_size,
                    "decode_batch_size": 32, "encode_cpus": args.encode_cpus},
        **({"storage": store.job_storage} if store.job_storage else {}),
    }
    path = os.path.join(work, f"{name}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return path


def closing_check(printed: str, rows: int) -> None:
    if f"closing check: passed ({rows} rows out for {rows} in, every id once)" not in printed:
        raise RuntimeError(f"the job did not pass its closing check:\n{printed[-3000:]}")


def run_one(spec: str, work: str, checkpoint: str, stores: Dict[str, Store], nodes: Dict[str, int],
            env: Dict[str, str], args: argparse.Namespace) -> dict:
    kind, rows_text, *mode = spec.split(":")
    rows, store = int(rows_text), stores[kind]
    name = f"{kind}-{rows}{'-kill' if mode else ''}"
    write_input(store, f"{name}/input", rows, args.rows_per_file)
    config = job_config(work, name, store, checkpoint, args)
    output = f"{name}/output"
    run = drive(config, env, store, output, nodes, os.path.join(work, f"{name}.log"),
                kill_when_encoded=rows // 2 if mode else None)
    record: dict = {"spec": spec, "rows": rows, "storage": store.kind, "files_in": -(-rows // args.rows_per_file)}
    killed = run.pop("killed_at")
    if mode:
        if killed is None:
            raise RuntimeError(f"{spec}: the run ended before half its rows were encoded")
        files_at_kill = store.result_files(output)
        record["killed"] = {**killed, "seconds": run["seconds"], "result_files": len(files_at_kill),
                            "rows_in_result_files": sum(store.num_rows(k) for k in files_at_kill)}
        run = drive(config, env, store, output, nodes, os.path.join(work, f"{name}-resumed.log"),
                    extra=("--set", "output.mode=resume"))
        resume_line = re.search(rf"^resume: +(\d+) of {rows} rows already written", run["printed"], re.M)
        if resume_line is None:
            raise RuntimeError(f"{spec}: the resumed run did not say what it skipped:\n{run['printed'][-3000:]}")
        done = int(resume_line.group(1))
        record["resumed"] = {"rows_skipped": done, "rows_redone": killed["modelled"] - done}
    printed = run.pop("printed")
    closing_check(printed, rows)
    results = store.result_files(output)
    ids = store.ids(results)
    if len(ids) != rows or len(set(ids)) != rows:
        raise RuntimeError(f"{spec}: {len(ids)} ids in the result files, {len(set(ids))} distinct, for {rows} rows")
    sizes = list(results.values())
    record.update(run, rows_per_s=rows / run["seconds"], files_out=len(results), bytes_out=sum(sizes),
                  mean_file_kib=sum(sizes) / len(sizes) / 1024,
                  summary=next(line for line in printed.splitlines() if "rows in:" in line).strip())
    store.remove(name)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=4, help="worker nodes of 1 CPU each; 0: one node of 2 CPUs")
    parser.add_argument("--runs", default="local:10000,local:100000",
                        help="STORAGE:ROWS[:kill] runs, STORAGE local or s3 (a SeaweedFS server the bench starts); "
                             "empty: render the report of the records in --json alone")
    parser.add_argument("--rows-per-file", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16, help="compute.batch_size of the model actor")
    parser.add_argument("--encode-cpus", type=float, default=1.0, help="compute.encode_cpus of the runs")
    parser.add_argument("--json", default="bench/results/scale_cluster.jsonl", help="records are appended here")
    parser.add_argument("--out", default="bench/results/scale_cluster.md")
    args = parser.parse_args()
    if args.runs:
        measure(args)
    with open(args.json) as f:
        report = render([json.loads(line) for line in f if line.strip()])
    with open(args.out, "w") as f:
        f.write(report)
    print(report)


def measure(args: argparse.Namespace) -> None:
    """Each run of `args.runs` on one cluster, its record appended to `args.json`."""
    work = tempfile.mkdtemp(prefix="bench_scale_")
    checkpoint = os.path.join(work, "smallest")
    smallest_model(checkpoint)
    import ray

    env = {**os.environ, **CREDENTIALS, "PYTHONPATH": ROOT, **RAY_TOKEN_AUTH}
    stores: Dict[str, Store] = {"local": LocalStore(os.path.join(work, "data"))}
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)  # runs last, also when a run fails
        if any(spec.startswith("s3:") for spec in args.runs.split(",")):
            server = SeaweedFS(os.path.join(work, "seaweedfs")).start()
            stack.callback(server.stop)
            stores["s3"] = SeaweedStore(server, "scale")
        address, nodes = stack.enter_context(ray_cluster(args.workers, env))
        for spec in args.runs.split(","):
            with open("/proc/loadavg") as f:
                load_before = " ".join(f.read().split()[:3])
            started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            record = run_one(spec, work, checkpoint, stores, nodes, {**env, "RAY_ADDRESS": address}, args)
            record["machine"] = {"date": started, "cpu": cpu_model(), "cores": os.cpu_count(),
                                 "memory_gib": round(memory_gib(), 1), "torch": torch.__version__, "ray": ray.__version__,
                                 "load_before": load_before, "workers": args.workers,
                                 "batch_size": args.batch_size, "encode_cpus": args.encode_cpus,
                                 "blocks": "read_check_off_driver_id_keys"}
            print(json.dumps(record), flush=True)
            with open(args.json, "a") as f:
                f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
