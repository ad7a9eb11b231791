"""One check of samhq_core and the pipeline on a single CUDA GPU, in at most 8 minutes.

Weights: random (a seeded `SamHQModel(config)` with 0.02 * N(0, 1) added to every parameter, as
bench/bench_core.py does, so that zero-initialised biases and position tables take part);
random weights cost exactly what trained ones do. Configs: `SamHQConfig.from_variant` (vit_b,
vit_l, vit_h at 1024 px). fp32 work runs with TF32 off (`torch.backends.cuda.matmul.allow_tf32`
and `torch.backends.cudnn.allow_tf32` False), so that fp32 means fp32 in the parity check and
against the fp32 peak; bf16 means `torch.autocast(dtype=torch.bfloat16)`, as the pipeline's
`model.dtype: bfloat16` runs it.

1. Parity (exit status 1 when it fails): the full model (vit_b, one synthetic scene, 16 boxes,
   `multimask_output=False`) on CUDA against the same weights on the CPU, fp32: max |difference|
   of the 256 x 256 mask logits and of the predicted IoU scores, each at most 1e-3; and bf16
   autocast against fp32 on CUDA: mean IoU of the masks binarised at 0 at least 0.98.
2. Host syncs: the sync-free calls (`get_image_embeddings`, then `decode_prompts`), fp32 and
   bf16, under `torch.cuda.set_sync_debug_mode("error")`: any sync fails the check (exit 1) and
   is reported with the line that made it. Then the pipeline's whole model stage
   (`ModelUDF.process` on rows decoded by the decode stage's `DecodeUDF`: 1080p JPEGs with 50
   boxes each) under "warn": the warnings are counted per image and per source line (its
   prompt checks and run-length coding sync by design, so the count is not zero).
3. Throughput, timed with CUDA events after warm-up calls, median of the timed calls (fewer
   when a call is long, at least 3): the matmul peaks (8192^3, fp32 with TF32 off and bf16, the
   best call); the encoder (`get_image_embeddings` on random pixels) for vit_b / vit_l / vit_h x
   fp32 / bf16 / compiled (`torch.compile(model.get_image_embeddings)` under bf16 autocast, for
   vit_b and vit_h at batch 8 only: compiling takes minutes) x batch 1 / 8 / 16, in images/s
   and as MFU: the analytic FLOP count of `bench.common.flops.encoder_flops` over the measured peak of the
   same dtype; the decoder (`decode_prompts` on one image's embeddings) at 16 / 64 / 256 boxes,
   in chunks of 64 (the accelerator default) and all boxes in one chunk, in masks/s; everything
   mode (`SamHQAutomaticMaskGenerator.generate`, points_per_side 32, run-length output) on one
   scene of the pipeline run's size, with the official thresholds and with the filters off, in
   images/s (bench/gpu_check/everything.py).
4. The whole pipeline (`pipeline.job.run_job`) on a local Ray cluster of this node's CPUs and
   its one GPU: 256 synthetic 1080p JPEG rows (4 distinct scenes of
   `samhq_core.training.synthetic.make_scene`, 50 random boxes each) in one Parquet file, a
   vit_b random-weight checkpoint (`save_pretrained`), bf16; 1 actor with 1 GPU, the same with
   2 batches at once (`compute.concurrent_batches_per_actor`: threads with CUDA streams of their
   own, so that copies and mask coding overlap the model), then 2 actors with 0.5 GPU each.
   Timed from job start to the closing check, so actor start-up and model loading count; Ray
   Data's per-stage throughput lines are quoted.
   `--pipeline-masks empty` zeroes the decoder's hypernetworks in the pipeline's checkpoint, so
   that every mask is empty: random weights' masks are noise with thousands of runs each, which
   makes mask coding and writing cost far more than real masks do; the two runs bracket them.
   `--sections pipeline` runs this section alone.
Measurements run in order of importance; `--budget-s` skips those that would not finish in
time (the report lists them), and a SIGTERM (the wrapper's `timeout`) still writes the report.

Report: `bench/results/gpu_<device name>.md` (the machine, every table, the checks).
`--smoke` runs every code path on the CPU (or a GPU if there is one) with a 64 px model, 2
images, a few boxes and an 8-row pipeline run of 64 x 64 images (2 batches at once), in well
under a minute, without the CUDA-only calls (sync debug mode; time.perf_counter instead of CUDA
events) and with torch.compile's "eager" backend (inductor's C++ build takes half a minute on a
small CPU); its report goes to `--out` or a temporary file, never to bench/results.

Usage: bash bench/gpu_check.sh    (python -m bench.gpu_check --budget-s 420 under `timeout 480`)
       python -m bench.gpu_check --sections pipeline --pipeline-masks empty
       python -m bench.gpu_check --smoke [--out report.md]
"""
import os
import shutil
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import ray
import torch

from bench.gpu_check.clock import Clock, Device, interrupt
from bench.gpu_check.everything import bench_everything
from bench.gpu_check.inputs import empty_masks, job_config, write_pipeline_input
from bench.gpu_check.parity import check_parity
from bench.gpu_check.pipeline_run import bench_pipeline
from bench.gpu_check.report import device_slug, render
from bench.gpu_check.settings import ROOT, Settings, parse_args
from bench.gpu_check.syncs import check_syncs
from bench.gpu_check.throughput import bench_compiled, bench_decoder, bench_encoders, matmul_peaks
from samhq_core import SamHQModel
from samhq_core.random_weights import random_model


def run_checks(settings: Settings, dev: Device, clock: Clock, r: Dict[str, Any], work: str) -> None:
    """Every section in order of importance, filling `r` as they finish (a partial `r` still renders)."""
    model: Optional[SamHQModel] = None
    if settings.sections == "pipeline":
        reference = random_model(settings.parity_config, settings.seed)
    else:
        parity, reference, model = check_parity(settings, dev, clock)
        r["parity"] = parity
        if not (parity["fp32_passed"] and parity["bf16_passed"]):
            r["failures"].append("parity check failed (see Parity)")

    checkpoint, input_path = os.path.join(work, "checkpoint"), os.path.join(work, "input", "images.parquet")
    if settings.pipeline_masks == "empty":
        empty_masks(reference)
    reference.save_pretrained(checkpoint)  # the parity model's weights: the pipeline loads what was checked
    del reference
    os.makedirs(os.path.dirname(input_path))
    write_pipeline_input(input_path, settings)
    clock.log(f"wrote {settings.pipeline_images} input rows and the checkpoint")
    if model is not None:
        first_actors, first_gpus, _ = settings.pipeline_runs[0]
        first_gpus = first_gpus if dev.cuda else 0.0
        r["syncs"] = check_syncs(settings, dev, clock, model,
                                 job_config(work, checkpoint, input_path, settings, first_actors, first_gpus), input_path)
        if not r["syncs"]["free_passed"]:
            r["failures"].append("the sync-free model calls synced (see Host syncs)")

        r["peaks"] = matmul_peaks(settings, dev, clock)
        r["encoders"] = bench_encoders(settings, dev, clock, r["peaks"])
        r["decoder"] = bench_decoder(settings, dev, clock, model)
        r["everything"] = bench_everything(settings, dev, clock, model)
        del model
    dev.reset_peak_memory()  # the pipeline's actors get the GPU's memory
    r["pipeline"] = bench_pipeline(settings, dev, clock, work, checkpoint, input_path)
    if settings.sections == "all":
        r["encoders"] += bench_compiled(settings, dev, clock)
    failed = [f"{row.variant} {row.mode} batch {row.batch}: {row.timing.status}" for row in r.get("encoders", [])
              if row.timing.status.startswith("error")]
    failed += [f"decoder {d.boxes} boxes {d.chunk}: {t.status}" for d in r.get("decoder", []) for t in (d.fp32, d.bf16)
               if t.status.startswith("error")]
    failed += [f"everything mode {e.thresholds} {e.points_per_batch}: {e.timing.status}" for e in r.get("everything", [])
               if e.timing.status.startswith("error")]
    failed += [f"pipeline {p.label}: {p.status}" for p in r["pipeline"]
               if p.status.startswith(("error", "failed"))]
    r["failures"] += failed


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, settings = parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not settings.smoke:
        print("error: no CUDA device; this check needs one (--smoke runs its code paths on the CPU)", file=sys.stderr)
        return 2
    # The wrapper's `timeout` sends SIGTERM: end Ray and write what was measured.
    signal.signal(signal.SIGTERM, interrupt)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 is fp32: parity, fp32 throughput and the fp32 peak
    torch.backends.cudnn.allow_tf32 = False
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    dev = Device(torch.device("cuda" if cuda else "cpu"))
    clock = Clock(args.budget_s)
    if args.out is None:
        if settings.smoke:
            fd, name = tempfile.mkstemp(prefix="gpu_check_smoke_", suffix=".md")
            os.close(fd)
            args.out = Path(name)
        else:
            args.out = ROOT / "bench" / "results" / f"gpu_{device_slug(torch.cuda.get_device_name(dev.device))}.md"
    r: Dict[str, Any] = {"load_before": os.getloadavg(), "cuda": cuda, "failures": []}
    clock.log(f"device {dev.device}{' ' + torch.cuda.get_device_name(dev.device) if cuda else ''}; "
              f"budget {args.budget_s:.0f} s; report: {args.out}")
    work = tempfile.mkdtemp(prefix="gpu_check_")
    try:
        run_checks(settings, dev, clock, r, work)
    except KeyboardInterrupt as e:
        r["interrupted"] = str(e) or "KeyboardInterrupt"
        r["failures"].append(f"interrupted ({r['interrupted']})")
    except Exception:  # noqa: BLE001 - a crash still writes what was measured, with its traceback
        r["failures"].append("crashed:\n\n```\n" + traceback.format_exc() + "```")
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    report = render(settings, args, dev, clock, r)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)
    clock.log(f"report written to {args.out}")
    return 1 if r["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
