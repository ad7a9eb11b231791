"""Peak memory of a resumed run's check that the checkpoint lists only input ids
(`pipeline.job.resume._checkpoint_rows`): Arrow's `is_in` builds a hash table of the input's
ids on every call, so a call per checkpoint entry in 32 threads (as the check ran before)
holds 32 such tables at once; one call over every entry's ids holds one. (The job has since
moved on: each entry's ids are looked up in the plan's sorted 8-byte keys of the input's ids,
`pipeline.ids.InputIdKeys`, with no table at all.)

A 1M-row input of string ids resumed at half (502,100 ids in 435 entries, as the 1M-row kill
run of bench/scale.py): each way in a process of its own, its peak RSS over its RSS once the
ids are built.

    python -m bench.checkpoint_id_check [--out bench/results/checkpoint_id_check.md]
"""

import argparse
import concurrent.futures
import os
import resource
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc

from bench.common.machine import cpu_model, memory_gib

INPUT_IDS, DONE, PER_ENTRY, THREADS = 1_000_000, 502_100, 1_150, 32
WAYS = {"per_entry": f"one is_in per entry, {THREADS} threads (before)", "once": "one is_in over every entry (now)"}


def measure(way: str) -> None:
    known = pa.array([f"img{i:08}" for i in range(INPUT_IDS)])
    entries = [pa.chunked_array([pa.array([f"img{i:08}" for i in range(s, min(s + PER_ENTRY, DONE))])])
               for s in range(0, DONE, PER_ENTRY)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    if way == "per_entry":
        with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
            foreign = sum(pool.map(lambda ids: len(ids) - pc.sum(pc.is_in(ids, value_set=known)).as_py(), entries))
    else:
        listed = pa.chunked_array([chunk for ids in entries for chunk in ids.chunks])
        foreign = len(listed) - pc.sum(pc.is_in(listed, value_set=known)).as_py()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert foreign == 0
    print(f"{before:.0f} {peak:.0f} {seconds:.2f} {len(entries)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench/results/checkpoint_id_check.md")
    parser.add_argument("--way", choices=sorted(WAYS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.way:
        measure(args.way)
        return
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    rows = []
    for way, label in WAYS.items():
        printed = subprocess.run([sys.executable, "-m", "bench.checkpoint_id_check", "--way", way], check=True,
                                 capture_output=True, text=True).stdout.split()
        before, peak, seconds, entries = float(printed[0]), float(printed[1]), float(printed[2]), int(printed[3])
        rows.append(f"| {label} | {entries} | {before:.0f} | {peak:.0f} | {peak - before:+.0f} | {seconds:.2f} |")
    report = "\n".join([
        "# A resumed run's check of the checkpoint's ids against the input's: peak memory", "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {cpu_model()}, {os.cpu_count()} logical cores, {memory_gib():.0f} GiB; pyarrow {pa.__version__}; "
        f"load average before: {load}",
        f"- ids: {INPUT_IDS:,} input ids (`img` and 8 digits), {DONE:,} of them in checkpoint entries of "
        f"{PER_ENTRY:,} (a 1M-row job resumed at half); each way in a process of its own", "",
        "| way | entries | RSS before MiB | peak RSS MiB | growth MiB | s |", "|---|---|---|---|---|---|", *rows, ""])
    with open(args.out, "w") as f:
        f.write(report)
    print(report)


if __name__ == "__main__":
    main()
