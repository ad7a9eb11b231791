"""Per-box mask metrics: IoU and Boundary IoU (Cheng et al. 2021, as the SAM-HQ evaluation
computes it), and order-independent means."""

import math
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

DILATION_RATIO = 0.02


def dilation_pixels(height: int, width: int, ratio: float = DILATION_RATIO) -> int:
    """The boundary width d of an image: ``max(1, round(ratio * diagonal))`` (Python's round, as the reference)."""
    return max(1, int(round(ratio * math.sqrt(height * height + width * width))))


def erode(mask: np.ndarray, d: int) -> np.ndarray:
    """Erosion by a (2d+1)x(2d+1) square (= d times by a 3x3 square), pixels outside the array background.

    Exact, in integers: a pixel survives when the (2d+1)² window around it, zero-padded, sums to (2d+1)²,
    read from a summed-area table. This is ``1 - max_pool2d(pad(1 - M, d, value=1), 2d+1, stride 1)``
    (and OpenCV's iterated 3x3 erosion of the reference code) at a cost independent of d.
    """
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}")
    mask = np.asarray(mask, dtype=bool)
    k = 2 * d + 1
    dtype = np.int32 if mask.size < 2**31 - 1 else np.int64
    table = np.pad(mask.astype(dtype), ((d + 1, d), (d + 1, d))).cumsum(axis=0, dtype=dtype).cumsum(axis=1, dtype=dtype)
    window = table[k:, k:] - table[:-k, k:] - table[k:, :-k] + table[:-k, :-k]
    return window == k * k


def boundary(mask: np.ndarray, d: Optional[int] = None) -> np.ndarray:
    """Boundary IoU's inner boundary band: ``mask - erode(mask, d)`` (d: `dilation_pixels` of the mask's shape)."""
    mask = np.asarray(mask, dtype=bool)
    if d is None:
        d = dilation_pixels(*mask.shape)
    return mask & ~erode(mask, d)


def mask_iou(gt: np.ndarray, pred: np.ndarray) -> float:
    """IoU of two binary masks of one image (1.0 when both are empty), on the crop of their
    union's bounding box."""
    gt, pred = _same_shape(gt, pred)
    crop = _union_crop(gt, pred)
    return 1.0 if crop is None else _iou(gt[crop], pred[crop])


def mask_scores(gt: np.ndarray, pred: np.ndarray, d: Optional[int] = None) -> Tuple[float, float]:
    """(IoU, boundary IoU) of two binary masks of one image; d defaults to `dilation_pixels` of their shape.

    Both are 1.0 when both masks are empty. Computed on the crop of the union's bounding box, which
    gives the same result as the full image (outside it both masks are background, as outside the image).
    """
    gt, pred = _same_shape(gt, pred)
    if d is None:
        d = dilation_pixels(*gt.shape)
    crop = _union_crop(gt, pred)
    if crop is None:
        return 1.0, 1.0
    gt, pred = gt[crop], pred[crop]
    bg, bp = boundary(gt, d), boundary(pred, d)
    b_union = int(np.count_nonzero(bg | bp))
    biou = int(np.count_nonzero(bg & bp)) / b_union if b_union else 1.0
    return _iou(gt, pred), biou


def _same_shape(gt: np.ndarray, pred: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"masks must be 2-D of one shape, got {gt.shape} and {pred.shape}")
    return gt, pred


def _union_crop(gt: np.ndarray, pred: np.ndarray) -> Optional[Tuple[slice, slice]]:
    """The slices of the union's bounding box; None when both masks are empty."""
    union = gt | pred
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    if rows.size == 0:
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _iou(gt: np.ndarray, pred: np.ndarray) -> float:
    """IoU of two masks whose union is not empty."""
    return int(np.count_nonzero(gt & pred)) / int(np.count_nonzero(gt | pred))


class ExactSum:
    """Correctly rounded float sum (Shewchuk's partials, as `math.fsum`): independent of the order of adds."""

    def __init__(self) -> None:
        self.partials: List[float] = []

    def add(self, x: float) -> None:
        i = 0
        for y in self.partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                self.partials[i] = lo
                i += 1
            x = hi
        self.partials[i:] = [x]

    def mean(self, count: int) -> float:
        return math.fsum(self.partials) / count if count else float("nan")


@dataclass
class Accumulator:
    count: int = 0
    iou: ExactSum = field(default_factory=ExactSum)
    biou: ExactSum = field(default_factory=ExactSum)

    def add(self, iou: float, biou: float) -> None:
        self.count += 1
        self.iou.add(iou)
        self.biou.add(biou)
