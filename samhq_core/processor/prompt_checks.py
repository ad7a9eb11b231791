"""Checks of prompts as users give them (nested lists, numpy arrays or tensors, per image
first): each names what is wrong, where, and the form expected."""

from typing import Any, List, Tuple

import numpy as np
import torch

BOXES_NESTING = "per image, a list of [x1, y1, x2, y2] boxes, 3 levels: [[[x1, y1, x2, y2], ...], ...]"
POINTS_NESTING = ("per image, per prompt, a list of [x, y] points, 4 levels: [[[[x, y], ...], ...], ...] (or 3 "
                  "levels, one prompt per image: [[[x, y], ...], ...])")


def as_list(value: Any) -> Any:
    """Nested lists of a numpy array or tensor (detached), else the value."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def per_image(name: str, values: Any, batch: int) -> List[Any]:
    values = as_list(values)
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{name} must be nested lists (or an array), per image first; got {type(values).__name__}")
    values = [as_list(v) for v in values]
    if len(values) != batch:
        raise ValueError(f"{name} has entries for {len(values)} images, but {batch} images were given")
    return values


def sequence(name: str, where: str, value: Any) -> List[Any]:
    value = as_list(value)
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name}: {where} is {short(value)}, where a list is expected")
    return list(value)


def numbers(name: str, where: str, value: Any, length: int, form: str) -> List[float]:
    """`value` as exactly `length` finite real numbers, else a ValueError saying what it is."""
    value = as_list(value)
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name}: {where} is {short(value)}; expected {form} (one level of nesting short?)")
    if any(isinstance(v, (list, tuple)) for v in value):
        raise ValueError(f"{name}: {where} is {short(value)}; expected {form} (one level of nesting too many?)")
    if len(value) != length:
        raise ValueError(f"{name}: {where} has {len(value)} values ({short(value)}); expected {form}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name}: {where} holds {v!r} ({type(v).__name__}); coordinates must be numbers")
        if not np.isfinite(v):
            raise ValueError(f"{name}: {where} contains NaN or infinite values")
    return [float(v) for v in value]


def check_inside(name: str, what: str, x1: float, y1: float, x2: float, y2: float, size: Tuple[int, int],
                  overlap: bool = False) -> None:
    """A point must lie within the image; a box must overlap it (it may reach past the border,
    as detector boxes do)."""
    h, w = size
    outside = (x1 >= w or y1 >= h or x2 <= 0 or y2 <= 0) if overlap else not (0 <= x1 <= w and 0 <= y1 <= h)
    if outside:
        where = "lies entirely outside" if overlap else "lies outside"
        raise ValueError(f"{name}: {what} {where} the {w} x {h} image (width x height); coordinates are pixels of the "
                         "original image, x first")


def short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def nesting_depth(value: Any) -> int:
    """Depth of a nested list, following first elements: [[x, y]] → 2."""
    depth = 0
    while isinstance(value, (list, tuple)) and len(value):
        value, depth = value[0], depth + 1
    return depth


def same_count(name: str, counts: List[int]) -> int:
    if len(set(counts)) > 1:
        raise ValueError(f"{name}: every image needs the same number of prompts, got {counts}; process them separately")
    if counts[0] == 0:
        raise ValueError(f"{name} is empty: give at least one prompt per image or leave it out")
    return counts[0]
