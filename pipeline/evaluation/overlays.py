"""Overlay PNGs of the worst boxes: the image with the ground truth only in green, the
prediction only in red and their overlap in yellow, alpha-blended."""

import logging
import os
import re
from typing import Any, Dict, List, Tuple

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from ..ids import id_key
from ..masks.drawing import MASK_ALPHA, blend, open_rgb, png_bytes
from ..storage import Location, ParquetInput
from .report import WorstBox

log = logging.getLogger("pipeline.evaluation")

GT_ONLY_COLOR, PRED_ONLY_COLOR, OVERLAP_COLOR = (0, 200, 0), (230, 0, 0), (255, 215, 0)


def write_overlays(worst: List[Tuple[WorstBox, Dict[str, Any], Dict[str, Any]]], images: Location, id_column: str,
                   image_column: str, overlays_dir: Location, batch_rows: int) -> None:
    """One PNG per worst box whose row is in `images`; sets `WorstBox.overlay` (the objects of the result)."""
    wanted: Dict[bytes, List[int]] = {}
    for rank, (w, _, _) in enumerate(worst):
        wanted.setdefault(id_key(w.id), []).append(rank)
    source = ParquetInput(images, "images")
    if overlays_dir.is_local:
        os.makedirs(overlays_dir.path, exist_ok=True)
    for row_id, data, _ in source.rows(id_column, [image_column], None, max(1, min(batch_rows, 16))):
        ranks = wanted.pop(id_key(row_id), None) if row_id is not None else None
        if ranks is None or data is None:
            continue
        if isinstance(data, str):  # a URI
            with Location(data, images.storage).open("rb") as f:
                data = f.read()
        pixels = np.asarray(open_rgb(data))
        for rank in ranks:
            w, gt, pred = worst[rank]
            gt_mask, pred_mask = mask_utils.decode(gt).astype(bool), mask_utils.decode(pred).astype(bool)
            if gt_mask.shape != pixels.shape[:2]:
                log.warning("overlay of %r box %d skipped: image is %s, masks %s", w.id, w.box_index,
                            list(pixels.shape[:2]), list(gt_mask.shape))
                continue
            name = f"worst_{rank + 1:03d}_{_safe_name(w.id)}_box{w.box_index}.png"
            data = png_bytes(Image.fromarray(overlay(pixels, gt_mask, pred_mask)))
            target = overlays_dir.join(name)
            with target.open_for_write() as f:
                f.write(data)
            w.overlay = target.url
        if not wanted:
            break


def overlay(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, alpha: float = MASK_ALPHA) -> np.ndarray:
    """RGB uint8 image with the ground truth only in green, the prediction only in red, both in yellow."""
    return blend(image, [(gt & ~pred, GT_ONLY_COLOR), (pred & ~gt, PRED_ONLY_COLOR), (gt & pred, OVERLAP_COLOR)], alpha)


def _safe_name(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(value))[:60] or "id"
