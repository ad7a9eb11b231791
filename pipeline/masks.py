"""Mask post-processing on the model's device: upsampling, thresholding, and COCO run
lengths, areas and boxes, so that only small arrays leave the GPU."""

from typing import Iterator, List, Tuple

import numpy as np
import torch
from torch.nn import functional as F

# Full-resolution logits held at once, in pixels (x4 bytes): bounds memory for large images.
_MAX_PIXELS_PER_CHUNK = 1 << 26


def upsampled_mask_chunks(
    low_res: torch.Tensor, input_size: int, resized_hw: Tuple[int, int], original_hw: Tuple[int, int], threshold: float
) -> Iterator[torch.Tensor]:
    """(n, s, s) low-res logits → (k, H, W) bool masks at the original image size, a few at a
    time (bounded memory), exactly as SamHQProcessor.post_process_masks (and the official
    predictor) compute them."""
    h, w = original_hw
    chunk = max(1, _MAX_PIXELS_PER_CHUNK // max(h * w, input_size * input_size))
    for start in range(0, low_res.shape[0], chunk):
        logits = low_res[start : start + chunk, None].float()
        logits = F.interpolate(logits, (input_size, input_size), mode="bilinear", align_corners=False)
        logits = logits[..., : resized_hw[0], : resized_hw[1]]
        logits = F.interpolate(logits, (h, w), mode="bilinear", align_corners=False)
        yield logits[:, 0] > threshold


def mask_statistics(masks: torch.Tensor) -> Tuple[List[np.ndarray], np.ndarray, np.ndarray]:
    """(n, H, W) bool → COCO RLE run lengths per mask (column-major, first run counts zeros),
    areas (n,) int64 and tight boxes (n, 4) float32 as COCO xywh ([0, 0, 0, 0] when empty)."""
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

    mask_ids, positions = mask_ids.cpu().numpy(), positions.cpu().numpy() + 1
    bounds = np.searchsorted(mask_ids, np.arange(n + 1))
    counts = []
    for i in range(n):
        edges = np.concatenate([[0], positions[bounds[i] : bounds[i + 1]], [h * w]])
        runs = np.diff(edges)
        counts.append(np.concatenate([[0], runs]) if starts_with_one[i] else runs)
    return counts, areas.cpu().numpy().astype(np.int64), boxes.cpu().numpy()
