"""The driver's own per-file work before the first row flows: `plan_job`'s input scan (every
Parquet footer, read in parallel threads, which also sizes the read blocks) and column checks,
for inputs of 10 to 10,000 files on local disk and on a SeaweedFS S3 server on 127.0.0.1 (the
bench starts and ends it by process id). Each size runs in a fresh Python process, so that its
peak RSS is the driver's alone; after the scan, the same process starts a local Ray and times
Ray Data's own Parquet read of the same files to its first row (its listing and planning).

    python -m bench.driver_scan [--sizes 10,1000,10000] [--rows-per-file 10] [--stores local,seaweedfs]
                                [--out bench/results/driver_scan.md]

Ray Data's own planning (listing the files again, its read tasks) is not in these numbers.
"""

import argparse
import concurrent.futures
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq

from bench.common.machine import cpu_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the processes and servers the tests own, shared

from helpers.seaweedfs import CREDENTIALS, SeaweedFS  # noqa: E402

_CHILD = r"""
import json, resource, sys, time
start = time.perf_counter()
from pipeline.config import parse_config
from pipeline.checks.columns import check_columns
from pipeline.checks.input_files import scan_input
from pipeline.job.plan import input_rules, read_columns
from pipeline.storage import Location
imported = time.perf_counter()
config = parse_config({"input": {"path": sys.argv[1], "id_column": "id", "image_uri_column": "uri",
                                 "boxes_column": "boxes"},
                       "output": {"path": sys.argv[1].rstrip("/") + "-out"}, "model": {"checkpoint": "unused"},
                       "storage": {"endpoint_url": sys.argv[2] or None}})
scan = scan_input(Location(config.input.path, config.storage), "input.path", read_columns(config))
problems = check_columns(scan, input_rules(config), "input.path")
done = time.perf_counter()
assert not problems, problems
scan_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
import ray
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
fs, _ = scan.location.arrow()
began = time.perf_counter()
first = ray.data.read_parquet([f.path for f in scan.files], filesystem=fs).select_columns(["id"]).take(1)
first_row = time.perf_counter() - began
assert len(first) == 1
print(json.dumps({"files": len(scan.files), "rows": scan.num_rows, "scan_s": done - imported,
                  "import_s": imported - start, "peak_rss_mib": scan_rss, "first_row_s": first_row,
                  "peak_rss_with_ray_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_input(directory: str, files: int, rows_per_file: int) -> None:
    os.makedirs(directory)
    for f in range(files):
        ids = [f"{f:06}-{r:04}" for r in range(rows_per_file)]
        table = pa.table({"id": ids, "uri": [f"s3://bucket/images/{i}.jpg" for i in ids],
                          "boxes": [[[1.0, 2.0, 30.0, 40.0]]] * rows_per_file})
        pq.write_table(table, os.path.join(directory, f"part-{f:06}.parquet"))


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def upload(store: SeaweedFS, directory: str, prefix: str) -> str:
    client = store.client()
    names = sorted(os.listdir(directory))
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: client.upload_file(os.path.join(directory, n), "bench", f"{prefix}/{n}"), names))
    return f"s3://bench/{prefix}/"


def scan(path: str, endpoint: str) -> dict:
    began = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _CHILD, path, endpoint], capture_output=True, text=True,
                         env={**os.environ, **CREDENTIALS, "PYTHONPATH": ROOT}, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - began
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--rows-per-file", type=int, default=10)
    parser.add_argument("--stores", default="local,seaweedfs")
    parser.add_argument("--out", default=None, help="write a Markdown table here")
    args = parser.parse_args()
    stores = args.stores.split(",")
    rows = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="driver_scan_") as tmp:
        store = SeaweedFS(os.path.join(tmp, "weed")).start() if "seaweedfs" in stores else None
        try:
            if store is not None:
                store.create_bucket("bench")
            for size in (int(s) for s in args.sizes.split(",")):
                directory = os.path.join(tmp, f"in-{size}")
                write_input(directory, size, args.rows_per_file)
                for where in stores:
                    if where == "local":
                        path, endpoint = directory, ""
                    else:
                        assert store is not None
                        path, endpoint = upload(store, directory, f"in-{size}"), store.endpoint
                    result = {"store": where, **scan(path, endpoint)}
                    rows.append(result)
                    print(json.dumps(result), flush=True)
        finally:
            if store is not None:
                store.stop()
    load_after = os.getloadavg()
    lines = [
        "# Driver scan before the first row (local disk, SeaweedFS on 127.0.0.1)",
        "",
        f"Machine: {machine()}. Load average (1/5/15 min) before: {load_before[0]:.2f}/{load_before[1]:.2f}/"
        f"{load_before[2]:.2f}, after: {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}.",
        f"Command: `python -m bench.driver_scan --sizes {args.sizes} --rows-per-file {args.rows_per_file} "
        f"--stores {args.stores}`.",
        "",
        "| store | files | rows | footer scan + column checks (s) | files/s | driver peak RSS (MiB) | imports (s) "
        "| Ray Data read to first row (s) | driver peak RSS with Ray (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['store']} | {r['files']} | {r['rows']} | {r['scan_s']:.2f} | {r['files'] / r['scan_s']:.0f} "
                     f"| {r['peak_rss_mib']:.0f} | {r['import_s']:.1f} | {r['first_row_s']:.2f} | "
                     f"{r['peak_rss_with_ray_mib']:.0f} |")
    lines += ["", "Time to the first result file through the whole pipeline (Ray Data's own listing and "
              "planning included) is in `scale.md`."]
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
