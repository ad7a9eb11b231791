"""3b. Everything mode: `SamHQAutomaticMaskGenerator.generate` (samhq_core.automatic) on one
synthetic scene of the pipeline run's size, with the parity model (random weights)."""

import dataclasses
from typing import Any, Dict, List, Tuple

import numpy as np
import torch

from bench.gpu_check.clock import Clock, Device, Timing, measure
from bench.gpu_check.settings import Settings
from samhq_core import SamHQAutomaticMaskGenerator, SamHQModel
from samhq_core.training.synthetic import make_scene

# (label, thresholds, points_per_batch, bf16): the official defaults, where random weights let few
# masks through, and the filters off, where every point's mask is upsampled, coded and suppressed.
ROWS: List[Tuple[str, Dict[str, Any], int, bool]] = [
    ("official defaults", {}, 64, False),
    ("official defaults", {}, 256, False),
    ("official defaults", {}, 256, True),
    ("off", {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}, 256, False),
]


@dataclasses.dataclass
class EverythingRow:
    thresholds: str
    points_per_batch: int
    bf16: bool
    masks: int
    timing: Timing


def points_per_side(settings: Settings) -> int:
    return 4 if settings.smoke else 32


def bench_everything(settings: Settings, dev: Device, clock: Clock, model: SamHQModel) -> List[EverythingRow]:
    """images/s of everything mode, output_mode "uncompressed_rle" (run lengths, as a pipeline keeps them)."""
    height, width = settings.pipeline_hw
    image = make_scene(np.random.default_rng(settings.seed), height, width).image
    rows = []
    for label, thresholds, points_per_batch, bf16 in ROWS:
        generator = SamHQAutomaticMaskGenerator(model, points_per_side=points_per_side(settings),
                                                points_per_batch=points_per_batch, output_mode="uncompressed_rle",
                                                **thresholds)
        counts: List[int] = []

        def call(generator: SamHQAutomaticMaskGenerator = generator, bf16: bool = bf16,
                 counts: List[int] = counts) -> List[Dict[str, Any]]:
            with torch.inference_mode(), dev.autocast(bf16):
                records = generator.generate(image)
            counts.append(len(records))
            return records

        timing = measure(clock, dev, f"everything mode, thresholds {label}, {points_per_batch} points at once, "
                         f"{'bf16' if bf16 else 'fp32'}", 10.0, call, settings)
        rows.append(EverythingRow(label, points_per_batch, bf16, counts[-1] if counts else 0, timing))
    return rows
