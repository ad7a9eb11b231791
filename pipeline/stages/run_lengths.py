"""COCO run lengths of masks found on the masks' device (the model stage's): only the run
boundaries, areas, boxes and scores are copied to the host, in one transfer per image;
`pipeline.masks.rle` compresses them into COCO RLE strings."""

from dataclasses import dataclass
from typing import List

import numpy as np
import torch


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
