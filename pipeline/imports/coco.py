"""A COCO instances file (`images`, `annotations`, `categories`) read back as labelled rows: the
inverse of `export --format coco-rle / coco-polygons` (`pipeline.exports.coco`), and the form
most annotation tools export masks in.

An image gives one row:
- id: its `source_id` (the job's row id, which our export writes), else its `id`;
- image: its `file_name` (`image_paths.ImageLocator`: relative names against --images-root,
  else the COCO file's directory);
- regions: its annotations, in file order, each with its `segmentation`: polygons (rasterised
  by pycocotools, `pipeline.masks.rle.rasterise_polygons`), uncompressed RLE (counts a list)
  or compressed RLE (counts a string), at the image's height x width. The box is the
  annotation's `bbox` (xywh, the rectangle the file gives), else the mask's tight box; the
  category is the name `categories` gives its `category_id`. An annotation that cannot be read
  (no segmentation, a polygon of fewer than 3 points, an RLE of another size than the image or
  that cannot be decoded, an empty mask, an unknown image_id) is skipped and counted by reason.

Whether a person changed an annotation (`matching`): against `predictions`, the COCO file the
reviewers started from (e.g. our own export given to them), image by image `id`, annotations
paired by `id`, else by mask IoU. An image the predictions lack started empty: its annotations
were added. Without `predictions`, `changed` is null.
"""

from collections import Counter, defaultdict
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..masks import rle
from ..text import clipped
from .image_paths import ImageLocator
from .matching import compare
from .records import ImportCounts, LabelledRow, Region, RegionProblem, is_number

COCO_FORM = ("a COCO instances file is a JSON object with `images` and `annotations` lists, each image with its id, "
             "file_name, height and width")


class CocoFile:
    """A parsed COCO instances file, checked: its images by id, and each image's annotations
    (the readable ones as regions; the others counted in `skipped` by reason)."""

    def __init__(self, instances: Any, what: str, skipped_prefix: str = "") -> None:
        """`what` names the file in errors; `skipped_prefix` goes before the reasons counted."""
        if not isinstance(instances, dict) or not isinstance(instances.get("images"), list) or not isinstance(
                instances.get("annotations"), list):
            raise ValueError(f"{what} is not a COCO instances file: {COCO_FORM}")
        self.skipped_prefix = skipped_prefix
        self.names = {c["id"]: c.get("name") for c in instances.get("categories") or []
                      if isinstance(c, dict) and _is_key(c.get("id"))}
        self.images: Dict[Any, Dict[str, Any]] = {}
        for number, image in enumerate(instances["images"], start=1):
            if not isinstance(image, dict) or not _is_key(image.get("id")) or not all(
                    isinstance(image.get(k), int) and not isinstance(image.get(k), bool) and image[k] > 0
                    for k in ("height", "width")):
                raise ValueError(f"{what}: image #{number} ({clipped(image)}) lacks an id or a positive height and "
                                 f"width; {COCO_FORM}")
            if image["id"] in self.images:
                raise ValueError(f"{what}: two images have the id {clipped(image['id'])}: give each image its own id")
            self.images[image["id"]] = image
        self.annotations: Dict[Any, List[Dict[str, Any]]] = defaultdict(list)
        self.skipped: Counter = Counter()
        for number, annotation in enumerate(instances["annotations"], start=1):
            if not isinstance(annotation, dict):
                raise ValueError(f"{what}: annotation #{number} is not an object; {COCO_FORM}")
            if not _is_key(annotation.get("image_id")) or annotation["image_id"] not in self.images:
                self.skipped[f"{skipped_prefix}an image_id not among the images"] += 1
                continue
            self.annotations[annotation["image_id"]].append(annotation)

    def regions(self, image_id: Any, counts: ImportCounts) -> Tuple[List[Region], List[str]]:
        """The readable regions of an image, and the ids of its annotations skipped (each
        counted in `counts.skipped` by reason, after the file's `skipped_prefix`)."""
        image = self.images[image_id]
        regions, skipped_ids = [], []
        for annotation in self.annotations.get(image_id, []):
            try:
                regions.append(self._region(annotation, image["height"], image["width"], counts))
            except RegionProblem as problem:
                counts.skipped[f"{self.skipped_prefix}{problem}"] += 1
                if annotation.get("id") is not None:
                    skipped_ids.append(str(annotation["id"]))
        return regions, skipped_ids

    def _region(self, annotation: Dict[str, Any], height: int, width: int, counts: ImportCounts) -> Region:
        mask = _mask(annotation.get("segmentation"), height, width)
        if not mask.any():
            raise RegionProblem("empty mask")
        category_id = annotation.get("category_id")
        category = self.names.get(category_id) if _is_key(category_id) else None
        if category_id is not None and not isinstance(category, str):
            counts.notes["category_id not among the categories (category null)"] += 1
            category = None
        box = _box(annotation.get("bbox"))
        if box is None and "bbox" in annotation:
            counts.notes["bbox not [x, y, w, h] (the mask's box taken)"] += 1
        annotation_id = annotation.get("id")
        return Region(str(annotation_id) if annotation_id is not None else None, mask, category, box)


def read_coco(instances: Any, images: ImageLocator, what: str, predictions: Optional[Any] = None,
              predictions_what: str = "--predictions") -> Tuple[List[LabelledRow], ImportCounts]:
    """The rows of a parsed COCO instances file, compared with the parsed `predictions` file
    when given, and the counts. ValueError, naming the file (`what`, `predictions_what`), for
    a file that is not COCO instances."""
    corrected = CocoFile(instances, what)
    started = CocoFile(predictions, predictions_what, "in --predictions: ") if predictions is not None else None
    counts = ImportCounts("image", predictions_known=started is not None)
    counts.skipped.update(corrected.skipped)
    rows = []
    for image_id, image in corrected.images.items():
        counts.read += 1
        where = f"image {clipped(image_id)}"
        annotated, skipped_ids = corrected.regions(image_id, counts)
        changed: List[Optional[bool]] = [None] * len(annotated)
        if started is not None:
            predicted: List[Region] = []
            if image_id in started.images:
                predicted = started.regions(image_id, counts)[0]
            else:
                counts.notes["images not in --predictions (their annotations count as added)"] += 1
            comparison = compare(annotated, predicted, skipped_ids)
            comparison.add_to(counts)
            changed = list(comparison.changed)
        if not annotated:
            counts.unused["no usable annotation" if corrected.annotations.get(image_id) else "no annotation"] += 1
            continue
        image_uri = images.locate(image.get("file_name"), where)
        if image_uri is None:
            continue
        row = LabelledRow(image["source_id"] if image.get("source_id") is not None else image_id, image_uri)
        for region, flag in zip(annotated, changed, strict=True):
            row.add(region, flag)
        rows.append(row)
        counts.rows += 1
        counts.imported += len(annotated)
    if started is not None:
        counts.skipped.update(started.skipped)
        gone = len(set(started.images) - set(corrected.images))
        if gone:
            counts.notes["images of --predictions not in --input (not compared)"] += gone
    return rows, counts


def _mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    if isinstance(segmentation, list):
        if not segmentation:
            raise RegionProblem("no segmentation")
        if not all(isinstance(p, list) and all(is_number(v) for v in p) for p in segmentation):
            raise RegionProblem("polygon coordinates are not numbers")
        if any(len(p) < 6 or len(p) % 2 for p in segmentation):
            raise RegionProblem("polygon of fewer than 3 points (or an odd number of coordinates)")
        return rle.rasterise_polygons(segmentation, height, width)
    if not isinstance(segmentation, dict):
        raise RegionProblem("no segmentation")
    if segmentation.get("size") != [height, width]:
        raise RegionProblem("RLE of another size than the image's height x width")
    counts = segmentation.get("counts")
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts) or \
                sum(counts) != height * width:
            raise RegionProblem("uncompressed RLE counts that do not add up to height x width")
        stored = rle.compress([counts], height, width)[0]
    elif isinstance(counts, str):
        stored = {"size": [height, width], "counts": counts}
    else:
        raise RegionProblem("RLE counts neither a list nor a string")
    try:
        return rle.decode(stored, "segmentation", "RLE")
    except (ValueError, TypeError):  # pycocotools: "Invalid RLE mask representation"
        raise RegionProblem("RLE cannot be decoded") from None


def _is_key(value: Any) -> bool:
    """Whether a JSON value can be an image, annotation or category id (a number or a string)."""
    return isinstance(value, (int, float, str)) and not isinstance(value, bool)


def _box(bbox: Any) -> Optional[List[float]]:
    """A COCO bbox [x, y, w, h] as xyxy, or None when it is not one."""
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(is_number(v) for v in bbox) or min(bbox[2:]) <= 0:
        return None
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


__all__ = ["CocoFile", "read_coco"]
