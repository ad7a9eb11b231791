"""Boxes around binary masks, and the test that drops masks cut off by a crop's edge; both on the
masks' device."""

from typing import Tuple

import torch

from .crops import CropBox

# How close (in pixels) a box side may come to a crop's edge before the mask counts as cut off.
CROP_EDGE_TOLERANCE = 20.0


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """The tight box of each mask, with inclusive pixel coordinates (a one-pixel mask at (x, y)
    has the box (x, y, x, y)); (0, 0, 0, 0) for an empty mask.

    Arguments:
      masks (torch.Tensor): bool (..., H, W).

    Returns:
      (torch.Tensor): int64 (..., 4) as (x0, y0, x1, y1).
    """
    height, width = masks.shape[-2:]
    rows, cols = masks.any(dim=-1), masks.any(dim=-2)  # ... x H, ... x W
    ys = torch.arange(height, device=masks.device)
    xs = torch.arange(width, device=masks.device)
    top = torch.where(rows, ys, height).amin(dim=-1)
    bottom = torch.where(rows, ys, -1).amax(dim=-1)
    left = torch.where(cols, xs, width).amin(dim=-1)
    right = torch.where(cols, xs, -1).amax(dim=-1)
    boxes = torch.stack([left, top, right, bottom], dim=-1)
    return torch.where(rows.any(dim=-1, keepdim=True), boxes, 0)


def cut_by_crop_edge(boxes: torch.Tensor, crop_box: CropBox, image_size: Tuple[int, int],
                     tolerance: float = CROP_EDGE_TOLERANCE) -> torch.Tensor:
    """Which masks reach a side of their crop that is not a side of the image (within
    `tolerance` pixels): such a mask probably continues outside the crop.

    Arguments:
      boxes (torch.Tensor): int64 (n, 4) the masks' boxes (`mask_boxes`) in the crop's frame.
      crop_box (tuple(int, int, int, int)): the crop (x0, y0, x1, y1) in the image.
      image_size (tuple(int, int)): the image's (H, W).
      tolerance (float): the distance in pixels that counts as reaching a side.

    Returns:
      (torch.Tensor): bool (n,).
    """
    x0, y0 = crop_box[0], crop_box[1]
    in_image = (boxes + torch.tensor([x0, y0, x0, y0], device=boxes.device)).float()  # n x 4
    crop = torch.tensor(crop_box, dtype=torch.float32, device=boxes.device)
    image = torch.tensor([0, 0, image_size[1], image_size[0]], dtype=torch.float32, device=boxes.device)
    near_crop = (in_image - crop).abs() <= tolerance
    near_image = (in_image - image).abs() <= tolerance
    return (near_crop & ~near_image).any(dim=1)
