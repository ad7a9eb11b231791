"""COCO run-length encoding, the pipeline's mask format: run lengths computed on the model's
device, their compression into COCO RLE strings, and encoding and decoding of whole masks
(through pycocotools, whose layout the format is: column-major pixels, the first run counts
zeros).

A stored mask is `{"size": [h, w], "counts": str}` (`pipeline.schema.RLE_TYPE`).
"""

from typing import Any, Dict, List, Tuple, Union

import numpy as np
import torch
from pycocotools import mask as mask_utils

Rle = Dict[str, Any]
RunLengths = Union[np.ndarray, List[int]]  # uncompressed counts of one mask


def run_lengths(masks: torch.Tensor) -> Tuple[List[np.ndarray], np.ndarray, np.ndarray]:
    """(n, H, W) bool, on any device → per mask its COCO run lengths (uncompressed counts),
    areas (n,) int64 and tight boxes (n, 4) float32 as COCO xywh ([0, 0, 0, 0] when empty).
    Only the run boundaries, areas and boxes leave the device."""
    n, h, w = masks.shape
    if n == 0:
        return [], np.zeros(0, np.int64), np.zeros((0, 4), np.float32)
    flat = masks.transpose(1, 2).reshape(n, h * w)  # column-major pixel order, as COCO RLE
    mask_ids, positions = (flat[:, 1:] != flat[:, :-1]).nonzero(as_tuple=True)
    starts_with_one = flat[:, 0].cpu().numpy()
    rows_any, cols_any = masks.any(dim=2), masks.any(dim=1)  # n x H, n x W
    y0 = rows_any.float().argmax(dim=1)
    y1 = h - 1 - rows_any.flip(1).float().argmax(dim=1)
    x0 = cols_any.float().argmax(dim=1)
    x1 = w - 1 - cols_any.flip(1).float().argmax(dim=1)
    boxes = torch.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], dim=1).float()
    areas = flat.sum(dim=1)
    boxes = torch.where((areas > 0)[:, None], boxes, torch.zeros_like(boxes))

    mask_ids_np, positions_np = mask_ids.cpu().numpy(), positions.cpu().numpy() + 1
    bounds = np.searchsorted(mask_ids_np, np.arange(n + 1))
    counts = []
    for i in range(n):
        edges = np.concatenate([[0], positions_np[bounds[i] : bounds[i + 1]], [h * w]])
        runs = np.diff(edges)
        counts.append(np.concatenate([[0], runs]) if starts_with_one[i] else runs)
    return counts, areas.cpu().numpy().astype(np.int64), boxes.cpu().numpy()


def empty_run_lengths(height: int, width: int) -> List[int]:
    """The run lengths of an all-background mask."""
    return [height * width]


def compress(counts: List[RunLengths], height: int, width: int) -> List[Rle]:
    """Uncompressed run lengths of masks of one image → their stored COCO RLEs."""
    if not counts:
        return []
    encoded = mask_utils.frPyObjects([{"counts": c, "size": [height, width]} for c in counts], height, width)
    return [{"size": [height, width], "counts": m["counts"].decode("ascii")} for m in encoded]


def encode(mask: np.ndarray) -> Rle:
    """A bool (H, W) mask → its stored COCO RLE."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}


def for_pycocotools(value: Any, where: str, what: str) -> Rle:
    """A stored mask as pycocotools takes it (counts as bytes); ValueError naming `where`
    and `what` when it is not a COCO RLE."""
    size, counts = value.get("size"), value.get("counts")
    if size is None or len(size) != 2 or any(s is None or s < 0 for s in size) or counts is None:
        raise ValueError(f"{where}: {what} must be a COCO RLE {{size: [h, w], counts}}, got {value!r}")
    return {"size": [int(size[0]), int(size[1])], "counts": counts.encode() if isinstance(counts, str) else counts}


def decode(value: Any, where: str, what: str) -> np.ndarray:
    """A stored mask → bool (H, W); ValueError when it is not a COCO RLE."""
    return mask_utils.decode(for_pycocotools(value, where, what)).astype(bool)


def counts_text(counts: Any) -> str:
    """Compressed counts as the text COCO JSON holds."""
    return counts.decode("ascii") if isinstance(counts, bytes) else str(counts)
