"""3. Throughput: the matmul peaks, the encoder (eager and compiled) and the decoder."""

import dataclasses
import time
from typing import Dict, List

import numpy as np
import torch

from bench.common.flops import encoder_flops
from bench.common.peaks import matmul_peak
from bench.gpu_check.clock import Clock, Device, Timing, measure
from bench.gpu_check.inputs import random_boxes, scene_pixels
from bench.gpu_check.settings import Settings
from samhq_core import SamHQModel
from samhq_core.random_weights import random_model


def matmul_peaks(settings: Settings, dev: Device, clock: Clock) -> Dict[str, float]:
    """FLOP/s of the best of a few size^3 matmuls, fp32 (TF32 off) and bf16."""
    peaks = {}
    n = settings.peak_size
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        peaks[name] = matmul_peak(n, dtype, dev.device,
                                  lambda fn: dev.time_calls(fn, warmup=2, repeats=10, call_seconds=1.0))
        clock.log(f"matmul peak {name} {n}^3: {peaks[name] / 1e12:.3g} TFLOP/s")
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
                    model = None if refused else random_model(config, settings.seed, device=str(dev.device))
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
        model = random_model(config, settings.seed, device=str(dev.device))
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
