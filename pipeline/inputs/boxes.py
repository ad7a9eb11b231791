"""A row's box list as the job reads it: parsed (numbers only), converted from the input's
box_format to xyxy, and clipped and checked against the image; and the lists that hold an
entry per prompt besides the prompt columns (the categories), which must be as long."""

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..config import JobConfig


def parse_boxes(value: Any) -> np.ndarray:
    """A row's boxes (null, or a list of 4-number lists) → float64 (N, 4). Values must be
    numbers (null reads as NaN): numpy would take "10" for 10."""
    if value is None:
        return np.zeros((0, 4))
    try:
        rows = [[np.nan if v is None else _number(v) for v in box] for box in value]
        boxes = np.array(rows, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"boxes must be a list of [4 numbers]: {e}") from None
    if boxes.size == 0:
        return np.zeros((0, 4))
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be a list of [4 numbers], got shape {boxes.shape}")
    return boxes


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{value!r} ({type(value).__name__}) is not a number")
    return float(value)


def boxes_to_xyxy(boxes: np.ndarray, box_format: str) -> np.ndarray:
    """(N, 4) boxes in xyxy, xywh or cxcywh → xyxy."""
    if box_format == "xywh":
        return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
    if box_format == "cxcywh":
        return np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], axis=1)
    return boxes


def check_boxes(boxes: np.ndarray, height: int, width: int) -> Tuple[np.ndarray, List[Optional[str]]]:
    """Clip xyxy boxes to the image; return them with a reason per box that cannot be used."""
    clipped = boxes.copy()
    clipped[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    clipped[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    reasons: List[Optional[str]] = []
    for box, clip in zip(boxes, clipped, strict=True):
        if not np.isfinite(box).all():
            reasons.append("non-finite coordinates")
        elif box[2] < box[0] or box[3] < box[1]:
            reasons.append("inverted box (x2 < x1 or y2 < y1)")
        elif clip[2] <= clip[0] or clip[3] <= clip[1]:
            reasons.append("empty after clipping to the image")
        else:
            reasons.append(None)
    return clipped, reasons


def per_box_columns(config: JobConfig) -> Dict[str, str]:
    """The input columns besides the prompt columns meant to hold one entry per prompt, by the
    config key naming each."""
    column = config.input.category_column
    return {"input.category_column": column} if column else {}


def per_box_mismatch(key: str, column: str, entries: int, prompts: int, noun: str = "box") -> str:
    """What is wrong with a row whose per-prompt column `column` has `entries` for `prompts`
    prompts (`noun`: what a prompt is called, "box" where boxes are the only prompts)."""
    nouns = "boxes" if noun == "box" else f"{noun}s"
    return f"{key} {column!r} has {entries} entries for {prompts} {nouns}: give one per {noun} (null for none)"
