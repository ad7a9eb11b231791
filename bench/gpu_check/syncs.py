"""2. Host syncs: none in the sync-free model calls; counted in the pipeline's model stage."""

import functools
import os
import traceback
import warnings
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import pyarrow.parquet as pq
import torch

from bench.gpu_check.clock import Clock, Device
from bench.gpu_check.inputs import random_boxes, scene_pixels
from bench.gpu_check.settings import ROOT, Settings
from pipeline.config import JobConfig
from pipeline.stages.contract import StageRunner
from pipeline.stages.decode import DecodeUDF
from pipeline.stages.model import ModelUDF
from samhq_core import SamHQModel


def sync_location(frames: Sequence[traceback.FrameSummary]) -> str:
    """The innermost frame in this repository: where a sync was asked for."""
    ours = [f for f in frames if f.filename.startswith(str(ROOT)) and "/bench/gpu_check/" not in f.filename]
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
    result["per_image"] = [count_syncs(dev, functools.partial(udf.process, decoded.slice(i, 1)))
                           for i in range(decoded.num_rows)]
    result["batch"] = count_syncs(dev, lambda: udf.process(decoded))
    if result["batch"] is not None:
        clock.log(f"ModelUDF.process syncs: {sum(result['batch'].values())} for a batch of {decoded.num_rows} images")
    return result
