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
   and as MFU: the analytic FLOP count of `benchlib.encoder_flops` over the measured peak of the
   same dtype; the decoder (`decode_prompts` on one image's embeddings) at 16 / 64 / 256 boxes,
   in chunks of 64 (the accelerator default) and all boxes in one chunk, in masks/s.
4. The whole pipeline (`pipeline.job.run_job`) on a local Ray cluster of this node's CPUs and
   its one GPU: 256 synthetic 1080p JPEG rows (4 distinct scenes of
   `samhq_core.training.synthetic.make_scene`, 50 random boxes each) in one Parquet file, a
   vit_b random-weight checkpoint (`save_pretrained`), bf16; 1 actor with 1 GPU, the same with
   2 batches at once (`compute.concurrent_batches_per_actor`: threads with CUDA streams of their
   own, so that copies and mask coding overlap the model), then 2 actors with 0.5 GPU each.
   Timed from job start to the closing check, so actor start-up and model loading count; Ray
   Data's per-stage throughput lines are quoted.
Measurements run in order of importance; `--budget-s` skips those that would not finish in
time (the report lists them), and a SIGTERM (the wrapper's `timeout`) still writes the report.

Report: `bench/results/gpu_<device name>.md` (the machine, every table, the checks).
`--smoke` runs every code path on the CPU (or a GPU if there is one) with a 64 px model, 2
images, a few boxes and an 8-row pipeline run of 64 x 64 images (2 batches at once), in well
under a minute, without the CUDA-only calls (sync debug mode; time.perf_counter instead of CUDA
events) and with torch.compile's "eager" backend (inductor's C++ build takes half a minute on a
small CPU); its report goes to `--out` or a temporary file, never to bench/results.

Usage: bash bench/gpu_check.sh    (python bench/gpu_check.py --budget-s 420 under `timeout 480`)
       python bench/gpu_check.py --smoke [--out report.md]
"""

import argparse
import copy
import dataclasses
import datetime
import functools
import io
import logging
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from contextlib import nullcontext
from pathlib import Path
from statistics import median
from typing import Any, Callable, ContextManager, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch
from benchlib import cpu_model, encoder_flops, mask_iou, max_abs_diff
from PIL import Image

from pipeline.config import JobConfig, parse_config
from pipeline.job.run import run_job
from pipeline.stages.contract import StageRunner
from pipeline.stages.decode import DecodeUDF
from pipeline.stages.model import ModelUDF
from samhq_core import SamHQConfig, SamHQModel, SamHQProcessor
from samhq_core.training.synthetic import make_scene

ROOT = Path(__file__).resolve().parent.parent
LOGIT_TOLERANCE = 1e-3  # fp32 CUDA vs CPU, as the README claims against the official model
BF16_MIN_MEAN_IOU = 0.98

# --------------------------------------------------------------------------- settings


@dataclasses.dataclass
class Settings:
    smoke: bool
    seed: int
    parity_config: SamHQConfig  # also the pipeline's checkpoint, and the model of the sync and decoder checks
    parity_boxes: int
    variants: Dict[str, SamHQConfig]
    batches: Tuple[int, ...]
    compiled: Tuple[Tuple[str, int], ...]  # (variant, batch) pairs compiled
    compile_backend: str
    box_counts: Tuple[int, ...]
    peak_size: int
    warmup: int
    repeats: int
    call_seconds: float  # timed seconds per measurement above which fewer calls are timed
    sync_images: int
    pipeline_images: int
    pipeline_hw: Tuple[int, int]
    pipeline_boxes: int
    pipeline_scenes: int
    pipeline_runs: Tuple[Tuple[int, float, int], ...]  # (actors, GPUs per actor, concurrent batches per actor)
    pipeline_dtype: str
    pipeline_batch_size: int
    torch_threads: Optional[int]  # None: torch's default


def smoke_config() -> SamHQConfig:
    """A 64 px ViT of two 32-wide blocks, one windowed (a 4 x 4 grid padded to 6 x 6 in 3 x 3
    windows) and one global, with the full-size decoder: every code path, in milliseconds."""
    return SamHQConfig.from_variant("vit_b", image_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=1,
                                    window_size=3, global_attn_indexes=[1])


def parse_args(argv: Optional[Sequence[str]] = None) -> Tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="every code path with a tiny model, on CPU unless CUDA is here")
    parser.add_argument("--out", type=Path, help="report path (default bench/results/gpu_<device>.md; with --smoke a "
                                                 "temporary file)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="skip measurements that would end later than this many seconds after the start "
                             "(default 420, 300 with --smoke)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before each measurement (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement at most (default 5)")
    parser.add_argument("--pipeline-images", type=int, default=256)
    parser.add_argument("--pipeline-boxes", type=int, default=50, help="boxes per image in the pipeline run")
    parser.add_argument("--pipeline-dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--pipeline-batch-size", type=int, default=8, help="compute.batch_size of the pipeline run")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor, eager with --smoke)")
    args = parser.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = 300.0 if args.smoke else 420.0
    if args.smoke:
        tiny = smoke_config()
        settings = Settings(
            smoke=True, seed=args.seed, parity_config=tiny, parity_boxes=4, variants={"smoke_64px": tiny},
            batches=(1, 2), compiled=(("smoke_64px", 2),), compile_backend=args.compile_backend or "eager",
            box_counts=(4, 80), peak_size=256, warmup=1, repeats=2, call_seconds=0.2, sync_images=2,
            pipeline_images=8, pipeline_hw=(64, 64), pipeline_boxes=3, pipeline_scenes=2, pipeline_runs=((1, 1.0, 2),),
            pipeline_dtype=args.pipeline_dtype, pipeline_batch_size=4, torch_threads=1,
        )
    else:
        settings = Settings(
            smoke=False, seed=args.seed, parity_config=SamHQConfig.from_variant("vit_b"), parity_boxes=16,
            variants={name: SamHQConfig.from_variant(name) for name in ("vit_b", "vit_l", "vit_h")},
            batches=(1, 8, 16), compiled=(("vit_b", 8), ("vit_h", 8)), compile_backend=args.compile_backend or "inductor",
            box_counts=(16, 64, 256), peak_size=8192, warmup=args.warmup, repeats=args.repeats, call_seconds=1.5,
            sync_images=4, pipeline_images=args.pipeline_images, pipeline_hw=(1080, 1920),
            pipeline_boxes=args.pipeline_boxes, pipeline_scenes=4, pipeline_runs=((1, 1.0, 1), (1, 1.0, 2), (2, 0.5, 1)),
            pipeline_dtype=args.pipeline_dtype, pipeline_batch_size=args.pipeline_batch_size, torch_threads=None,
        )
    return args, settings


# --------------------------------------------------------------------------- time, device, budget


class Clock:
    """Elapsed time for the progress lines, and the budget that measurements ask before they start."""

    def __init__(self, budget_s: float) -> None:
        self.start, self.budget_s = time.perf_counter(), budget_s
        self.skipped: List[str] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def log(self, message: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {message}", flush=True)

    def allows(self, what: str, estimate_s: float) -> bool:
        """Whether `what`, expected to take `estimate_s`, ends within the budget; if not it is recorded as skipped."""
        left = self.budget_s - self.elapsed()
        if estimate_s <= left:
            return True
        self.skipped.append(f"{what}: needs about {estimate_s:.0f} s, {max(left, 0):.0f} s of the budget left")
        self.log(f"skipped (budget): {what}")
        return False


class Device:
    def __init__(self, device: torch.device) -> None:
        self.device, self.cuda = device, device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def autocast(self, bf16: bool) -> ContextManager[Any]:
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    def reset_peak_memory(self) -> None:
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_memory_gib(self) -> Optional[float]:
        return torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None

    def time_calls(self, fn: Callable[[], object], warmup: int, repeats: int, call_seconds: float) -> List[float]:
        """Seconds of each timed call after `warmup` untimed ones: CUDA events around the call
        on a GPU (the host's launch gaps count, the queue before it does not), perf_counter on
        the CPU. At most `repeats` calls, fewer (at least 3, or `repeats`) when a warm-up call
        took more than `call_seconds` / `repeats`."""
        warm = 0.0
        for _ in range(warmup):
            start = time.perf_counter()
            fn()
            self.sync()
            warm = time.perf_counter() - start
        calls = repeats if warm <= 0 else min(repeats, max(min(3, repeats), math.ceil(call_seconds / warm)))
        times = []
        for _ in range(calls):
            if self.cuda:
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                begin.record()
                fn()
                end.record()
                end.synchronize()
                times.append(begin.elapsed_time(end) / 1e3)
            else:
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
        return times


@dataclasses.dataclass
class Timing:
    """One measurement: its timed calls' seconds, or why there are none ("skipped (budget)", "OOM", "error: ...")."""

    times: List[float] = dataclasses.field(default_factory=list)
    status: str = "not run"
    peak_gib: Optional[float] = None
    extra_s: Optional[float] = None  # compile + first call, for compiled encoders

    @property
    def ok(self) -> bool:
        return bool(self.times)

    @property
    def seconds(self) -> float:
        return median(self.times)

    def span(self, scale: float = 1e3, digits: int = 2) -> str:
        if not self.ok:
            return self.status
        return (f"{self.seconds * scale:.{digits}f} ({min(self.times) * scale:.{digits}f}–"
                f"{max(self.times) * scale:.{digits}f})")


def measure(clock: Clock, dev: Device, label: str, estimate_s: float, fn: Callable[[], object], settings: Settings,
            setup: Optional[Callable[[], Optional[float]]] = None) -> Timing:
    """Time `fn` if the budget allows; an OOM or an error becomes the measurement's status
    instead of ending the run. `setup` (e.g. compiling) runs first and may return seconds to report."""
    if not clock.allows(label, estimate_s):
        return Timing(status="skipped (budget)")
    dev.reset_peak_memory()
    try:
        extra = setup() if setup is not None else None
        timing = Timing(dev.time_calls(fn, settings.warmup, settings.repeats, settings.call_seconds), "ok",
                        extra_s=extra)
    except torch.cuda.OutOfMemoryError:
        timing = Timing(status="OOM")
    except Exception as e:  # noqa: BLE001 - one failed measurement is reported, the others still run
        timing = Timing(status=f"error: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
    timing.peak_gib = dev.peak_memory_gib()
    clock.log(f"{label}: {timing.span()} ms" if timing.ok else f"{label}: {timing.status}")
    return timing


# --------------------------------------------------------------------------- models and inputs


def random_model(config: SamHQConfig, seed: int, device: torch.device) -> SamHQModel:
    """Seeded random weights built on `device` (a vit_h is built in seconds there, not on the
    host), each parameter perturbed by 0.02 * N(0, 1)."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = SamHQModel(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.02 * torch.randn_like(param))
    return model


def random_boxes(rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
    """(count, 4) xyxy float32 boxes inside a height x width image, sides from 1/16 to 1/2 of it."""
    sides = rng.uniform(1 / 16, 1 / 2, size=(count, 2)) * [width, height]
    corners = rng.uniform(0, 1, size=(count, 2)) * ([width, height] - sides)
    return np.concatenate([corners, corners + sides], axis=1).astype(np.float32)


@functools.lru_cache(maxsize=2)
def scene_pixels(side: int, seed: int) -> torch.Tensor:
    """One synthetic scene at the model's input size `side`, as its pixel_values (1, 3, S, S);
    cached: three checks use it, and a 1024 px scene takes a second to draw."""
    scene = make_scene(np.random.default_rng(seed), side, side)
    return SamHQProcessor(side).model_input(torch.from_numpy(scene.image))[None]


def write_pipeline_input(path: str, settings: Settings) -> int:
    """`pipeline_images` rows (image_id, image: JPEG bytes, boxes) cycling through a few
    distinct scenes (decoding costs the same for each; generating 1080p scenes is slow), each
    row with boxes of its own; returns the number of boxes."""
    rng = np.random.default_rng(settings.seed)
    height, width = settings.pipeline_hw
    jpegs = []
    for _ in range(settings.pipeline_scenes):
        buffer = io.BytesIO()
        Image.fromarray(make_scene(rng, height, width).image).save(buffer, format="JPEG", quality=90)
        jpegs.append(buffer.getvalue())
    rows = [{"image_id": f"img{i:06d}", "image": jpegs[i % len(jpegs)],
             "boxes": random_boxes(rng, settings.pipeline_boxes, height, width).tolist()}
            for i in range(settings.pipeline_images)]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return settings.pipeline_images * settings.pipeline_boxes


def job_config(work: str, checkpoint: str, input_path: str, settings: Settings, actors: int, gpus: float,
               concurrent: int = 1) -> JobConfig:
    compute: Dict[str, Any] = {"num_actors": actors, "num_gpus_per_actor": gpus, "batch_size": settings.pipeline_batch_size,
                               "concurrent_batches_per_actor": concurrent}
    if settings.torch_threads:
        compute["torch_threads"] = settings.torch_threads
    return parse_config({
        "input": {"path": input_path, "id_column": "image_id", "image_column": "image", "boxes_column": "boxes"},
        "output": {"path": os.path.join(work, f"output-{actors}x{gpus:g}x{concurrent}"), "mode": "overwrite"},
        "model": {"checkpoint": checkpoint, "dtype": settings.pipeline_dtype},
        "compute": compute,
    })


# --------------------------------------------------------------------------- 1. parity


def check_parity(settings: Settings, dev: Device, clock: Clock) -> Tuple[Dict[str, Any], SamHQModel, SamHQModel]:
    """CUDA fp32 vs CPU fp32 and CUDA bf16 vs CUDA fp32 on the same weights; returns the results,
    the CPU model and its copy on the device."""
    config = settings.parity_config
    reference = random_model(config, settings.seed, torch.device("cpu"))
    model = copy.deepcopy(reference).to(dev.device)
    side = config.vision_config.image_size
    pixels = scene_pixels(side, settings.seed)
    boxes = torch.from_numpy(random_boxes(np.random.default_rng(settings.seed), settings.parity_boxes, side, side))[None]
    with torch.inference_mode():
        cpu_out = reference(pixel_values=pixels, input_boxes=boxes, multimask_output=False)
        pixels_d, boxes_d = pixels.to(dev.device), boxes.to(dev.device)
        out = model(pixel_values=pixels_d, input_boxes=boxes_d, multimask_output=False)
        with dev.autocast(True):
            bf16 = model(pixel_values=pixels_d, input_boxes=boxes_d, multimask_output=False)
    cpu_embeddings, embeddings = cpu_out.image_embeddings, out.image_embeddings
    masks32, masks16 = out.pred_masks[0, :, 0] > 0, bf16.pred_masks[0, :, 0] > 0
    ious = mask_iou(masks32, masks16)
    result = {
        "model": f"{describe(config)}, {settings.parity_boxes} boxes, one synthetic scene",
        "embeddings": max_abs_diff(embeddings.cpu(), cpu_embeddings),
        "embedding_scale": cpu_embeddings.abs().max().item(),
        "logits": max_abs_diff(out.pred_masks.cpu(), cpu_out.pred_masks),
        "logit_scale": cpu_out.pred_masks.abs().max().item(),
        "iou_scores": max_abs_diff(out.iou_scores.cpu(), cpu_out.iou_scores),
        "bf16_mean_iou": ious.mean().item(),
        "bf16_min_iou": ious.min().item(),
        "foreground": masks32.float().mean().item(),
        "bf16_iou_scores": max_abs_diff(bf16.iou_scores, out.iou_scores),
    }
    result["fp32_passed"] = result["logits"] <= LOGIT_TOLERANCE and result["iou_scores"] <= LOGIT_TOLERANCE
    result["bf16_passed"] = result["bf16_mean_iou"] >= BF16_MIN_MEAN_IOU
    clock.log(f"parity: logits {result['logits']:.2e}, IoU scores {result['iou_scores']:.2e}, "
              f"bf16 mean mask IoU {result['bf16_mean_iou']:.4f}")
    return result, reference, model


# --------------------------------------------------------------------------- 2. host syncs


def sync_location(frames: Sequence[traceback.FrameSummary]) -> str:
    """The innermost frame in this repository: where a sync was asked for."""
    ours = [f for f in frames if f.filename.startswith(str(ROOT)) and not f.filename.endswith("gpu_check.py")]
    frame = (ours or list(frames))[-1]
    return f"{os.path.relpath(frame.filename, ROOT)}:{frame.lineno} ({frame.name})"


def count_syncs(dev: Device, fn: Callable[[], object]) -> Optional[Dict[str, int]]:
    """Run `fn` under sync debug mode "warn"; the synchronizing calls it made, per source line
    (None on the CPU, where the mode does not exist; `fn` runs anyway)."""
    if not dev.cuda:
        fn()
        return None
    dev.sync()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every sync, not once per line
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    counts: Dict[str, int] = {}
    for warning in caught:
        if "synchroniz" in str(warning.message):
            where = f"{os.path.relpath(warning.filename, ROOT)}:{warning.lineno}"
            counts[where] = counts.get(where, 0) + 1
    return counts


def check_syncs(settings: Settings, dev: Device, clock: Clock, model: SamHQModel, config: JobConfig,
                input_path: str) -> Dict[str, Any]:
    """The sync-free model calls under "error", then the model stage's `process` under "warn"."""
    side = settings.parity_config.vision_config.image_size
    pixels = scene_pixels(side, settings.seed).to(dev.device)
    boxes = torch.from_numpy(random_boxes(np.random.default_rng(1), settings.pipeline_boxes, side, side))[None]
    boxes = boxes.to(dev.device)

    def sync_free(bf16: bool) -> None:
        with torch.inference_mode(), dev.autocast(bf16):
            embeddings, intermediate = model.get_image_embeddings(pixels)
            model.decode_prompts(embeddings, intermediate, input_boxes=boxes, multimask_output=False)

    result: Dict[str, Any] = {"cuda": dev.cuda, "boxes": settings.pipeline_boxes, "free": {}}
    for label, bf16 in (("fp32", False), ("bf16 autocast", True)):
        sync_free(bf16)  # warm-up outside the mode: first calls set up kernels and handles
        dev.sync()
        if not dev.cuda:
            sync_free(bf16)
            result["free"][label] = "not checked (sync debug mode needs CUDA)"
            continue
        torch.cuda.set_sync_debug_mode("error")
        try:
            sync_free(bf16)
            result["free"][label] = "no sync"
        except RuntimeError as e:
            if "synchroniz" not in str(e):
                raise
            result["free"][label] = f"SYNC at {sync_location(traceback.extract_tb(e.__traceback__))}"
        finally:
            torch.cuda.set_sync_debug_mode("default")
        dev.sync()
    result["free_passed"] = not any(v.startswith("SYNC") for v in result["free"].values())
    clock.log(f"sync-free calls: {result['free']}")

    # The model stage as the pipeline runs it, on rows its decode stage decoded.
    rows = pq.read_table(input_path).slice(0, settings.sync_images)
    decoded = StageRunner(DecodeUDF.stage(config.input, config.storage, side, rows.num_rows, keep_image=False))(rows)
    udf = ModelUDF(config.model, config.storage, side, torch_threads=settings.torch_threads)
    udf.process(decoded)  # warm-up
    result["images"] = decoded.num_rows
    result["dtype"] = config.model.dtype
    result["per_image"] = [count_syncs(dev, lambda i=i: udf.process(decoded.slice(i, 1))) for i in range(decoded.num_rows)]
    result["batch"] = count_syncs(dev, lambda: udf.process(decoded))
    if result["batch"] is not None:
        clock.log(f"ModelUDF.process syncs: {sum(result['batch'].values())} for a batch of {decoded.num_rows} images")
    return result


# --------------------------------------------------------------------------- 3. throughput


def matmul_peaks(settings: Settings, dev: Device, clock: Clock) -> Dict[str, float]:
    """FLOP/s of the best of a few size^3 matmuls, fp32 (TF32 off) and bf16."""
    peaks = {}
    n = settings.peak_size
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = (torch.randn(n, n, device=dev.device, dtype=dtype) for _ in range(2))
        times = dev.time_calls(lambda a=a, b=b: torch.mm(a, b), warmup=2, repeats=10, call_seconds=1.0)
        peaks[name] = 2 * n**3 / min(times)
        clock.log(f"matmul peak {name} {n}^3: {peaks[name] / 1e12:.3g} TFLOP/s")
        del a, b
    return peaks


@dataclasses.dataclass
class EncoderRow:
    variant: str
    mode: str  # fp32, bf16, compiled
    batch: int
    flops: float  # per image
    timing: Timing


def encoder_estimate(flops: float, batch: int, peak: float, settings: Settings) -> float:
    """Seconds a measurement should take at 40% of the peak (at least 3 s: building, allocation)."""
    calls = settings.warmup + min(settings.repeats, 3)
    return max(3.0, calls * batch * flops / (0.4 * peak))


def bench_encoders(settings: Settings, dev: Device, clock: Clock, peaks: Dict[str, float]) -> List[EncoderRow]:
    rows = []
    for name, config in settings.variants.items():
        flops = encoder_flops(config.vision_config)
        model, refused = None, False
        for mode in ("fp32", "bf16"):
            for batch in settings.batches:
                estimate = encoder_estimate(flops, batch, peaks[mode], settings)
                if model is None and not refused:
                    refused = not clock.allows(f"encoder {name} (all of its measurements)", estimate)
                    model = None if refused else random_model(config, settings.seed, dev.device)
                pixels = torch.randn(batch, 3, config.vision_config.image_size, config.vision_config.image_size,
                                     device=dev.device)

                def call(model=model, pixels=pixels, bf16=mode == "bf16"):
                    with torch.inference_mode(), dev.autocast(bf16):
                        return model.get_image_embeddings(pixels)

                timing = (measure(clock, dev, f"encoder {name} {mode} batch {batch}", estimate, call, settings)
                          if model is not None else Timing(status="skipped (budget)"))
                rows.append(EncoderRow(name, mode, batch, flops, timing))
                del pixels
        del model
        dev.reset_peak_memory()
    return rows


def bench_compiled(settings: Settings, dev: Device, clock: Clock) -> List[EncoderRow]:
    """torch.compile(model.get_image_embeddings) under bf16 autocast, for the configured (variant, batch) pairs."""
    rows = []
    for name, batch in settings.compiled:
        config = settings.variants[name]
        flops = encoder_flops(config.vision_config)
        # Inductor's compile time grows with the unrolled blocks; a guess, only to skip in time.
        estimate = 10.0 if settings.compile_backend == "eager" else 40.0 + 5.0 * config.vision_config.num_hidden_layers
        if not clock.allows(f"encoder {name} compiled batch {batch}", estimate):
            rows.append(EncoderRow(name, "compiled", batch, flops, Timing(status="skipped (budget)")))
            continue
        model = random_model(config, settings.seed, dev.device)
        side = config.vision_config.image_size
        pixels = torch.randn(batch, 3, side, side, device=dev.device)
        torch._dynamo.reset()  # each model compiles afresh, and the cache limit is not reached
        compiled = torch.compile(model.get_image_embeddings, backend=settings.compile_backend)

        def call(compiled=compiled, pixels=pixels):
            with torch.inference_mode(), dev.autocast(True):
                return compiled(pixels)

        def compile_now(call=call) -> float:
            start = time.perf_counter()
            call()
            dev.sync()
            return time.perf_counter() - start

        timing = measure(clock, dev, f"encoder {name} compiled batch {batch}", 0.0, call, settings, setup=compile_now)
        rows.append(EncoderRow(name, "compiled", batch, flops, timing))
        del model, pixels, compiled
        torch._dynamo.reset()
        dev.reset_peak_memory()
    return rows


@dataclasses.dataclass
class DecoderRow:
    boxes: int
    chunk: str
    fp32: Timing
    bf16: Timing


def bench_decoder(settings: Settings, dev: Device, clock: Clock, model: SamHQModel) -> List[DecoderRow]:
    """decode_prompts on one image's embeddings (computed once per dtype, untimed), per box count and chunking."""
    side = settings.parity_config.vision_config.image_size
    pixels = scene_pixels(side, settings.seed).to(dev.device)
    with torch.inference_mode():
        features = {}
        for bf16 in (False, True):
            with dev.autocast(bf16):
                features[bf16] = model.get_image_embeddings(pixels)
    rows = []
    for count in settings.box_counts:
        boxes = torch.from_numpy(random_boxes(np.random.default_rng(count), count, side, side))[None].to(dev.device)
        for chunk_label, chunk in (("64 (default)", 64), ("all", count)):
            timings = {}
            for bf16 in (False, True):
                def call(bf16=bf16, boxes=boxes, chunk=chunk):
                    with torch.inference_mode(), dev.autocast(bf16):
                        return model.decode_prompts(*features[bf16], input_boxes=boxes, multimask_output=False,
                                                    prompt_chunk_size=chunk)

                label = f"decoder {count} boxes, chunks of {chunk_label}, {'bf16' if bf16 else 'fp32'}"
                timings[bf16] = measure(clock, dev, label, 3.0, call, settings)
            rows.append(DecoderRow(count, chunk_label, timings[False], timings[True]))
    return rows


# --------------------------------------------------------------------------- 4. the pipeline


@dataclasses.dataclass
class PipelineRow:
    actors: int
    gpus: float
    concurrent: int  # compute.concurrent_batches_per_actor
    status: str = "not run"
    seconds: float = 0.0
    rows_out: int = 0
    masks: int = 0
    summary: str = ""
    stats: List[str] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.actors} actor(s) x {self.gpus:g} GPU each, {self.concurrent} batch(es) at once"


def planned_pipeline_rows(settings: Settings, cuda: bool) -> List[PipelineRow]:
    """The pipeline runs, not run yet. Without a GPU the same runs go with CPU actors, so that
    the smoke run takes this code path."""
    return [PipelineRow(actors, gpus if cuda else 0.0, concurrent) for actors, gpus, concurrent in settings.pipeline_runs]


def bench_pipeline(settings: Settings, dev: Device, clock: Clock, work: str, checkpoint: str,
                   input_path: str) -> List[PipelineRow]:
    rows = planned_pipeline_rows(settings, dev.cuda)
    try:
        for row in rows:
            label = f"pipeline {row.label}"
            if not clock.allows(label, 25.0 if settings.smoke else 60.0):
                row.status = "skipped (budget)"
                continue
            if not ray.is_initialized():
                # A local cluster of its own: never one that happens to run on this machine (RAY_ADDRESS is ignored).
                ray.init(address="local", num_cpus=os.cpu_count(), num_gpus=1 if dev.cuda else 0,
                         include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
                # Ray's core worker installs a SIGTERM handler that ends the process at once: take it back, so
                # that the wrapper's `timeout` still gets a report and a shut-down cluster.
                signal.signal(signal.SIGTERM, _interrupt)
            config = job_config(work, checkpoint, input_path, settings, row.actors, row.gpus, row.concurrent)
            clock.log(f"{label}: start")
            try:
                summary = run_job(config, log=lambda line: clock.log(f"  job: {line}"), progress_interval=15.0)
            except Exception as e:  # noqa: BLE001 - reported; the other runs still go
                row.status = f"error: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                clock.log(f"{label}: {row.status}")
                continue
            row.seconds, row.rows_out, row.masks = summary.seconds, summary.rows_out, summary.masks
            row.summary = summary.render().replace("\n", " ")
            row.stats = [line.strip() for line in summary.stats.splitlines()
                         if re.match(r"\s*(Operator \d+ |\* .*throughput: )", line)]
            closing_ok = summary.closing is not None and summary.closing.passed
            row.status = "ok" if closing_ok and not summary.errors else f"failed: errors {summary.errors}"
            clock.log(f"{label}: {row.rows_out / row.seconds:.2f} images/s ({row.status})")
    finally:
        if ray.is_initialized():
            ray.shutdown()
    return rows


# --------------------------------------------------------------------------- 5. the report


def describe(config: SamHQConfig) -> str:
    v = config.vision_config
    return f"ViT {v.hidden_size} x {v.num_hidden_layers} blocks at {v.image_size} px"


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
    with open("/proc/meminfo") as f:
        memory = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1)) / 2**20
    lines += [f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores, {memory:.0f} GiB; torch threads "
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
             f"Command: `python bench/gpu_check.py {' '.join(sys.argv[1:])}`; what is measured and how: the docstring "
             f"of `bench/gpu_check.py`. Total {clock.elapsed():.0f} s of a {args.budget_s:.0f} s budget.", "",
             "## Machine", "", *machine(dev, r["load_before"]), ""]
    lines += render_checks(r)
    lines += render_throughput(settings, r)
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
              "`get_image_embeddings` on random pixels; MFU = analytic FLOPs (`benchlib.encoder_flops`) / time / the "
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
    lines += ["", "## Pipeline", "",
              f"`pipeline.job.run_job` on a local Ray cluster ({os.cpu_count()} CPUs, "
              f"{1 if r.get('cuda') else 0} GPU): {settings.pipeline_images} JPEG rows of {width} x {height} "
              f"({settings.pipeline_scenes} distinct scenes), {settings.pipeline_boxes} boxes each, "
              f"{describe(settings.parity_config)} random weights, model.dtype {settings.pipeline_dtype}, "
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


# --------------------------------------------------------------------------- main


def run_checks(settings: Settings, dev: Device, clock: Clock, r: Dict[str, Any], work: str) -> None:
    """Every section in order of importance, filling `r` as they finish (a partial `r` still renders)."""
    parity, reference, model = check_parity(settings, dev, clock)
    r["parity"] = parity
    if not (parity["fp32_passed"] and parity["bf16_passed"]):
        r["failures"].append("parity check failed (see Parity)")

    checkpoint, input_path = os.path.join(work, "checkpoint"), os.path.join(work, "input", "images.parquet")
    reference.save_pretrained(checkpoint)  # the parity model's weights: the pipeline loads what was checked
    del reference
    os.makedirs(os.path.dirname(input_path))
    write_pipeline_input(input_path, settings)
    clock.log(f"wrote {settings.pipeline_images} input rows and the checkpoint")
    first_actors, first_gpus, _ = settings.pipeline_runs[0]
    first_gpus = first_gpus if dev.cuda else 0.0
    r["syncs"] = check_syncs(settings, dev, clock, model,
                             job_config(work, checkpoint, input_path, settings, first_actors, first_gpus), input_path)
    if not r["syncs"]["free_passed"]:
        r["failures"].append("the sync-free model calls synced (see Host syncs)")

    r["peaks"] = matmul_peaks(settings, dev, clock)
    r["encoders"] = bench_encoders(settings, dev, clock, r["peaks"])
    r["decoder"] = bench_decoder(settings, dev, clock, model)
    del model
    dev.reset_peak_memory()  # the pipeline's actors get the GPU's memory
    r["pipeline"] = bench_pipeline(settings, dev, clock, work, checkpoint, input_path)
    r["encoders"] += bench_compiled(settings, dev, clock)
    failed = [f"{row.variant} {row.mode} batch {row.batch}: {row.timing.status}" for row in r["encoders"]
              if row.timing.status.startswith("error")]
    failed += [f"decoder {d.boxes} boxes {d.chunk}: {t.status}" for d in r["decoder"] for t in (d.fp32, d.bf16)
               if t.status.startswith("error")]
    failed += [f"pipeline {p.label}: {p.status}" for p in r["pipeline"]
               if p.status.startswith(("error", "failed"))]
    r["failures"] += failed


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, settings = parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not settings.smoke:
        print("error: no CUDA device; this check needs one (--smoke runs its code paths on the CPU)", file=sys.stderr)
        return 2
    # The wrapper's `timeout` sends SIGTERM: end Ray and write what was measured.
    signal.signal(signal.SIGTERM, _interrupt)
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
