"""COCO mask AP (pycocotools' COCOeval, iouType segm): over the evaluated boxes, with per-category
AP from the same evaluation, and the runner that segment-everything's evaluation shares."""

import contextlib
import io
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

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


def annotate(out: List[Dict[str, Any]], image_id: int, category_ids: Sequence[int], rles: Sequence[Dict[str, Any]],
             scores: Optional[Sequence[float]] = None) -> None:
    """Append one COCO annotation per RLE of an image to `out` (iscrowd 0, area and bbox from
    pycocotools, as `loadRes` computes them for results); with `scores`, they are detections."""
    if not rles:
        return
    areas, bboxes = mask_utils.area(list(rles)), mask_utils.toBbox(list(rles))
    for k, (category_id, stored, area, bbox) in enumerate(zip(category_ids, rles, areas, bboxes, strict=True)):
        ann = {"id": len(out) + 1, "image_id": image_id, "category_id": category_id, "segmentation": stored,
               "area": float(area), "bbox": [float(v) for v in bbox], "iscrowd": 0}
        if scores is not None:
            ann["score"] = scores[k]
        out.append(ann)


def run_cocoeval(images: List[Dict[str, Any]], gts: List[Dict[str, Any]], dets: List[Dict[str, Any]],
                 categories: List[Dict[str, Any]], max_dets: List[int]) -> COCOeval:
    """COCOeval (segm) evaluated and accumulated over COCO dicts built in memory."""
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset = {"images": images, "annotations": gts, "categories": categories}
        coco_dt.dataset = {"images": images, "annotations": dets, "categories": categories}
        coco_gt.createIndex()
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "segm")
        ev.params.maxDets = max_dets
        ev.evaluate()
        ev.accumulate()
    return ev


def precision_all(ev: COCOeval) -> np.ndarray:
    """Precision [T, R, K] at area "all" and the last (largest) maxDets."""
    return ev.eval["precision"][:, :, :, ev.params.areaRngLbl.index("all"), -1]


def valid_mean(p: np.ndarray) -> float:
    """The mean of COCOeval's entries that exist (-1 marks none), NaN when none does."""
    valid = p[p > -1]
    return float(np.mean(valid)) if valid.size else math.nan


def ap_triple(ev: COCOeval) -> Tuple[float, float, float]:
    """(AP over IoU .50:.95, AP50, AP75) at area all and the largest maxDets."""
    precision, thresholds = precision_all(ev), ev.params.iouThrs
    return (valid_mean(precision), valid_mean(precision[np.isclose(thresholds, 0.5)]),
            valid_mean(precision[np.isclose(thresholds, 0.75)]))


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
        ids = [category_ids[b[0]] for b in im.boxes]
        annotate(gts, image_id, ids, [b[1] for b in im.boxes])
        annotate(dets, image_id, ids, [b[2] for b in im.boxes], [b[3] for b in im.boxes])
    coco_categories = [{"id": i, "name": str(c) if has_categories else "object"} for c, i in category_ids.items()]
    most = max(len(im.boxes) for im in ordered)
    ev = run_cocoeval(coco_images, gts, dets, coco_categories, [1, 10, max(100, most)])
    per_category = {}
    if has_categories:
        precision = precision_all(ev)
        for k, category_id in enumerate(ev.params.catIds):
            per_category[categories[category_id - 1]] = valid_mean(precision[:, :, k])
    return ap_triple(ev), per_category
