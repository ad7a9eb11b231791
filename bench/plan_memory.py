"""The driver's memory for a job's plan (`pipeline.job.plan.plan_job`: the input's listing and
footers, every input id read and checked for repeats, the checkpoint's header), split into
what grows with input rows and what grows with input files: three inputs of 100k and 1M rows
in 1,000 and 10,000 files (ids `img` and 8 digits, a 64 x 64 PNG and one box per row), each
planned in a process of its own against the smallest model (bench/scale.py's). Peak is VmHWM,
reset once the imports are done.

    python -m bench.plan_memory [--out bench/results/plan_memory.md]
"""

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from bench.common.machine import cpu_model, memory_gib

INPUTS = ((1_000, 100), (1_000, 1_000), (10_000, 100))  # (files, rows per file)


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def write_input(directory: str, files: int, rows_per_file: int) -> None:
    os.makedirs(directory)
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(buffer, format="PNG")
    for f in range(files):
        ids = [f"img{f * rows_per_file + r:08}" for r in range(rows_per_file)]
        pq.write_table(pa.table({"id": ids, "image": [buffer.getvalue()] * rows_per_file,
                                 "boxes": [[[4.0, 4.0, 30.0, 30.0]]] * rows_per_file}),
                       os.path.join(directory, f"part-{f:05}.parquet"))


def measure(directory: str, model: str) -> None:
    from pipeline.config import parse_config
    from pipeline.job.plan import plan_job

    config = parse_config({"input": {"path": directory, "id_column": "id", "image_column": "image",
                                     "boxes_column": "boxes"},
                           "output": {"path": directory + "-out"}, "model": {"checkpoint": model}})
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM, the peak RSS, to the RSS now
    before, began = _status_mib("VmRSS"), time.perf_counter()
    plan = plan_job(config)
    print(json.dumps({"rows": plan.scan.num_rows, "files": len(plan.scan.files), "before": before,
                      "peak": _status_mib("VmHWM"), "s": time.perf_counter() - began}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench/results/plan_memory.md")
    parser.add_argument("--plan", nargs=2, metavar=("INPUT", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plan:
        measure(*args.plan)
        return
    from bench.scale import smallest_model

    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    work = tempfile.mkdtemp(prefix="bench_plan_memory_")
    found: Dict[Tuple[int, int], Dict[str, float]] = {}
    try:
        smallest_model(os.path.join(work, "model"))
        for files, rows_per_file in INPUTS:
            directory = os.path.join(work, f"input-{files}-{rows_per_file}")
            write_input(directory, files, rows_per_file)
            printed = subprocess.run([sys.executable, "-m", "bench.plan_memory", "--plan", directory,
                                      os.path.join(work, "model")], check=True, capture_output=True, text=True).stdout
            found[(files, rows_per_file)] = json.loads(printed.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows: List[str] = []
    for (files, rows_per_file), r in found.items():
        rows.append(f"| {files:,} | {files * rows_per_file:,} | {r['before']:.0f} | {r['peak']:.0f} | "
                    f"{r['peak'] - r['before']:+.0f} | {r['s']:.1f} |")
    small, more_rows, more_files = (found[key]["peak"] for key in INPUTS)
    per_million_rows = (more_rows - small) / 0.9  # 100k -> 1M rows, the same 1,000 files
    per_file_kib = (more_files - more_rows) * 1024 / 9_000  # 1,000 -> 10,000 files, the same 1M rows
    report = "\n".join([
        "# The driver's memory for a job's plan: per input row and per input file", "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {cpu_model()}, {os.cpu_count()} logical cores, {memory_gib():.0f} GiB; pyarrow {pa.__version__}; "
        f"load average before: {load}",
        "- plan_job on local disk, output.mode overwrite (no checkpoint to read); the plan loads the model's "
        "config and weights header, which is most of the growth of the smallest input", "",
        "| input files | rows | RSS before MiB | peak RSS MiB | growth MiB | s |", "|---|---|---|---|---|---|", *rows, "",
        f"Per input row: {per_million_rows:.0f} MiB per million rows (100k -> 1M rows in the same 1,000 files); "
        "each file's ids are read and keyed (8 bytes an id, `pipeline.ids.InputIdKeys`), the keys checked for repeats.",
        f"Per input file: {per_file_kib:.1f} KiB per file (1,000 -> 10,000 files holding the same 1M rows): the "
        "listing, each footer's row count and row groups, the version stamps of the fingerprint.", ""])
    with open(args.out, "w") as f:
        f.write(report)
    print(report)


if __name__ == "__main__":
    main()
