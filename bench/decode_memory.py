"""Memory of one decode task's worker, which sizes the decode stage's memory reservation
(`pipeline.stages.decode_memory`).

Each measurement runs in a fresh Python process, as a Ray worker is: it imports the decode
stage (and with it what a worker loads: Ray Data, pyarrow, PIL, torch, samhq_core), then decodes one
batch of JPEGs of one size and reports the process's unique memory (USS, what Ray Data's
memory warnings compare with the reservation) after the imports and after the batch, and its
peak resident memory.

Usage: python -m bench.decode_memory [--out bench/results/decode_memory.md]
"""

import argparse
import json
import os
import platform
import subprocess
import sys

SIZES = {"640x480": (480, 640), "1080p": (1080, 1920), "4K": (2160, 3840)}
BATCHES = (1, 8, 16)

_CHILD = r"""
import io, json, resource, sys
import numpy as np, psutil
process = psutil.Process()
start = process.memory_full_info().uss
import pyarrow as pa
import ray.data
from PIL import Image
from pipeline.config import InputConfig, StorageConfig
from pipeline.stages.contract import StageRunner
from pipeline.stages.decode import DecodeUDF
imported = process.memory_full_info().uss
h, w, n = (int(v) for v in sys.argv[1:4])
rng = np.random.default_rng(0)
yy, xx = np.mgrid[:h, :w]
image = np.stack([xx * 255 // w, yy * 255 // h, rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
buffer = io.BytesIO()
Image.fromarray(image).save(buffer, format="JPEG", quality=90)
table = pa.table({"id": list(range(n)), "image": [buffer.getvalue()] * n, "boxes": [[[1.0, 1.0, 50.0, 50.0]]] * n})
stage = StageRunner(DecodeUDF.stage(InputConfig(path="-", id_column="id", boxes_column="boxes", image_column="image"),
                                    StorageConfig(), 1024, n, keep_image=False))
out = stage(table)
assert out.column("error").null_count == n
print(json.dumps({"start": start, "imported": imported, "after": process.memory_full_info().uss,
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "decode_memory.md"))
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rows = []
    for name, (h, w) in SIZES.items():
        for n in BATCHES:
            result = subprocess.run([sys.executable, "-c", _CHILD, str(h), str(w), str(n)], cwd=root, check=True,
                                    capture_output=True, text=True, env={**os.environ, "PYTHONPATH": root})
            m = {k: v / 2**20 for k, v in json.loads(result.stdout).items()}
            rows.append(f"| {name} | {n} | {m['start']:.0f} | {m['imported']:.0f} | {m['after']:.0f} | "
                        f"{(m['after'] - m['imported']) / n:.1f} | {m['peak_rss']:.0f} |")
            print(rows[-1], flush=True)
    load = os.getloadavg()
    lines = [
        "# Decode task memory", "",
        f"`python -m bench.decode_memory` on {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; load average during the run {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.",
        "Each row is a fresh process: import the decode stage, decode one batch of identical JPEGs (quality 90),",
        "resize them for a 1024 model. MiB; USS = unique set size, what Ray Data's memory warnings compare",
        "with the task's reservation.", "",
        "| image | batch | USS at start | USS after imports | USS after the batch | per image | peak RSS |",
        "|---|---|---|---|---|---|---|", *rows, "",
    ]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
