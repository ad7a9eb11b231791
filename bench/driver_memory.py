"""Where the job's driver memory goes as rows grow: the whole job (`pipeline.job.run_job`, as
the CLI runs it) in this process, against a local 2-CPU Ray cluster it starts (ray.init
"local": free ports), with Python's allocations traced (tracemalloc, 12 frames).

Per size: the driver's peak RSS and peak traced Python memory while the job runs, and at the
peak of traced memory the allocations grown since the job started, grouped by the first
frame outside the standard library, largest first, with the Ray Data objects alive on the
driver at that moment (RefBundles, block metadata, per-task stats) counted by the garbage
collector. Memory outside Python's allocator (Ray's C++ core worker: object references,
task specs) shows as RSS not traced.

    python -m bench.driver_memory [--sizes 5000,20000] [--out bench/results/driver_memory.md]

Data, model and compute as bench/scale.py (64 px images, one box each, the smallest model,
1 model actor of 1 CPU, batches of 16): a size runs in its own process.
"""

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from typing import Any, Dict, List, Optional

import psutil

from bench.common.machine import cpu_model, memory_gib
from bench.common.sampling import PeriodicSampler

FRAMES = 12
TOP = 15
RAY_TYPES = ("RefBundle", "BlockMetadata", "BlockMetadataWithSchema", "BlockStats", "ObjectRef", "DatasetStats",
             "OpRuntimeMetrics", "Schema")


class Sampler(PeriodicSampler):
    """Peak RSS and traced memory every 0.5 s; a tracemalloc snapshot (and live Ray Data object
    counts) whenever traced memory reaches a new peak, at most every 5 s."""

    interval = 0.5

    def __init__(self) -> None:
        super().__init__()
        self.process = psutil.Process()
        self.peak_rss = 0
        self.peak_traced = 0
        self.snapshot: Optional[tracemalloc.Snapshot] = None
        self.objects: Dict[str, int] = {}
        self._last_snapshot = 0.0

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, self.process.memory_info().rss)
        traced, _ = tracemalloc.get_traced_memory()
        now = time.perf_counter()
        if traced > self.peak_traced and now - self._last_snapshot >= 5:
            self.peak_traced = traced
            self.snapshot = tracemalloc.take_snapshot()
            self.objects = live_objects()
            self._last_snapshot = now


def live_objects() -> Dict[str, int]:
    counts: Counter = Counter()
    for obj in gc.get_objects():
        name = type(obj).__name__
        if name in RAY_TYPES:
            counts[name] += 1
    return dict(counts)


def owner(trace: tracemalloc.Traceback) -> str:
    """The innermost frame outside the standard library and tracemalloc, as file:line."""
    stdlib = os.path.dirname(os.__file__)
    for frame in trace:  # most recent first
        if not frame.filename.startswith(stdlib) or "site-packages" in frame.filename:
            name = frame.filename.split("site-packages/")[-1]
            return f"{name}:{frame.lineno}"
    return f"{trace[0].filename}:{trace[0].lineno}"


def measure(rows: int, work: str) -> Dict[str, Any]:
    import ray

    from bench.scale import smallest_model, write_input
    from bench.scale_storage import LocalStore
    from pipeline.config import parse_config
    from pipeline.job.run import run_job

    checkpoint, input_dir = os.path.join(work, "model"), os.path.join(work, "input")
    smallest_model(checkpoint)
    write_input(LocalStore(work), "input", rows, 100)
    config = parse_config({
        "input": {"path": input_dir, "id_column": "id", "image_column": "image", "boxes_column": "boxes"},
        "output": {"path": os.path.join(work, "output")},
        "model": {"checkpoint": checkpoint},
        "compute": {"num_actors": 1, "num_cpus_per_actor": 1, "torch_threads": 1, "batch_size": 16,
                    "decode_batch_size": 32},
    })
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        gc.collect()
        rss_before = psutil.Process().memory_info().rss
        tracemalloc.start(FRAMES)
        baseline = tracemalloc.take_snapshot()
        start = time.perf_counter()
        with Sampler() as sampler:
            summary = run_job(config, log=lambda line: None, progress_interval=60.0)
        seconds = time.perf_counter() - start
        tracemalloc.stop()
    finally:
        ray.shutdown()
    assert summary.rows_out == rows and summary.closing is not None and summary.closing.passed, summary.render()
    grown: Counter = Counter()
    if sampler.snapshot is not None:
        for stat in sampler.snapshot.compare_to(baseline, "traceback"):
            if stat.size_diff > 0:
                grown[owner(stat.traceback)] += stat.size_diff
    return {"rows": rows, "seconds": seconds, "rss_before": rss_before, "peak_rss": sampler.peak_rss,
            "peak_traced": sampler.peak_traced, "objects": sampler.objects,
            "top": grown.most_common(TOP)}


def render(results: List[Dict[str, Any]], machine: Dict[str, Any]) -> str:
    mib = 1 << 20
    lines = ["# The job's driver memory, by what allocates it", "",
             f"- date: {machine['date']}", f"- machine: {machine['cpu']}, {machine['cores']} logical cores, "
             f"{machine['memory_gib']:.0f} GiB; load average before: {machine['load_before']}, after: "
             f"{machine['load_after']}",
             "- job: as bench/scale.py (64 px PNGs with one box, 100 rows per file, the smallest model, 1 model actor "
             "of 1 CPU, batches of 16), `run_job` in the measuring process on a local 2-CPU Ray cluster; "
             f"tracemalloc with {FRAMES} frames (which slows the driver)", "",
             "| rows | s | RSS before MiB | peak RSS MiB | peak traced Python MiB | live Ray Data objects at that peak |",
             "|---|---|---|---|---|---|"]
    for r in results:
        objects = ", ".join(f"{k} {v:,}" for k, v in sorted(r["objects"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| {r['rows']:,} | {r['seconds']:.0f} | {r['rss_before'] / mib:.0f} | {r['peak_rss'] / mib:.0f} | "
                     f"{r['peak_traced'] / mib:.1f} | {objects} |")
    for r in results:
        lines += ["", f"Grown since the job's start, at the peak of traced memory, {r['rows']:,} rows (KiB):", "",
                  "| where | KiB |", "|---|---|"]
        lines += [f"| `{where}` | {size / 1024:,.0f} |" for where, size in r["top"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="5000,20000")
    parser.add_argument("--out", default="bench/results/driver_memory.md")
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)  # one size, in its own process
    args = parser.parse_args()
    if args.measure:
        with tempfile.TemporaryDirectory(prefix="driver-memory-") as work:
            print(json.dumps(measure(args.measure, work)), flush=True)
        return
    import datetime

    import ray

    machine = {"date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}", "cpu": cpu_model(),
               "cores": os.cpu_count(), "memory_gib": memory_gib(), "ray": ray.__version__,
               "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    results = []
    for rows in (int(s) for s in args.sizes.split(",")):
        done = subprocess.run([sys.executable, "-m", "bench.driver_memory", "--measure", str(rows)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{rows} rows failed:\n{done.stderr[-4000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{rows:,} rows: peak RSS {results[-1]['peak_rss'] / 2**20:.0f} MiB", flush=True)
    machine["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = render(results, machine)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
