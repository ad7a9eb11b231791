"""CPU benchmark of samhq_core against transformers' SamHQModel, on the same random vit_b weights.

Weights: transformers' `SamHQModel(SamHQConfig())` (vit_b) with 0.02 * N(0, 1) noise added to every
parameter, so that zero-initialised biases, positional and relative-position embeddings are
non-trivial. The prompt encoder's random Fourier matrix is redrawn with std 1 as in the official
SAM (transformers initialises it with std 384, which turns box corners into high-frequency noise).
The model is written with `save_pretrained` and read back by `samhq_core.SamHQModel.from_pretrained`,
so the benchmark also exercises the HF-layout loader.

Input: one synthetic 1024 x 1024 scene (smooth background, 16 flat-shaded ellipses and rectangles);
box prompts are the shapes' bounding boxes, cycled with a few pixels of jitter for more than 16 boxes.

Measured, in one process with `torch.set_num_threads`, under `torch.inference_mode`; each timed
callable runs `--warmup` untimed rounds, then `--repeats` timed rounds, alternating between the
implementations in every round so that drift (thermal, other load) hits all of them equally.
Medians are reported, with the range of the timed runs.
1. Image encoder, fp32, batch 1: `get_image_embeddings` of both models. Throughput in GFLOP/s from an
   analytic count of the encoder's matmuls and convolutions (2 FLOPs per multiply-add): patch embed,
   qkv / proj / MLP linears, attention QK^T and AV, the decomposed relative-position einsums, the
   neck. Windowed blocks count the work as executed: the 64 x 64 grid is zero-padded to 70 x 70 and
   split into 25 windows of 14 x 14, so qkv, proj and attention run on 4900 tokens. Elementwise
   work (norms, softmax, GELU, bias adds) is not counted. The throughput is compared with the best
   of a few N x N fp32 matmuls measured in the same run.
2. Prompt encoder + HQ mask decoder with 1, 16 and 64 boxes on one image, `multimask_output=False`,
   image embeddings precomputed once (untimed).
3. samhq_core's encoder under `torch.autocast("cpu", dtype=torch.bfloat16)`, timed in the same
   alternation as 1 and compared with a bf16 matmul peak; and its quality: the full model (encoder
   + decoder, 16 boxes) in fp32 and under bf16 autocast, low-res (256 x 256) mask logits binarised
   at 0, mean / min IoU between the two over the boxes.
Checks: max |difference| of the image embeddings and of the early (first global block) features
between the two implementations, and of the predicted IoU scores per box count. transformers' mask
logits are not compared: its decoder upscales the image embedding from before the two-way transformer
(transposed) instead of the transformer's output (a known bug), so only its IoU scores are expected
to agree.

Linux only (reads /proc/cpuinfo and /proc/stat; the report states how much CPU other processes took
during the run, since a concurrent job distorts the timings by far more than the differences measured).

Usage: python -m bench.bench_core [--repeats 3] [--quick] [--out bench/results/cpu_core.md]
"""

import argparse
import datetime
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import torch
import transformers

import samhq_core
from bench.common.compare import mask_iou, max_abs_diff
from bench.common.flops import encoder_flops
from bench.common.machine import contention, cpu_counters, cpu_model
from samhq_core.modeling.image_encoder import cpu_has_amx_bf16, cpu_has_avx512_bf16

IMAGE_SIZE = 1024
NUM_SHAPES = 16
QUALITY_BOXES = 16
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "cpu_core.md"

Timings = Dict[str, List[float]]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per measurement (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before timing (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true",
        help="1 timed round, boxes 1 and 16 only, 2048^2 peak matmuls; no file unless --out",
    )
    parser.add_argument("--out", type=Path, help=f"markdown report path (default {DEFAULT_OUT}, none with --quick)")
    parser.add_argument("--neighbour", action="store_true",
                        help="run one busy process (a spinning Python loop) beside the benchmark for its whole run, "
                             "as a shared machine has; its CPU time counts as other processes' in the report")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    elif args.out is None:
        args.out = DEFAULT_OUT
    args.box_counts = (1, 16) if args.quick else (1, 16, 64)
    args.peak_size = 2048 if args.quick else 4096
    return args


# --------------------------------------------------------------------------- models and inputs


def build_models(seed: int) -> Tuple[samhq_core.SamHQModel, transformers.SamHQModel]:
    """transformers' vit_b with perturbed random weights, and samhq_core loaded from its save_pretrained."""
    torch.manual_seed(seed)
    theirs = transformers.SamHQModel(transformers.SamHQConfig()).eval()
    with torch.no_grad():
        for param in theirs.parameters():
            param.add_(0.02 * torch.randn_like(param))
        theirs.shared_image_embedding.positional_embedding.normal_(0.0, 1.0)  # tied with the prompt encoder's
    with tempfile.TemporaryDirectory() as directory:
        theirs.save_pretrained(directory)
        ours = samhq_core.SamHQModel.from_pretrained(directory)
    return ours, theirs


def synthetic_scene(seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """A smooth RGB scene (H, W, 3) uint8 with NUM_SHAPES shapes, and their boxes (NUM_SHAPES, 4) x1 y1 x2 y2."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) / IMAGE_SIZE
    image = np.stack([90 + 60 * xs, 110 + 50 * ys, 140 + 30 * np.sin(3 * xs + 2 * ys)], axis=-1)
    boxes = []
    for i in range(NUM_SHAPES):
        cx, cy = rng.uniform(0.12, 0.88, size=2)
        rx, ry = rng.uniform(0.04, 0.12, size=2)
        if i % 2:
            inside = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1
        else:
            inside = (np.abs(xs - cx) <= rx) & (np.abs(ys - cy) <= ry)
        shading = 1 - 0.3 * (ys - cy + ry) / (2 * ry)  # a soft vertical gradient over the shape
        image[inside] = rng.uniform(20, 235, size=3) * shading[inside, None]
        rows, cols = np.nonzero(inside)
        boxes.append([cols.min(), rows.min(), cols.max(), rows.max()])
    return np.clip(image, 0, 255).astype(np.uint8), np.asarray(boxes, dtype=np.float32)


def pixel_values(image: np.ndarray) -> torch.Tensor:
    """A square uint8 (S, S, 3) image of the model's size → its input (1, 3, S, S)."""
    return samhq_core.SamHQProcessor(image.shape[0]).model_input(torch.from_numpy(image))[None]


def box_prompts(shape_boxes: np.ndarray, count: int, seed: int) -> torch.Tensor:
    """`count` boxes (1, count, 4): the shape boxes in turn, jittered by up to 8 px after the first pass."""
    rng = np.random.default_rng(seed)
    boxes = shape_boxes[np.arange(count) % len(shape_boxes)].copy()
    repeated = np.arange(count) >= len(shape_boxes)
    boxes[repeated] += rng.uniform(-8, 8, size=(int(repeated.sum()), 4)).astype(np.float32)
    boxes = np.clip(boxes, 0, IMAGE_SIZE - 1)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
    return torch.from_numpy(boxes)[None]


# --------------------------------------------------------------------------- measurement


def time_alternating(fns: Mapping[str, Callable[[], object]], repeats: int, warmup: int) -> Tuple[Timings, Dict]:
    """Run every callable once per round, in turn; return the timed rounds' seconds and each last output."""
    times: Timings = {name: [] for name in fns}
    outputs = {}
    for round_index in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            outputs[name] = fn()
            if round_index >= warmup:
                times[name].append(time.perf_counter() - start)
    return times, outputs


def matmul_peak_gflops(size: int, dtype: torch.dtype, tries: int = 3) -> float:
    """Best throughput of `tries` size x size @ size x size matmuls, after one warm-up."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    torch.mm(a, b)
    best = math.inf
    for _ in range(tries):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


# --------------------------------------------------------------------------- benchmark sections


def bench_encoders(
    ours: samhq_core.SamHQModel, theirs: transformers.SamHQModel, pixels: torch.Tensor, args: argparse.Namespace
) -> Tuple[Timings, Dict]:
    """Time both fp32 encoders and ours under bf16 autocast; return timings and each last (embeddings, early)."""
    def ours_bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return ours.get_image_embeddings(pixels)

    fns = {
        "ours": lambda: ours.get_image_embeddings(pixels),
        "theirs": lambda: theirs.get_image_embeddings(pixels),
        "ours_bf16": ours_bf16,
    }
    return time_alternating(fns, args.repeats, args.warmup)


def bench_decoders(
    ours: samhq_core.SamHQModel,
    theirs: transformers.SamHQModel,
    embeddings: Dict,
    shape_boxes: np.ndarray,
    args: argparse.Namespace,
) -> Tuple[Dict[int, Timings], Dict[int, float]]:
    """Time both decoders per box count; return timings and the max |IoU score difference| per count."""
    image_embeddings, early = embeddings["ours"]
    their_embeddings, their_intermediate = embeddings["theirs"]
    timings, iou_diffs = {}, {}
    for count in args.box_counts:
        boxes = box_prompts(shape_boxes, count, args.seed)
        fns = {
            "ours": lambda boxes=boxes: ours(
                image_embeddings=image_embeddings, intermediate_embeddings=early,
                input_boxes=boxes, multimask_output=False,
            ),
            "theirs": lambda boxes=boxes: theirs(
                image_embeddings=their_embeddings, intermediate_embeddings=their_intermediate,
                input_boxes=boxes, multimask_output=False,
            ),
        }
        timings[count], outputs = time_alternating(fns, args.repeats, args.warmup)
        iou_diffs[count] = max_abs_diff(outputs["ours"].iou_scores, outputs["theirs"].iou_scores)
    return timings, iou_diffs


def bf16_quality(
    ours: samhq_core.SamHQModel, pixels: torch.Tensor, shape_boxes: np.ndarray, seed: int
) -> Dict[str, float]:
    """Full model, 16 boxes, fp32 vs bf16 autocast: IoU of the binarised low-res masks."""
    boxes = box_prompts(shape_boxes, QUALITY_BOXES, seed)
    fp32 = ours(pixel_values=pixels, input_boxes=boxes, multimask_output=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = ours(pixel_values=pixels, input_boxes=boxes, multimask_output=False)
    masks32, masks16 = fp32.pred_masks[0, :, 0] > 0, bf16.pred_masks[0, :, 0] > 0
    ious = mask_iou(masks32, masks16)
    return {
        "mean_iou": ious.mean().item(),
        "min_iou": ious.min().item(),
        "foreground": masks32.float().mean().item(),
        "iou_score_diff": max_abs_diff(fp32.iou_scores, bf16.iou_scores),
    }


# --------------------------------------------------------------------------- report


def fmt_time(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    """Median with the range of the runs, e.g. `5.91 (5.85–6.02)`."""
    med, low, high = (x * scale for x in (median(values), min(values), max(values)))
    return f"{med:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def render(args: argparse.Namespace, enc: Timings, dec: Dict[int, Timings], peaks: Dict[str, float], flops: float,
           checks: Dict[str, float], iou_diffs: Dict[int, float], quality: Dict[str, float], runtime: float,
           counters_at_start: Tuple[float, float, float]) -> str:
    ours_s, theirs_s, bf16_s = (median(enc[k]) for k in ("ours", "theirs", "ours_bf16"))
    amx = cpu_has_amx_bf16()
    encoder_target = "≤ 0.9 beside a busy process" if args.neighbour else "≤ 0.7"
    bf16_target = "≥ 3 with AMX" if amx else "≥ 2 without AMX"
    gflops = {name: flops / median(times) / 1e9 for name, times in enc.items()}
    lines = [
        "# samhq_core vs transformers SamHQModel — CPU",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores, torch threads: {torch.get_num_threads()}, "
        f"AMX bf16: {'yes (bf16 attention folds the relative positions into its dot products)' if amx else 'no'}"
        + ("; AVX512-BF16: yes (bf16 global attention as explicit matmul scores)"
           if not amx and cpu_has_avx512_bf16() else ""),
        f"- during the run: {contention(counters_at_start, runtime)} (anything but ~0% skews the timings)"
        + ("; of that, one busy neighbour process started by the benchmark (--neighbour)" if args.neighbour else ""),
        f"- torch {torch.__version__}, transformers {transformers.__version__}, Python {platform.python_version()}",
        "- model: vit_b SAM-HQ, random weights (see bench/bench_core.py), one 1024 x 1024 synthetic image",
        f"- timed rounds: {args.repeats} after {args.warmup} warm-up, alternating implementations; "
        f"median (min–max); total runtime {runtime / 60:.1f} min",
        "",
        "## fp32: samhq_core vs transformers",
        "",
        "| measurement | samhq_core | transformers | samhq_core time / transformers time (target) |",
        "|---|---|---|---|",
        f"| image encoder (s / image) | {fmt_time(enc['ours'])} | {fmt_time(enc['theirs'])} "
        f"| {ours_s / theirs_s:.2f} ({encoder_target}) |",
        f"| image encoder GFLOP/s ({flops / 1e9:.0f} GFLOP / image) | {gflops['ours']:.0f} "
        f"({gflops['ours'] / peaks['fp32']:.0%} of peak) | {gflops['theirs']:.0f} "
        f"({gflops['theirs'] / peaks['fp32']:.0%} of peak) | |",
    ]
    for count, times in dec.items():
        ratio = median(times["ours"]) / median(times["theirs"])
        target = " (≤ 0.5)" if count == 64 else ""
        lines.append(
            f"| decoder, {count} box{'es' if count > 1 else ''} (ms) | {fmt_time(times['ours'], 1e3, 0)} "
            f"| {fmt_time(times['theirs'], 1e3, 0)} | {ratio:.2f}{target} |"
        )
    lines += [
        "",
        f"Peak: best {args.peak_size}² matmul, fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s.",
        "",
        "## samhq_core encoder: bf16 autocast vs fp32",
        "",
        f"| measurement | fp32 | bf16 autocast | fp32 time / bf16 time (target {bf16_target}) |",
        "|---|---|---|---|",
        f"| image encoder (s / image) | {fmt_time(enc['ours'])} | {fmt_time(enc['ours_bf16'])} "
        f"| {ours_s / bf16_s:.2f}x |",
        f"| GFLOP/s (of the same-dtype matmul peak) | {gflops['ours']:.0f} ({gflops['ours'] / peaks['fp32']:.0%}) "
        f"| {gflops['ours_bf16']:.0f} ({gflops['ours_bf16'] / peaks['bf16']:.0%}) | |",
        "",
        f"Quality, full model with {QUALITY_BOXES} boxes, masks binarised at 0 (256 x 256 logits): "
        f"mean IoU bf16 vs fp32 **{quality['mean_iou']:.4f}** (min {quality['min_iou']:.4f}; target >= 0.98); "
        f"fp32 masks cover {quality['foreground']:.0%} of the pixels on average; "
        f"max |IoU score difference| {quality['iou_score_diff']:.2e}. Random weights: the masks are not "
        "semantically meaningful, so this measures numerical stability only.",
        "",
        "## Consistency checks (samhq_core vs transformers, same weights)",
        "",
        "| output | max abs difference |",
        "|---|---|",
        f"| image embeddings (max abs value {checks['embedding_scale']:.2f}) | {checks['embeddings']:.2e} |",
        f"| early features, first global block (max abs value {checks['early_scale']:.2f}) | {checks['early']:.2e} |",
    ]
    lines += [f"| decoder IoU scores, {count} box{'es' if count > 1 else ''} | {diff:.2e} |"
              for count, diff in iou_diffs.items()]
    lines += ["", "transformers' mask logits are not compared: its decoder has a known bug that changes them."]
    return "\n".join(lines) + "\n"


def encoder_checks(outputs: Dict) -> Dict[str, float]:
    (embeddings, early), (their_embeddings, their_intermediate) = outputs["ours"], outputs["theirs"]
    return {
        "embeddings": max_abs_diff(embeddings, their_embeddings),
        "embedding_scale": their_embeddings.abs().max().item(),
        "early": max_abs_diff(early, their_intermediate[0]),
        "early_scale": their_intermediate[0].abs().max().item(),
    }


def main() -> None:
    args = parse_args()
    # The neighbour is this run's own child, ended by its pid.
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.neighbour else None
    try:
        run(args)
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()


def run(args: argparse.Namespace) -> None:
    started, counters_at_start = time.perf_counter(), cpu_counters()
    torch.set_num_threads(args.threads)
    ours, theirs = build_models(args.seed)
    image, shape_boxes = synthetic_scene(args.seed)
    pixels = pixel_values(image)
    with torch.inference_mode():
        peaks = {name: matmul_peak_gflops(args.peak_size, dtype)
                 for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
        enc_times, enc_outputs = bench_encoders(ours, theirs, pixels, args)
        dec_times, iou_diffs = bench_decoders(ours, theirs, enc_outputs, shape_boxes, args)
        quality = bf16_quality(ours, pixels, shape_boxes, args.seed)
    report = render(
        args, enc_times, dec_times, peaks, encoder_flops(ours.config.vision_config),
        encoder_checks(enc_outputs), iou_diffs, quality, time.perf_counter() - started,
        counters_at_start,
    )
    print(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
