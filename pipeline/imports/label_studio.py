"""Label Studio's JSON export of a reviewed project (Export → JSON; `GET /api/projects/<id>/
export?exportType=JSON`) read back as labelled rows: the inverse of `export --format
label-studio` (`pipeline.exports.label_studio`).

A task gives one row:
- id: `data.source_id` (the job's row id, which the export wrote), else the task's `id`;
- image: `data.image` (`image_paths.ImageLocator`);
- regions: those of the task's most recent submitted annotation (not `was_cancelled`; the
  latest `updated_at`, else `created_at`, then the highest `id`): when several annotators
  labelled a task, only that one is imported, the others are counted. Brush regions
  (`brushlabels` / `brush`, `value.format: rle`): Label Studio's RLE of an RGBA image,
  row-major (`pipeline.masks.brush`). Polygon regions
  (`polygonlabels` / `polygon`): `value.points` in percent of original_width / original_height,
  rasterised the COCO way (`pipeline.masks.rle.rasterise_polygons`) at pixel coordinates.
  The category is the region's first label. A region that cannot be read (undecodable RLE,
  a polygon of fewer than 3 points, a size that is not original_width x original_height, an
  empty mask, another kind of result) is skipped and counted by reason.

Whether a person changed a region (`matching`): against the prediction the annotation started
from: the annotation's own `prediction` (Label Studio's JSON export nests its parent prediction
there, and lists only the ids of the task's predictions), else the task's prediction of the
annotation's `parent_prediction` id, else, with no such link, the task's last prediction (tasks
as `export --format label-studio` writes them hold one). A task without predictions started
empty: its regions were added. An export without predictions in any task leaves `changed` null.
"""

import datetime
import math
from typing import Any, Dict, List, Optional, Set, Tuple

import numpy as np

from ..masks import brush, rle
from ..text import clipped
from .image_paths import ImageLocator
from .matching import compare
from .records import ImportCounts, LabelledRow, Region, RegionProblem, is_number

_BRUSH, _POLYGON = ("brushlabels", "brush"), ("polygonlabels", "polygon")
EXPORT_HINT = ("export the project with Export → JSON (a JSON array of tasks, each with its data and annotations; "
               "JSON-MIN and CSV hold no masks)")


def read_label_studio(export: Any, images: ImageLocator, what: str) -> Tuple[List[LabelledRow], ImportCounts]:
    """The rows of a parsed Label Studio JSON export, and the counts. ValueError (naming the
    file, `what`, and the task) for a file that is not such an export."""
    if not isinstance(export, list) or not all(isinstance(task, dict) for task in export) or (
            export and not any("annotations" in task for task in export)):
        raise ValueError(f"{what} is not a Label Studio JSON export: {EXPORT_HINT}")
    counts = ImportCounts("task", predictions_known=any(task.get("predictions") for task in export))
    rows = []
    for number, task in enumerate(export, start=1):
        counts.read += 1
        where = f"task {clipped(task['id'])}" if "id" in task else f"task #{number}"
        try:
            row = _task_row(task, where, images, counts)
        except ValueError as problem:
            raise ValueError(f"{what}: {problem}") from None
        if row is not None:
            rows.append(row)
    return rows, counts


def _task_row(task: Dict[str, Any], where: str, images: ImageLocator, counts: ImportCounts) -> Optional[LabelledRow]:
    data = task.get("data")
    if not isinstance(data, dict):
        raise ValueError(f"{where} has no data object: {EXPORT_HINT}")
    row_id = data["source_id"] if data.get("source_id") is not None else task.get("id")
    if row_id is None:
        raise ValueError(f"{where} has neither data.source_id nor an id: {EXPORT_HINT}")
    annotation = _latest_annotation(task, where, counts)
    if annotation is None:
        return None
    results = annotation.get("result")
    if not isinstance(results, list):
        raise ValueError(f"{where}: annotation {clipped(annotation.get('id'))} has no result list: {EXPORT_HINT}")
    annotated, skipped_ids = _regions(results, counts, "")
    predicted = _starting_prediction(task, annotation, counts)
    if predicted is None:
        changed: List[Optional[bool]] = [None] * len(annotated)
        counts.not_compared += len(annotated) if counts.predictions_known else 0
    else:
        comparison = compare(annotated, predicted, skipped_ids)
        comparison.add_to(counts)
        changed = list(comparison.changed)
    if not annotated:
        counts.unused["no usable region in its annotation"] += 1
        return None
    image_uri = images.locate(data.get("image"), where)
    if image_uri is None:
        return None
    row = LabelledRow(row_id, image_uri)
    for region, flag in zip(annotated, changed, strict=True):
        row.add(region, flag)
    counts.rows += 1
    counts.imported += len(annotated)
    return row


def _latest_annotation(task: Dict[str, Any], where: str, counts: ImportCounts) -> Optional[Dict[str, Any]]:
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        raise ValueError(f"{where}: annotations is not a list of objects: {EXPORT_HINT}")
    submitted = [a for a in annotations if not a.get("was_cancelled")]
    if len(submitted) < len(annotations):
        counts.other_annotations["cancelled"] += len(annotations) - len(submitted)
    if not submitted:
        counts.unused["only cancelled annotations" if annotations else "no annotation"] += 1
        return None
    if len(submitted) > 1:
        counts.other_annotations["older than the task's latest"] += len(submitted) - 1
    return max(submitted, key=_recency)


def _recency(annotation: Dict[str, Any]) -> Tuple[float, int]:
    stamp = annotation.get("updated_at") or annotation.get("created_at")
    try:
        seconds = datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        seconds = -math.inf
    number = annotation.get("id")
    return seconds, number if isinstance(number, int) else -1


def _starting_prediction(task: Dict[str, Any], annotation: Dict[str, Any], counts: ImportCounts
                         ) -> Optional[List[Region]]:
    """The regions of the prediction the annotation started from; [] when the task had none;
    None when that is unknown (no predictions in the export, or not this one's)."""
    if not counts.predictions_known:
        return None
    prediction = annotation.get("prediction")
    if not (isinstance(prediction, dict) and isinstance(prediction.get("result"), list)):
        listed = [p for p in task.get("predictions") or [] if isinstance(p, dict) and isinstance(p.get("result"), list)]
        parent = annotation.get("parent_prediction")
        linked = [p for p in listed if parent is None or p.get("id") == parent]
        prediction = linked[-1] if linked else None
    if prediction is None:
        return [] if not task.get("predictions") else None
    return _regions(prediction["result"], counts, "in a prediction: ")[0]


def _regions(results: List[Any], counts: ImportCounts, what: str) -> Tuple[List[Region], Set[str]]:
    """The readable mask regions of a result list, and the ids of the regions skipped (each
    counted by reason, prefixed with `what`)."""
    regions, skipped_ids = [], set()
    for result in results:
        try:
            regions.append(_region(result))
        except RegionProblem as problem:
            counts.skipped[f"{what}{problem}"] += 1
            if isinstance(result, dict) and result.get("id") is not None:
                skipped_ids.add(str(result["id"]))
    return regions, skipped_ids


def _region(result: Any) -> Region:
    if not isinstance(result, dict) or not isinstance(result.get("value"), dict):
        raise RegionProblem("a result without a value object")
    kind = str(result.get("type", "")).lower()
    if kind in _BRUSH:
        mask = _brush_mask(result)
    elif kind in _POLYGON:
        mask = _polygon_mask(result)
    else:
        raise RegionProblem(f"a {clipped(kind or None, 40)} result, not a brush or polygon region")
    if not mask.any():
        raise RegionProblem("empty mask")
    labels = result["value"].get(kind) if kind.endswith("labels") else None
    category = labels[0] if isinstance(labels, list) and labels and isinstance(labels[0], str) else None
    region_id = result.get("id")
    return Region(str(region_id) if region_id is not None else None, mask, category)


def _size(result: Dict[str, Any]) -> Tuple[int, int]:
    h, w = result.get("original_height"), result.get("original_width")
    if not (isinstance(h, int) and isinstance(w, int) and not isinstance(h, bool) and not isinstance(w, bool)
            and h > 0 and w > 0):
        raise RegionProblem("no original_width / original_height")
    return h, w


def _brush_mask(result: Dict[str, Any]) -> np.ndarray:
    h, w = _size(result)
    value = result["value"]
    if value.get("format", "rle") != "rle":
        raise RegionProblem(f"brush format {clipped(value.get('format'), 40)}, not rle")
    try:
        return brush.decode(value.get("rle"), h, w)
    except ValueError as problem:
        raise RegionProblem(str(problem)) from None


def _polygon_mask(result: Dict[str, Any]) -> np.ndarray:
    h, w = _size(result)
    points = result["value"].get("points")
    if not isinstance(points, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(is_number(v) for v in p) for p in points):
        raise RegionProblem("polygon points are not [x, y] pairs of numbers")
    if len(points) < 3:
        raise RegionProblem("polygon of fewer than 3 points")
    return rle.rasterise_polygons([[c for x, y in points for c in (x * w / 100, y * h / 100)]], h, w)


__all__ = ["read_label_studio"]
