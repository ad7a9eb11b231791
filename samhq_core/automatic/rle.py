"""Uncompressed run-length encoding of binary masks, as the official generator and pycocotools
take it: the pixels in column-major order (down the first column, then the next), as counts of
alternating runs that start with a run of 0s (of length 0 when the first pixel is set).

The runs' boundaries are found on the masks' device; only their positions are copied to the
host."""

from typing import Any, Dict, List, Tuple

import numpy as np
import torch

from .crops import CropBox


def masks_to_rle(masks: torch.Tensor, crop_box: CropBox, image_size: Tuple[int, int]) -> List[np.ndarray]:
    """The run lengths of masks of a crop, each placed at the crop in an image of zeros.

    Arguments:
      masks (torch.Tensor): bool (n, h, w), at the crop's size, on any device.
      crop_box (tuple(int, int, int, int)): where the crop lies, (x0, y0, x1, y1), with
        x1 - x0 = w and y1 - y0 = h.
      image_size (tuple(int, int)): the image's (H, W).

    Returns:
      (list(np.ndarray)): n int64 arrays of counts, summing to H * W each.
    """
    n, h, w = masks.shape
    height, width = image_size
    x0, y0, x1, y1 = crop_box
    # The crop's columns at full height, with one column of zeros on each side that has one, so
    # that in column-major order they are one contiguous stretch of the image whose every run
    # of 1s starts and ends inside it.
    left, right = int(x0 > 0), int(x1 < width)
    columns = masks.new_zeros(n, w + left + right, height)  # n x columns x H: column-major
    columns[:, left : left + w, y0:y1] = masks.transpose(1, 2)
    flat = columns.flatten(1)  # n x L
    changes = torch.nonzero(flat[:, 1:] != flat[:, :-1]).cpu().numpy()  # m x 2: (mask, position - 1), sorted
    starts_set = flat[:, 0].cpu().numpy()  # only where the stretch begins the image (left == 0, y0 == 0)
    per_mask = np.bincount(changes[:, 0], minlength=n)
    positions = np.split(changes[:, 1] + 1 + (x0 - left) * height, np.cumsum(per_mask)[:-1])
    total = height * width
    out = []
    for first, bounds in zip(starts_set, positions, strict=True):
        edges = np.concatenate([[0, 0] if first else [0], bounds, [total]])
        out.append(np.diff(edges))
    return out


def rle_to_mask(counts: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Decode run lengths to a mask.

    Arguments:
      counts (np.ndarray or list(int)): the counts, as `masks_to_rle` gives them.
      size (tuple(int, int)): the mask's (H, W).

    Returns:
      (np.ndarray): bool (H, W) (a transposed view of a column-major array).
    """
    height, width = size
    values = np.arange(len(counts)) % 2 == 1  # runs alternate 0, 1, 0, ...
    return np.repeat(values, counts).reshape(width, height).T


def rle_area(counts: np.ndarray) -> int:
    """The number of set pixels.

    Arguments:
      counts (np.ndarray or list(int)): run lengths, as `masks_to_rle` gives them.

    Returns:
      (int): the sum of the runs of 1s.
    """
    return int(sum(counts[1::2]))


def uncompressed_rle(counts: np.ndarray, size: Tuple[int, int]) -> Dict[str, Any]:
    """Run lengths as the official generator's "uncompressed_rle" output mode gives them.

    Arguments:
      counts (np.ndarray): run lengths, as `masks_to_rle` gives them.
      size (tuple(int, int)): the mask's (H, W).

    Returns:
      (dict(str, any)): {"size": [H, W], "counts": list of int}.
    """
    return {"size": [int(size[0]), int(size[1])], "counts": [int(c) for c in counts]}


def coco_rle(counts: np.ndarray, size: Tuple[int, int]) -> Dict[str, Any]:
    """Run lengths compressed as COCO's RLE (pycocotools), with the counts as a str, as the
    official generator's "coco_rle" output mode gives them.

    Arguments:
      counts (np.ndarray): run lengths, as `masks_to_rle` gives them.
      size (tuple(int, int)): the mask's (H, W).

    Returns:
      (dict(str, any)): {"size": [H, W], "counts": str}.
    """
    from pycocotools import mask as mask_utils

    height, width = size
    encoded = mask_utils.frPyObjects(uncompressed_rle(counts, size), height, width)
    return {"size": encoded["size"], "counts": encoded["counts"].decode("utf-8")}
