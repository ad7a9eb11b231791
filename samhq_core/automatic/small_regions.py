"""The generator's clean-up of small regions: holes smaller than an area are filled, and
disconnected islands smaller than it are removed (8-connected components, OpenCV's
connectedComponentsWithStats), on the host."""

from typing import Tuple

import numpy as np


def fill_small_holes(mask: np.ndarray, min_area: float) -> Tuple[np.ndarray, bool]:
    """Fill every 8-connected region of background smaller than `min_area` (the background
    around the mask too, when it is that small).

    Arguments:
      mask (np.ndarray): bool (H, W).
      min_area (float): regions of fewer pixels are filled.

    Returns:
      (np.ndarray): bool (H, W), the mask with the holes filled (`mask` itself when none was).
      (bool): whether any region was filled.
    """
    labels, small, _ = _small_components(~mask, min_area)
    if not small.any():
        return mask, False
    return mask | small[labels], True


def remove_small_islands(mask: np.ndarray, min_area: float) -> Tuple[np.ndarray, bool]:
    """Remove every 8-connected region of the mask smaller than `min_area`; when all are, keep
    the largest.

    Arguments:
      mask (np.ndarray): bool (H, W).
      min_area (float): regions of fewer pixels are removed.

    Returns:
      (np.ndarray): bool (H, W), the mask without them (`mask` itself when none was removed).
      (bool): whether any region was removed.
    """
    labels, small, sizes = _small_components(mask, min_area)
    if not small.any():
        return mask, False
    kept = ~small
    kept[0] = False  # the background
    if not kept.any():
        kept[1 + int(np.argmax(sizes[1:]))] = True
    return kept[labels], True


def _small_components(foreground: np.ndarray, min_area: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels (H, W), small (n,) bool per label, sizes (n,)) of the 8-connected components of
    `foreground`; label 0 is the rest, never small."""
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(foreground.astype(np.uint8), connectivity=8)
    sizes = stats[:, cv2.CC_STAT_AREA]
    small = sizes < min_area
    small[0] = False
    return labels, small, sizes
