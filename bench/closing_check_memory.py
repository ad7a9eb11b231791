"""Peak memory of the repeated-id check (`pipeline.ids.repeated_ids`) that the input check,
the closing check at the end of every job and `status` run over a job's ids: the check sorts
the ids and compares neighbours; the reference, measured in the same run, counts them in a
hash table (`pyarrow.compute.value_counts`, as the check did before).

Ids as a job reads them back: one Arrow array per result file of 1,000 rows, string ids (`img`
and 8 digits) and int64 ids. Each (way, kind, size) in a process of its own; growth is its
peak RSS (VmHWM, reset once the ids are built) over its RSS then.

    python -m bench.closing_check_memory [--sizes 100000,1000000,10000000]
                                        [--out bench/results/closing_check_memory.md]
"""

import argparse
import os
import subprocess
import sys
import time
from typing import List, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from bench.common.machine import cpu_model, memory_gib
from pipeline.ids import repeated_ids

ROWS_PER_FILE = 1_000
WAYS = {"hash": "hash count (value_counts, before)", "sort": "sort and compare neighbours (now)"}
KINDS = ("string", "int64")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def hash_count(columns: List[pa.ChunkedArray]) -> Tuple[int, int]:
    values = pa.chunked_array([chunk for column in columns for chunk in column.chunks])
    counts = pc.value_counts(values.drop_null())
    return values.null_count, len(pc.filter(counts, pc.greater(counts.field("counts"), 1)))


def measure(way: str, kind: str, size: int) -> None:
    columns = []
    for start in range(0, size, ROWS_PER_FILE):
        numbers = pa.array(range(start, min(start + ROWS_PER_FILE, size)), pa.int64())
        ids = pc.binary_join_element_wise("img", pc.utf8_lpad(numbers.cast(pa.string()), 8, "0"), "") \
            if kind == "string" else numbers
        columns.append(pa.chunked_array([ids]))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM, the peak RSS, to the RSS now
    before = _status_kib("VmRSS")
    began = time.perf_counter()
    found = hash_count(columns) if way == "hash" else repeated_ids(columns)[:2]
    seconds = time.perf_counter() - began
    assert found == (0, 0), found
    print(f"{before / 1024:.0f} {_status_kib('VmHWM') / 1024:.0f} {seconds:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--out", default="bench/results/closing_check_memory.md")
    parser.add_argument("--way", choices=sorted(WAYS), help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.way:
        measure(args.way, args.kind, args.size)
        return
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    rows = []
    for kind in KINDS:
        for size in (int(s) for s in args.sizes.split(",")):
            for way, label in WAYS.items():
                printed = subprocess.run([sys.executable, "-m", "bench.closing_check_memory", "--way", way,
                                          "--kind", kind, "--size", str(size)],
                                         check=True, capture_output=True, text=True).stdout.split()
                before, peak, seconds = float(printed[0]), float(printed[1]), float(printed[2])
                rows.append(f"| {kind} | {size:,} | {label} | {before:.0f} | {peak:.0f} | {peak - before:+.0f} | "
                            f"{(peak - before) * 2**20 / size:.0f} | {seconds:.2f} |")
                print(rows[-1], flush=True)
    report = "\n".join([
        "# The repeated-id check over a job's ids: peak memory", "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {cpu_model()}, {os.cpu_count()} logical cores, {memory_gib():.0f} GiB; pyarrow {pa.__version__}; "
        f"load average before: {load}",
        f"- ids: one array per result file of {ROWS_PER_FILE:,} rows, every id once; string ids are `img` and 8 "
        "digits; each row in a process of its own",
        "- where it runs: a job's closing check runs in a Ray task on the worker node with the most memory, not on "
        "the driver (`pipeline/job/off_driver.py`); the input check before the run and `status` run it where they "
        "run", "",
        "| ids | rows | way | RSS before MiB | peak RSS MiB | growth MiB | bytes per id | s |",
        "|---|---|---|---|---|---|---|---|", *rows, ""])
    with open(args.out, "w") as f:
        f.write(report)
    print(report)


if __name__ == "__main__":
    main()
