"""Host memory and time of the HQ decoder on a chunk of boxes from several images against the
same number of boxes on one image, which shares the image's embedding and HQ features by
broadcasting: the reference a chunk spanning several images (`SamHQModel.decode_flat`, the
model stage's path) should match. The several-images case also computes the HQ features of
each of its images (one compress_vit_feat and embedding_encoder pass per image), which the
one-image case does once.

Each case runs in a fresh Python process: a random-weight vit_b model (the decoder is the
same for every variant), random embeddings of `--images` images (or one), and `--boxes`
boxes in one chunk, fp32 on CPU, one warm-up call with a few boxes and then three timed calls
(the median is reported). The process's peak resident memory before and after them gives a
call's peak; the ratios of the two cases (peak, seconds) are the cost of spanning several
images. On a GPU the same tensors are allocated, so the ratio carries over; the absolute
numbers do not.

Usage: python -m bench.decoder_memory [--boxes 64] [--images 4] [--out bench/results/decoder_memory.md]
"""

import argparse
import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Dict

import torch

from bench.common.machine import contention, cpu_counters, cpu_model

DEFAULT_OUT = Path(__file__).parent / "results" / "decoder_memory.md"

_CHILD = r"""
import json, resource, sys, time
import torch
from samhq_core import SamHQConfig, SamHQModel
images, boxes = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
torch.set_num_threads(1)
model = SamHQModel(SamHQConfig.from_variant("vit_b")).eval()
embeddings, intermediate = torch.randn(images, 256, 64, 64), torch.randn(images, 64, 64, 768)
corners = torch.rand(boxes, 2) * 700
prompts = torch.cat([corners, corners + 300], dim=1)
index = torch.arange(images).repeat_interleave(boxes // images)
with torch.inference_mode():
    model.decode_flat(embeddings, intermediate, index[:images], boxes=prompts[:images], multimask_output=False,
                      prompt_chunk_size=boxes)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(3):
        start = time.perf_counter()
        model.decode_flat(embeddings, intermediate, index, boxes=prompts, multimask_output=False,
                          prompt_chunk_size=boxes)
        times.append(time.perf_counter() - start)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_mb": before / 1024, "after_mb": after / 1024, "seconds": sorted(times)[1]}))
"""


def measure(images: int, boxes: int) -> Dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(images), str(boxes)], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boxes", type=int, default=64, help="boxes in the chunk (default 64, the GPU default)")
    parser.add_argument("--images", type=int, default=4, help="images the boxes come from (default 4)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.boxes % args.images:
        parser.error("--boxes must be a multiple of --images")
    counters, started = cpu_counters(children=True), datetime.datetime.now(datetime.timezone.utc)
    one = measure(1, args.boxes)
    several = measure(args.images, args.boxes)
    runtime = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    rows = []
    for label, r in ((f"{args.boxes} boxes of 1 image (reference)", one),
                     (f"{args.boxes} boxes of {args.images} images, one chunk", several)):
        rows.append(f"| {label} | {r['before_mb']:.0f} | {r['after_mb']:.0f} | {r['after_mb'] - r['before_mb']:.0f} "
                    f"| {r['seconds']:.2f} |")
    ratio = (several["after_mb"] - several["before_mb"]) / (one["after_mb"] - one["before_mb"])
    time_ratio = several["seconds"] / one["seconds"]
    report = "\n".join([
        "# HQ decoder: one chunk of boxes from several images vs one image (memory, time)",
        "",
        f"Run {started:%Y-%m-%d %H:%M} UTC on {cpu_model()}, Python {platform.python_version()}, torch "
        f"{torch.__version__} (1 thread), fp32; {runtime:.0f} s; during the run {contention(counters, runtime, children=True)}. "
        "Method: `bench/decoder_memory.py` docstring.",
        "",
        "| case | peak RSS before the calls, MB | after, MB | a call's peak, MB | call s (median of 3) |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
        f"Several images / one image: the call's peak **{ratio:.2f}**, its time **{time_ratio:.2f}**.",
        "",
    ])
    args.out.write_text(report)
    print(report)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
