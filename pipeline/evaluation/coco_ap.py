"""COCO mask AP (pycocotools' COCOeval, iouType segm) over the evaluated boxes, with per-category
AP from the same evaluation."""

import contextlib
import io
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


@dataclass
class EvaluatedImage:
    """One matched row with evaluated boxes, for COCOeval: [(category, gt RLE, pred RLE, score)]."""

    key: bytes
    height: int
    width: int
    boxes: List[Tuple[Any, Dict[str, Any], Dict[str, Any], float]] = field(default_factory=list)


def category_order(category: Any) -> Tuple[int, Any]:
    return (0, category) if isinstance(category, int) else (1, str(category))


def coco_ap(images: Sequence[EvaluatedImage], has_categories: bool) -> Tuple[Tuple[float, float, float], Dict[Any, float]]:
    """(AP, AP50, AP75) and per-category AP of COCOeval over the evaluated boxes."""
    nan3 = (math.nan, math.nan, math.nan)
    if not images:
        return nan3, {}
    ordered = sorted(images, key=lambda im: im.key)  # image ids independent of the partitioning
    categories = sorted({c for im in ordered for c, _, _, _ in im.boxes}, key=category_order)
    category_ids = {c: i + 1 for i, c in enumerate(categories)}
    coco_images: List[Dict[str, Any]] = []
    gts: List[Dict[str, Any]] = []
    dets: List[Dict[str, Any]] = []
    for image_id, im in enumerate(ordered, 1):
        coco_images.append({"id": image_id, "height": im.height, "width": im.width})
        gt_rles, pred_rles = [b[1] for b in im.boxes], [b[2] for b in im.boxes]
        for rles, out in ((gt_rles, gts), (pred_rles, dets)):
            areas, bboxes = mask_utils.area(rles), mask_utils.toBbox(rles)
            for (category, _, _, score), stored, area, bbox in zip(im.boxes, rles, areas, bboxes, strict=True):
                ann = {"id": len(out) + 1, "image_id": image_id, "category_id": category_ids[category],
                       "segmentation": stored, "area": float(area), "bbox": [float(v) for v in bbox], "iscrowd": 0}
                if out is dets:
                    ann["score"] = score
                out.append(ann)
    coco_categories = [{"id": i, "name": str(c) if has_categories else "object"} for c, i in category_ids.items()]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset = {"images": coco_images, "annotations": gts, "categories": coco_categories}
        coco_dt.dataset = {"images": coco_images, "annotations": dets, "categories": coco_categories}
        coco_gt.createIndex()
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "segm")
        most = max(len(im.boxes) for im in ordered)
        ev.params.maxDets = [1, 10, max(100, most)]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][:, :, :, ev.params.areaRngLbl.index("all"), -1]  # [T, R, K]
    thresholds = ev.params.iouThrs

    def mean(p: np.ndarray) -> float:
        valid = p[p > -1]
        return float(np.mean(valid)) if valid.size else math.nan

    ap = (mean(precision), mean(precision[np.isclose(thresholds, 0.5)]), mean(precision[np.isclose(thresholds, 0.75)]))
    per_category = {}
    if has_categories:
        for k, category_id in enumerate(ev.params.catIds):
            per_category[categories[category_id - 1]] = mean(precision[:, :, k])
    return ap, per_category
