"""The generator's optional last step: small holes and islands removed from every mask
(`small_regions`, on the host), then non-maximum suppression again, within each image, which
prefers the masks that needed no clean-up."""

from typing import Sequence, Tuple

import numpy as np
import torch

from .candidates import Candidates
from .mask_boxes import mask_boxes
from .nms import nms_per_segment
from .rle import masks_to_rle, rle_to_mask
from .small_regions import fill_small_holes, remove_small_islands


def clean_small_regions(found: Candidates, image_sizes: Sequence[Tuple[int, int]], per_image: Sequence[int],
                        min_area: int, nms_threshold: float) -> Candidates:
    """Fill holes and remove islands smaller than min_area in each mask, then drop the masks
    that became duplicates: NMS within each image, with score 1 for a mask left as it was and 0
    for a cleaned one. The kept cleaned masks get their new run lengths and boxes.

    Arguments:
      found (Candidates): the masks of the batch, image by image, boxes in their image's frame.
      image_sizes (sequence of tuple(int, int)): each image's (H, W).
      per_image (sequence of int): how many of the masks belong to each image, in order.
      min_area (int): holes and islands of fewer pixels are removed.
      nms_threshold (float): the IoU above which a box suppresses another.

    Returns:
      (Candidates): the masks kept, image by image, each image's by decreasing score.
    """
    sizes = [size for size, count in zip(image_sizes, per_image, strict=True) for _ in range(count)]
    cleaned = {}
    for i, (counts, size) in enumerate(zip(found.rles, sizes, strict=True)):
        mask, filled = fill_small_holes(rle_to_mask(counts, size), min_area)
        mask, removed = remove_small_islands(mask, min_area)
        if filled or removed:
            cleaned[i] = mask
    boxes = found.boxes.clone()
    for i, mask in cleaned.items():
        boxes[i] = mask_boxes(torch.from_numpy(mask)).to(boxes.device)
    unchanged = torch.ones(len(sizes), dtype=torch.float32)
    unchanged[list(cleaned)] = 0.0
    keep = torch.cat(nms_per_segment(boxes.float(), unchanged.to(boxes.device), per_image, nms_threshold))
    rles = list(found.rles)
    for i, mask in cleaned.items():
        rles[i] = masks_to_rle(torch.from_numpy(np.ascontiguousarray(mask))[None], (0, 0, mask.shape[1], mask.shape[0]),
                               mask.shape)[0]
    return Candidates(found.crop, found.iou, found.stability, boxes, found.points, rles).take(keep)
