"""Pipeline throughput against a bare loop of samhq_core, same model, data and machine.

Data: `--images` synthetic scenes from `pipeline.demo.write_sample_dataset` (256 x 256 PNG,
1-4 boxes each) in one Parquet file. (`results/cpu_pipeline.md` was measured on the earlier
demo data: JPEG scenes of 240-480 px sides with 2-4 boxes each.) Model: a randomly
initialised vit_tiny SAM-HQ (HF layout), 1024 input, multimask off; random weights cost
exactly what trained ones do.

1. Bare loop (`pipeline.reference.bare_loop`), in this process with `--threads` torch
   threads: per row, decode the image, SamHQProcessor, encoder + decoder on the row's boxes,
   post_process_masks, pycocotools RLE.
   The model is loaded before timing starts.
2. The pipeline (`pipeline.job.run_job`) on a local Ray cluster started beforehand (not
   timed): 1 model actor with `--threads` torch threads, decode and encode tasks beside it.
   Timed from job start to the last Parquet file written, so actor start-up and model
   loading count against the pipeline.
Reports images/s of both and their ratio (target >= 0.8), and Ray Data's per-stage stats.

Usage: python -m bench.bench_pipeline [--images 48] [--threads 2] [--out bench/results/cpu_pipeline.md]
"""

import argparse
import datetime
import os
import re
import tempfile
import time

import pyarrow.parquet as pq
import ray
import torch

from bench.common.machine import cpu_model
from pipeline.config import parse_config
from pipeline.demo.dataset import write_sample_dataset
from pipeline.evaluation.reference import bare_loop
from pipeline.job.run import run_job
from samhq_core import SamHQConfig, SamHQModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = tempfile.mkdtemp(prefix="bench_pipeline_")
    input_path = os.path.join(work, "input", "images.parquet")
    write_sample_dataset(input_path, args.images)
    checkpoint = os.path.join(work, "vit_tiny")
    torch.manual_seed(0)
    SamHQModel(SamHQConfig.from_variant("vit_tiny")).save_pretrained(checkpoint)
    model = SamHQModel.from_pretrained(checkpoint)
    boxes = sum(len(b) for b in pq.read_table(input_path, columns=["boxes"]).column("boxes").to_pylist())

    rows = pq.read_table(input_path).to_pylist()
    start = time.perf_counter()
    for _ in bare_loop(model, rows):
        pass
    bare_seconds = time.perf_counter() - start
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    config = parse_config({
        "input": {"path": input_path, "id_column": "image_id", "image_column": "image", "boxes_column": "boxes"},
        "output": {"path": os.path.join(work, "output"), "mode": "overwrite"},
        "model": {"checkpoint": checkpoint},
        "compute": {"num_actors": 1, "batch_size": 1, "decode_batch_size": 4, "torch_threads": args.threads},
    })
    summary = run_job(config)
    ray.shutdown()

    bare_rate, pipe_rate = args.images / bare_seconds, args.images / summary.seconds
    stage_lines = [line for line in summary.stats.splitlines()
                   if re.match(r"Operator \d+ |\* Remote wall time|\* Operator throughput|\s+\* Ray Data throughput",
                               line)]
    lines = [
        "# Pipeline throughput vs a bare samhq_core loop — CPU",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores; torch {torch.__version__}, ray {ray.__version__}",
        f"- data: {args.images} synthetic PNG scenes (256 x 256), {boxes} boxes; model: random vit_tiny, "
        f"1024 input, fp32, {args.threads} torch threads in the bare loop and in the single model actor",
        "",
        "| run | seconds | images/s | boxes/s |",
        "|---|---|---|---|",
        f"| bare loop (decode → processor → model → post-process → RLE) | {bare_seconds:.1f} | {bare_rate:.2f} "
        f"| {boxes / bare_seconds:.1f} |",
        f"| pipeline (Ray Data, actor start-up and model load included) | {summary.seconds:.1f} | {pipe_rate:.2f} "
        f"| {boxes / summary.seconds:.1f} |",
        "",
        f"Pipeline / bare loop throughput: **{pipe_rate / bare_rate:.2f}** (target >= 0.8).",
        "",
        f"Job summary: {summary.render()}",
        "",
        "## Ray Data per-stage stats",
        "",
        "```",
        *stage_lines,
        "```",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()
