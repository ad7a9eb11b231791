"""5. The report: the machine and every table and check, as Markdown."""

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
from typing import Any, Dict, List, Tuple

import ray
import torch

from bench.common.machine import cpu_model, memory_gib
from bench.gpu_check.clock import Clock, Device, Timing
from bench.gpu_check.everything import points_per_side
from bench.gpu_check.inputs import describe
from bench.gpu_check.pipeline_run import planned_pipeline_rows
from bench.gpu_check.settings import BF16_MIN_MEAN_IOU, LOGIT_TOLERANCE, Settings

MASKS = {"random": "their masks noisy, with many runs each: the most that mask coding and writing cost",
         "empty": "hypernetworks zeroed, so every mask is empty: the least that mask coding and writing cost"}


def device_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def driver_version() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True)
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        version = getattr(torch._C, "_cuda_getDriverVersion", lambda: 0)()  # the CUDA driver API's version
        return f"CUDA driver API {version // 1000}.{version % 1000 // 10}" if version else "unknown"


def machine(dev: Device, load_before: Tuple[float, ...]) -> List[str]:
    lines = [f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}"]
    if dev.cuda:
        props = torch.cuda.get_device_properties(dev.device)
        lines += [f"- GPU: {props.name}, {props.total_memory / 2**30:.1f} GiB, compute capability "
                  f"{props.major}.{props.minor}, {props.multi_processor_count} SMs",
                  f"- driver {driver_version()}; torch's CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"]
    else:
        lines.append("- GPU: none (CPU run; CUDA-only checks not run)")
    lines += [f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores, {memory_gib():.0f} GiB; torch threads "
              f"{torch.get_num_threads()}",
              f"- torch {torch.__version__}, ray {ray.__version__}, Python {platform.python_version()}",
              f"- load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; after: "
              f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}"]
    return lines


def tflops(flops: float, timing: Timing, batch: int = 1) -> float:
    return flops * batch / timing.seconds / 1e12


def render(settings: Settings, args: argparse.Namespace, dev: Device, clock: Clock, r: Dict[str, Any]) -> str:
    title = "smoke run (tiny model, not a measurement)" if settings.smoke else "one GPU"
    lines = [f"# samhq_core and the pipeline on {title}", "",
             f"Command: `python -m bench.gpu_check {' '.join(sys.argv[1:])}`; what is measured and how: the docstring "
             f"of `bench/gpu_check/__main__.py`. Total {clock.elapsed():.0f} s of a {args.budget_s:.0f} s budget.", "",
             "## Machine", "", *machine(dev, r["load_before"]), ""]
    lines += render_checks(r)
    lines += render_throughput(settings, r)
    lines += render_pipeline(settings, r)
    lines += ["## Skipped or failed", ""]
    notes = [f"- skipped: {s}" for s in clock.skipped] + [f"- {f}" for f in r["failures"]]
    if r.get("interrupted"):
        notes.append(f"- interrupted: {r['interrupted']}; the sections above that say 'not run' did not run")
    lines += notes or ["- nothing"]
    lines += ["", f"Result: **{'FAILED' if r['failures'] else 'passed'}**", ""]
    return "\n".join(lines)


def render_checks(r: Dict[str, Any]) -> List[str]:
    lines = ["## Parity", ""]
    p = r.get("parity")
    if p is None:
        lines += ["not run", ""]
    else:
        fp32, bf16 = "passed" if p["fp32_passed"] else "FAILED", "passed" if p["bf16_passed"] else "FAILED"
        trivial = "" if r["cuda"] else " The device is the CPU here, so device vs CPU is trivially 0."
        lines += [
            f"Model: {p['model']}; device vs CPU on the same random weights, fp32 with TF32 off.{trivial}", "",
            "| check | value | limit | result |", "|---|---|---|---|",
            f"| mask logits, max abs difference (max abs logit {p['logit_scale']:.3g}) | {p['logits']:.2e} "
            f"| {LOGIT_TOLERANCE:g} | {fp32} |",
            f"| IoU scores, max abs difference | {p['iou_scores']:.2e} | {LOGIT_TOLERANCE:g} | {fp32} |",
            f"| image embeddings, max abs difference (max abs value {p['embedding_scale']:.3g}) | {p['embeddings']:.2e} "
            "| (reported) | |",
            f"| bf16 autocast vs fp32, mean IoU of masks binarised at 0 (min {p['bf16_min_iou']:.4f}) "
            f"| {p['bf16_mean_iou']:.4f} | ≥ {BF16_MIN_MEAN_IOU} | {bf16} |",
            f"| bf16 autocast vs fp32, IoU scores max abs difference | {p['bf16_iou_scores']:.2e} | (reported) | |",
            "", f"fp32 masks cover {p['foreground']:.0%} of the pixels on average (random weights: a check of "
            "numerics, not of mask quality).", "",
            f"parity: {'passed' if p['fp32_passed'] and p['bf16_passed'] else 'FAILED'}", "",
        ]
    lines += ["## Host syncs", ""]
    s = r.get("syncs")
    if s is None:
        return lines + ["not run", ""]
    lines += [f"Sync-free calls (`get_image_embeddings` + `decode_prompts`, {s['boxes']} boxes) under "
              "`torch.cuda.set_sync_debug_mode(\"error\")`:", "",
              *[f"- {label}: {status}" for label, status in s["free"].items()], "",
              f"sync-free: {'not checked (no CUDA)' if not s['cuda'] else 'passed' if s['free_passed'] else 'FAILED'}",
              ""]
    if "images" not in s:
        return lines + ["ModelUDF.process: not run", ""]
    if s["batch"] is None:
        return lines + [f"`ModelUDF.process` on {s['images']} decoded rows ran; its syncs are not counted without "
                        "CUDA.", ""]
    per_image = [sum(c.values()) for c in s["per_image"]]
    total = sum(s["batch"].values())
    lines += [f"`ModelUDF.process` (model.dtype {s['dtype']}) under \"warn\", on rows decoded by `DecodeUDF` "
              f"({s['boxes']} boxes each): {total} syncs for a batch of {s['images']} images "
              f"({total / s['images']:.1f} per image); each image alone: {', '.join(map(str, per_image))}.", "",
              "| where (batch of all images) | syncs |", "|---|---|"]
    lines += [f"| `{where}` | {count} |" for where, count in sorted(s["batch"].items(), key=lambda kv: -kv[1])]
    return lines + [""]


def render_throughput(settings: Settings, r: Dict[str, Any]) -> List[str]:
    peaks = r.get("peaks")
    lines = ["## Matmul peak", ""]
    if peaks is None:
        return lines + ["not run", ""]
    lines += [f"Best {settings.peak_size}³ matmul: fp32 (TF32 off) {peaks['fp32'] / 1e12:.3g} TFLOP/s, "
              f"bf16 {peaks['bf16'] / 1e12:.3g} TFLOP/s.", "",
              "## Encoder", "",
              "`get_image_embeddings` on random pixels; MFU = analytic FLOPs (`bench.common.flops.encoder_flops`) / time / the "
              "same dtype's matmul peak above (bf16 for compiled). ms per call: median (min–max).", "",
              "| encoder | mode | batch | ms / call | images/s | TFLOP/s | MFU | peak GiB | compile + first call s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for row in r.get("encoders", []):
        t = row.timing
        peak = peaks["fp32" if row.mode == "fp32" else "bf16"]
        achieved = tflops(row.flops, t, row.batch) if t.ok else 0.0
        cells = ([t.span(), f"{row.batch / t.seconds:.2f}", f"{achieved:.3g}", f"{achieved * 1e12 / peak:.1%}"]
                 if t.ok else [t.status, "", "", ""])
        lines.append(f"| {row.variant} ({row.flops / 1e9:.4g} GFLOP/image) | {row.mode} | {row.batch} | "
                     + " | ".join(cells) + f" | {'' if t.peak_gib is None else f'{t.peak_gib:.1f}'} | "
                     f"{'' if t.extra_s is None else f'{t.extra_s:.1f}'} |")
    lines += ["", "## Decoder", "",
              f"`decode_prompts` on one image's embeddings ({describe(settings.parity_config)}), "
              "`multimask_output=False`; ms per call: median (min–max).", "",
              "| boxes | chunk | fp32 ms | fp32 masks/s | bf16 ms | bf16 masks/s |", "|---|---|---|---|---|---|"]
    for d in r.get("decoder", []):
        cells = []
        for t in (d.fp32, d.bf16):
            cells += [t.span(), f"{d.boxes / t.seconds:.0f}" if t.ok else ""]
        lines.append(f"| {d.boxes} | {d.chunk} | " + " | ".join(cells) + " |")
    height, width = settings.pipeline_hw
    lines += ["", "## Everything mode", "",
              f"`SamHQAutomaticMaskGenerator.generate` on one {width} x {height} scene ({describe(settings.parity_config)}, "
              f"random weights), points_per_side {points_per_side(settings)}, output_mode uncompressed_rle; thresholds "
              "\"off\": pred_iou_thresh and stability_score_thresh 0. ms per image: median (min–max).", "",
              "| thresholds | points at once | dtype | masks | ms / image | images/s | peak GiB |",
              "|---|---|---|---|---|---|---|"]
    for e in r.get("everything", []):
        t = e.timing
        lines.append(f"| {e.thresholds} | {e.points_per_batch} | {'bf16' if e.bf16 else 'fp32'} | {e.masks} | {t.span()} | "
                     f"{f'{1 / t.seconds:.2f}' if t.ok else ''} | {'' if t.peak_gib is None else f'{t.peak_gib:.1f}'} |")
    return lines + [""]


def render_pipeline(settings: Settings, r: Dict[str, Any]) -> List[str]:
    height, width = settings.pipeline_hw
    lines = ["## Pipeline", "",
              f"`pipeline.job.run_job` on a local Ray cluster ({os.cpu_count()} CPUs, "
              f"{1 if r.get('cuda') else 0} GPU): {settings.pipeline_images} JPEG rows of {width} x {height} "
              f"({settings.pipeline_scenes} distinct scenes), {settings.pipeline_boxes} boxes each, "
              f"{describe(settings.parity_config)} random weights ({MASKS[settings.pipeline_masks]}), "
              f"model.dtype {settings.pipeline_dtype}, "
              f"compute.batch_size {settings.pipeline_batch_size}. Seconds from job start to the closing check "
              "(actor start-up and model loading included).", "",
              "| actors x GPUs each | batches at once per actor | status | seconds | images/s | masks/s |",
              "|---|---|---|---|---|---|"]
    runs = r.get("pipeline") or planned_pipeline_rows(settings, r["cuda"])
    for p in runs:
        rates = ([f"{p.seconds:.1f}", f"{p.rows_out / p.seconds:.2f}", f"{p.masks / p.seconds:.0f}"]
                 if p.seconds else ["", "", ""])
        lines.append(f"| {p.actors} x {p.gpus:g} | {p.concurrent} | {p.status} | " + " | ".join(rates) + " |")
    for p in runs:
        if p.summary:
            lines += ["", f"{p.label}: {p.summary}", "", "```", *p.stats, "```"]
    return lines + [""]
