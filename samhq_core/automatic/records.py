"""The generator's output: one record per mask, with the keys and types of the official
generator's records."""

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from .crops import CropBox, xyxy_to_xywh
from .rle import coco_rle, rle_area, rle_to_mask, uncompressed_rle

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
# A record's keys, as the official generator names them.
SEGMENTATION, AREA, BBOX, PREDICTED_IOU = "segmentation", "area", "bbox", "predicted_iou"
POINT_COORDS, STABILITY_SCORE, CROP_BOX = "point_coords", "stability_score", "crop_box"


def mask_records(rles: Sequence[np.ndarray], image_size: Tuple[int, int], boxes: np.ndarray, iou: np.ndarray,
                 points: np.ndarray, stability: np.ndarray, crop_boxes: Sequence[CropBox],
                 output_mode: str) -> List[Dict[str, Any]]:
    """The records of an image's masks.

    Arguments:
      rles (sequence of np.ndarray): n masks' run lengths in the image's frame (`rle`).
      image_size (tuple(int, int)): the image's (H, W).
      boxes (np.ndarray): int64 (n, 4) tight boxes (x0, y0, x1, y1), inclusive, in the image.
      iou (np.ndarray): float32 (n,) predicted IoU.
      points (np.ndarray): float64 (n, 2) each mask's point prompt, in the image.
      stability (np.ndarray): float32 (n,) stability scores.
      crop_boxes (sequence of tuple(int, int, int, int)): each mask's crop (x0, y0, x1, y1).
      output_mode (str): "binary_mask", "uncompressed_rle" or "coco_rle".

    Returns:
      (list(dict(str, any))): per mask: segmentation (bool (H, W) np.ndarray, or an RLE dict),
        area (int), bbox (list(int), XYWH; x1 - x0 as the inclusive box has it, so one pixel
        less than the mask's width), predicted_iou (float), point_coords ([[x, y]]),
        stability_score (float), crop_box (list(int), XYWH).
    """
    records = []
    for i, counts in enumerate(rles):
        if output_mode == "binary_mask":
            segmentation: Any = rle_to_mask(counts, image_size)
        elif output_mode == "coco_rle":
            segmentation = coco_rle(counts, image_size)
        else:
            segmentation = uncompressed_rle(counts, image_size)
        x0, y0, x1, y1 = (int(v) for v in boxes[i])
        records.append({
            SEGMENTATION: segmentation,
            AREA: rle_area(counts),
            BBOX: [x0, y0, x1 - x0, y1 - y0],
            PREDICTED_IOU: float(iou[i]),
            POINT_COORDS: [[float(points[i, 0]), float(points[i, 1])]],
            STABILITY_SCORE: float(stability[i]),
            CROP_BOX: xyxy_to_xywh(crop_boxes[i]),
        })
    return records
