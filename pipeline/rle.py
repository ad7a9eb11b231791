"""COCO run-length encoding, the pipeline's mask format: run lengths computed on the model's
device, their compression into COCO RLE strings, and encoding and decoding of whole masks
(through pycocotools, whose layout the format is: column-major pixels, the first run counts
zeros).

A stored mask is `{"size": [h, w], "counts": str}` (`pipeline.schema.RLE_TYPE`).
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Union

import numpy as np
import torch
from pycocotools import mask as mask_utils

Rle = Dict[str, Any]
RunLengths = Union[np.ndarray, List[int]]  # uncompressed counts of one mask


@dataclass
class MaskStatistics:
    """Per mask of one image: COCO run lengths (uncompressed counts), areas (n,) int64, tight
    boxes (n, 4) float32 as COCO xywh ([0, 0, 0, 0] when empty), and the per-mask float32
    values passed to `RunLengthCoder.finish` (scores), in the order given."""

    counts: List[np.ndarray]
    areas: np.ndarray
    boxes: np.ndarray
    values: List[np.ndarray]


class RunLengthCoder:
    """Run lengths of the masks of one image, computed on the masks' device and brought to
    the host in one copy: `add` the masks chunk by chunk (device work only, nothing waits),
    then `finish` finds the run boundaries (one sync per `max_pending_pixels` of masks, so
    device memory stays bounded however many masks an image has) and copies the boundaries,
    areas, boxes and the given per-mask values to the host together."""

    def __init__(self, height: int, width: int, max_pending_pixels: int = 1 << 28) -> None:
        self.height, self.width = height, width
        self.max_pending_pixels = max_pending_pixels
        self._changes: List[torch.Tensor] = []  # (k, H*W - 1) bool: pixel differs from the previous one
        self._pending_pixels = 0
        self._boundaries: List[torch.Tensor] = []  # (2, m) int64: mask index, position, of the runs found
        self._small: List[torch.Tensor] = []  # (k, 6) int64: first pixel, area, box xywh
        self.num_masks = 0
        self._masks_found = 0  # masks whose boundaries are in _boundaries
        self.boundary_searches = 0  # the syncs so far

    def add(self, masks: torch.Tensor) -> None:
        """(k, H, W) bool masks of this image, on any device."""
        k, h, w = masks.shape
        assert (h, w) == (self.height, self.width), (masks.shape, self.height, self.width)
        if k == 0:
            return
        flat = masks.transpose(1, 2).reshape(k, h * w)  # column-major pixel order, as COCO RLE
        rows_any, cols_any = masks.any(dim=2), masks.any(dim=1)  # k x H, k x W
        y0 = rows_any.float().argmax(dim=1)
        y1 = h - 1 - rows_any.flip(1).float().argmax(dim=1)
        x0 = cols_any.float().argmax(dim=1)
        x1 = w - 1 - cols_any.flip(1).float().argmax(dim=1)
        boxes = torch.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], dim=1)
        areas = flat.sum(dim=1)
        boxes = torch.where((areas > 0)[:, None], boxes, torch.zeros_like(boxes))
        self._small.append(torch.cat([flat[:, :1].long(), areas[:, None], boxes.long()], dim=1))
        self._changes.append(flat[:, 1:] != flat[:, :-1])
        self.num_masks += k
        self._pending_pixels += k * h * w
        if self._pending_pixels >= self.max_pending_pixels:
            self._find_boundaries()

    def _find_boundaries(self) -> None:
        """The boundaries of the pending masks' runs, kept on the device (one sync)."""
        if not self._changes:
            return
        mask_ids, positions = torch.cat(self._changes).nonzero(as_tuple=True)
        self._boundaries.append(torch.stack([mask_ids + self._masks_found, positions + 1]))
        self._masks_found = self.num_masks
        self._changes, self._pending_pixels = [], 0
        self.boundary_searches += 1

    def finish(self, *values: torch.Tensor) -> MaskStatistics:
        """The statistics of every mask added, with `values` ((n,) tensors, e.g. scores, on the
        masks' device) copied in the same transfer, as float32."""
        return self.unpack(self.transfer(*values), len(values))

    def transfer(self, *values: torch.Tensor) -> np.ndarray:
        """The device's part of `finish`: the run boundaries found and packed with the masks'
        first pixels, areas, boxes and `values` into one int64 array, copied to the host in one
        transfer."""
        if not self._small:
            return np.zeros(0, np.int64)
        self._find_boundaries()
        small, n = torch.cat(self._small), self.num_masks  # n x 6
        mask_ids, positions = torch.cat(self._boundaries, dim=1)
        # float32 values travel bit for bit inside the int64 transfer
        bits = [v.float().reshape(n).view(torch.int32).long() for v in values]
        return torch.cat([small.flatten(), *bits, mask_ids, positions]).cpu().numpy()

    def unpack(self, packed: np.ndarray, num_values: int) -> MaskStatistics:
        """The host's part of `finish`: the packed array → the masks' statistics."""
        n = self.num_masks
        if n == 0:
            return MaskStatistics([], np.zeros(0, np.int64), np.zeros((0, 4), np.float32),
                                  [np.zeros(0, np.float32) for _ in range(num_values)])
        small_np = packed[: 6 * n].reshape(n, 6)
        offset = 6 * n
        floats = []
        for _ in range(num_values):
            floats.append(packed[offset : offset + n].astype(np.int32).view(np.float32))
            offset += n
        num_changes = (len(packed) - offset) // 2
        mask_ids_np, positions_np = packed[offset : offset + num_changes], packed[offset + num_changes :]
        bounds = np.searchsorted(mask_ids_np, np.arange(n + 1))
        pixels = self.height * self.width
        counts = []
        for i in range(n):
            edges = np.concatenate([[0], positions_np[bounds[i] : bounds[i + 1]], [pixels]])
            runs = np.diff(edges)
            counts.append(np.concatenate([[0], runs]) if small_np[i, 0] else runs)
        return MaskStatistics(counts, small_np[:, 1].astype(np.int64), small_np[:, 2:].astype(np.float32), floats)


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
