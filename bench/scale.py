"""The whole pipeline at growing scale with the smallest model the code supports, so that the
data plane (Parquet read, decode, Ray Data's scheduling, RLE encode, Parquet write, the
checkpoint, the closing check) dominates: 1,000 → 10,000 → 100,000 small images in files
of 100 rows each (100k images in 1,000 files).

Each size is a `python -m pipeline run` of its own (the CLI as users run it) against a
local 2-CPU Ray cluster the bench starts and ends by process id. Measured per size:
- wall time of the driver process (start-up and the closing check included), and rows/s;
- time to the first result file (a block's rows through every stage and written);
- the driver's peak RSS (`wait4`'s ru_maxrss of the CLI process);
- result files written, their total and mean size; the host's load average while it ran.
Then a table extrapolated to 10M images in 10k files, and what binds first.

    python -m bench.scale [--sizes 1000,10000,100000] [--rows-per-file 100] [--encode-cpus 1[,0]]
                          [--out bench/results/scale.md]
"""

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml
from PIL import Image

from bench.common.machine import cpu_model, memory_gib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the processes and servers the tests own, shared

from helpers.owned_processes import OwnedProcess, free_port, ray_port_flags, wait_for_port  # noqa: E402

from samhq_core import SamHQModel  # noqa: E402
from samhq_core.random_weights import smallest_config  # noqa: E402

IMAGE_SIDE = 64


def smallest_model(path: str) -> None:
    """A ViT SAM-HQ of 64 px input, one 32-wide encoder block and a 32-wide decoder."""
    torch.manual_seed(0)
    SamHQModel(smallest_config(side=IMAGE_SIDE)).save_pretrained(path)


def write_input(directory: str, rows: int, rows_per_file: int) -> None:
    os.makedirs(directory)
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
        pq.write_table(pa.Table.from_pylist(records), os.path.join(directory, f"part-{start // rows_per_file:05}.parquet"))


class LoadSampler:
    """The host's 1-minute load average, sampled every second in a thread."""

    def __init__(self) -> None:
        self.samples: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            with open("/proc/loadavg") as f:
                self.samples.append(float(f.read().split()[0]))

    def __enter__(self) -> "LoadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_size(work: str, checkpoint: str, rows: int, rows_per_file: int, address: str, encode_cpus: float = 1.0) -> dict:
    input_dir, output_dir = os.path.join(work, f"input-{rows}"), os.path.join(work, f"output-{rows}")
    write_input(input_dir, rows, rows_per_file)
    config = {
        "input": {"path": input_dir, "id_column": "id", "image_column": "image", "boxes_column": "boxes"},
        "output": {"path": output_dir},
        "model": {"checkpoint": checkpoint},
        "compute": {"num_actors": 1, "num_cpus_per_actor": 1, "torch_threads": 1, "batch_size": 16,
                    "decode_batch_size": 32, "encode_cpus": encode_cpus},
    }
    config_path = os.path.join(work, f"job-{rows}.yaml")
    with open(config_path, "w") as f:
        yaml.safe_dump(config, f)
    log = open(os.path.join(work, f"run-{rows}.log"), "w+")
    env = {**os.environ, "RAY_ADDRESS": address, "PYTHONPATH": ROOT, "RAY_AUTH_MODE": "token"}
    first_file = None
    with LoadSampler() as load:
        start = time.perf_counter()
        driver = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--config", config_path,
                                   "--progress-interval", "30"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        while True:  # wait4, not poll(): it gives the driver's own peak RSS
            pid, status, usage = os.wait4(driver.pid, os.WNOHANG)
            if pid:
                driver.returncode = os.waitstatus_to_exitcode(status)
                break
            if first_file is None and os.path.isdir(output_dir) and any(
                    n.startswith("masks-") for n in os.listdir(output_dir)):
                first_file = time.perf_counter() - start
            time.sleep(0.1)
        seconds = time.perf_counter() - start
    log.seek(0)
    printed = log.read()
    if driver.returncode != 0:
        raise RuntimeError(f"the run of {rows} rows failed:\n{printed[-4000:]}")
    summary = next(line for line in printed.splitlines() if "rows in:" in line)
    results = [os.path.join(output_dir, n) for n in os.listdir(output_dir) if n.startswith("masks-")]
    sizes = [os.path.getsize(p) for p in results]
    rows_out = sum(pq.ParquetFile(p).metadata.num_rows for p in results)
    assert rows_out == rows, (rows_out, rows)
    assert "closing check: passed" in printed, printed[-3000:]
    shutil.rmtree(input_dir)
    shutil.rmtree(output_dir)
    return {
        "rows": rows, "encode_cpus": encode_cpus,
        "files_in": -(-rows // rows_per_file), "seconds": seconds, "rows_per_s": rows / seconds,
        "first_file_s": first_file,
        "driver_peak_rss_mib": usage.ru_maxrss / 1024, "files_out": len(results), "bytes_out": sum(sizes),
        "mean_file_kib": sum(sizes) / len(sizes) / 1024, "load_mean": float(np.mean(load.samples or [0])),
        "load_max": float(np.max(load.samples or [0])), "summary": summary.strip(),
    }


def extrapolate(results: list, target_rows: int = 10_000_000, target_files: int = 10_000) -> list:
    """Rows of (quantity, measured at the largest size, 10M estimate, how) from the two largest sizes."""
    small, large = results[-2], results[-1]
    rss_per_row = (large["driver_peak_rss_mib"] - small["driver_peak_rss_mib"]) / (large["rows"] - small["rows"])
    scale = target_rows / large["rows"]
    return [
        ("wall time, this 2-CPU node", f"{large['seconds'] / 60:.1f} min", f"{large['seconds'] * scale / 3600:.0f} h",
         "linear in rows at the largest size's rate"),
        ("driver peak RSS", f"{large['driver_peak_rss_mib']:.0f} MiB",
         f"{large['driver_peak_rss_mib'] + rss_per_row * (target_rows - large['rows']):.0f} MiB",
         f"linear fit of the two largest sizes ({rss_per_row * 1e6:.0f} MiB per million rows)"),
        ("result files", str(large["files_out"]), f"{large['files_out'] * scale:.0f}",
         "one per block; blocks default to at most 1000 rows"),
        ("output size", f"{large['bytes_out'] / 2**20:.0f} MiB", f"{large['bytes_out'] * scale / 2**30:.1f} GiB",
         f"{large['bytes_out'] / large['rows']:.0f} bytes per row (one 64 px mask each; real masks are larger)"),
        ("input files", str(large["files_in"]), str(target_files), "footers read in 32 threads: see driver_scan.md"),
    ]


def render(results: list, machine: dict) -> str:
    sizes = " → ".join(f"{r['rows'] // 1000}k" for r in results)
    lines = [f"# The pipeline at scale: {sizes} small images, smallest model", "",
             f"- date: {machine['date']}", f"- machine: {machine['cpu']}, {machine['cores']} logical cores, "
             f"{machine['memory_gib']:.0f} GiB; torch {torch.__version__}, ray {machine['ray']}",
             f"- load average before the runs: {machine['load_before']}",
             "- data: 64 x 64 PNG images (one box each), bytes in the Parquet rows, 100 rows per file",
             "- model: random-weight ViT SAM-HQ at 64 px (one 32-wide encoder block, 32-wide decoder): the "
             "smallest the code supports, so the data plane dominates",
             "- cluster: local, 2 CPUs; 1 model actor (1 CPU, 1 torch thread, batches of 16), decode tasks of 32 "
             "images; the CLI as the driver; input.num_blocks unset (the default)", "",
             "| rows | compute.encode_cpus | input files | wall s | rows/s | to first result file s | driver peak RSS MiB "
             "| result files | output MiB | mean file KiB | load mean / max |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['rows']:,} | {r['encode_cpus']:g} | {r['files_in']:,} | {r['seconds']:.1f} | {r['rows_per_s']:.1f} | "
                     f"{r['first_file_s']:.1f} | {r['driver_peak_rss_mib']:.0f} | "
                     f"{r['files_out']} | {r['bytes_out'] / 2**20:.1f} | {r['mean_file_kib']:.0f} | "
                     f"{r['load_mean']:.2f} / {r['load_max']:.2f} |")
    lines += ["", "Job summaries:", ""] + [f"- {r['rows']:,}: `{r['summary']}`" for r in results]
    if len({r["rows"] for r in results}) < 2:
        return "\n".join(lines) + "\n"
    lines += ["", "## Extrapolated to 10M images in 10k files", "",
              "| quantity | measured (largest size) | 10M images | how |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in extrapolate(results)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--rows-per-file", type=int, default=100)
    parser.add_argument("--out", default=None)
    parser.add_argument("--encode-cpus", default="1",
                        help="compute.encode_cpus of the runs; several (e.g. 1,0) run each size with each")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = tempfile.mkdtemp(prefix="bench_scale_")
    checkpoint = os.path.join(work, "smallest")
    smallest_model(checkpoint)
    with open("/proc/loadavg") as f:
        load_before = " ".join(f.read().split()[:3])
    memory = memory_gib()
    import ray

    machine = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_model(),
               "cores": os.cpu_count(), "memory_gib": memory, "ray": ray.__version__, "load_before": load_before}
    port = free_port()
    ray_temp = tempfile.mkdtemp(prefix="ray_scale_", dir="/tmp")
    head = OwnedProcess(["ray", "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                         "--include-dashboard=false", "--node-ip-address=127.0.0.1", f"--temp-dir={ray_temp}",
                         "--disable-usage-stats", *ray_port_flags(head=True)],
                        env={**os.environ, "RAY_AUTH_MODE": "token"})
    results = []
    try:
        wait_for_port(port, timeout=120, process=head)
        for rows in sizes:
            for encode_cpus in (float(c) for c in args.encode_cpus.split(",")):
                results.append(run_size(work, checkpoint, rows, args.rows_per_file, f"127.0.0.1:{port}", encode_cpus))
                print(json.dumps(results[-1]), flush=True)
    finally:
        head.stop()
        shutil.rmtree(ray_temp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    report = render(results, machine)
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()
