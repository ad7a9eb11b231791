"""COCO instances export of the pipeline's result Parquet (see `pipeline.schema`).

`export_coco` streams the result files (through `pipeline.output.results.ResultReader`) and writes
one COCO "instances" JSON file:

    {"info": {...}, "licenses": [], "images": [...], "annotations": [...], "categories": [...]}

Images and annotations are spooled to two temporary local files while the input streams,
then concatenated into the output, so memory stays bounded by the number of categories
(plus one record batch), never by the number of masks. The output is written only once
the whole input has been read and validated: a bad input raises `ValueError` and leaves
`output_path` untouched.
"""

import datetime
import json
import os
import shutil
import tempfile
from typing import IO, Any, Dict, List, Optional

from ..config import StorageConfig
from ..ids import json_value
from ..masks import polygons, rle
from ..output import JobOutput
from ..output.results import ResultColumns, ResultImage, ResultMask, ResultReader
from ..storage import Location
from .image_refs import ImageSources


def export_coco(
    input_path: str,
    output_path: str,
    id_column: str,
    category_column: Optional[str] = None,
    storage: StorageConfig = StorageConfig(),  # noqa: B008 - a frozen-in-practice default, never mutated
    batch_rows: int = 256,
    image_path_column: Optional[str] = None,
    min_score: Optional[float] = None,
    min_stability: Optional[float] = None,
    as_polygons: bool = False,
    simplify: float = 0.0,
) -> Dict[str, int]:
    """Write the pipeline's result Parquet as a COCO instances JSON file.

    Args:
        input_path: the run's output: a Parquet file, a directory (searched recursively for
            ``*.parquet``) or a glob; local or any fsspec URL. Files are read in sorted order.
        output_path: the JSON file to write, local or any fsspec URL (replaced if it exists;
            local parent directories are created).
        id_column: the run's ``input.id_column``.
        category_column: the run's ``input.category_column``, or None. Per row it holds a
            list aligned with the boxes of category names (strings) or integer ids.
        storage: object-store settings (S3 endpoint, region, anonymous) for both paths.
        batch_rows: rows per record batch read from Parquet.
        image_path_column: the run's ``input.image_uri_column``, or None: each image's
            ``file_name`` is then its URI or path (what COCO tools open), else ``str(id)``.
        min_score: leave out masks whose predicted IoU is below this (counted in
            ``skipped_boxes``).
        min_stability: leave out masks whose stability score is below this (likewise).
        as_polygons: segmentations as COCO polygons (`pipeline.masks.polygons.coco_polygons`: one
            polygon per connected part, on the mask's pixel edges) instead of RLE, except for
            masks with holes, which polygons cannot hold: those keep their RLE (counted in
            ``kept_rle``).
        simplify: with ``as_polygons``, the polygons' simplification tolerance in pixels
            (`cv2.approxPolyDP`; 0: none, the polygons rasterise back to the exact mask).

    Output:
        - images: one per row that succeeded (``error`` null and ``image_size`` non-null):
          ``{"id": 1-based running index, "file_name": the image's URI or path (with
          ``image_path_column``) else str(id), "height", "width", "source_id": the row's id
          as a JSON value}``. Other rows, and rows with a null id,
          are skipped and counted in ``skipped_rows`` (their boxes are not counted).
        - annotations: one per box of an exported image whose ``box_errors`` entry is null,
          whose mask is non-empty (``mask_areas[i] > 0``), whose score is finite (and at least
          ``min_score``) and whose category is non-null: ``{"id": running index from 1, "image_id", "category_id",
          "segmentation": the mask's RLE {"size": [h, w], "counts": str} (or its polygons),
          "area": the mask's pixel count,
          "bbox": [x, y, w, h], "iscrowd": 0, "score": the predicted IoU}``. Other boxes are
          counted in ``skipped_boxes``.
        - categories: without ``category_column``, ``[{"id": 1, "name": "object"}]`` and every
          annotation has ``category_id`` 1. With string categories, ids 1, 2, ... in order of
          first appearance over all rows of the input (failed rows and skipped boxes included,
          so the ids do not depend on which images failed); with integer categories, the ids
          themselves, named ``str(id)``, sorted by id. A column mixing names and ids is an error.

    Returns:
        ``{"images", "annotations", "skipped_rows", "skipped_boxes", "categories"}`` counts,
        and with ``as_polygons`` ``kept_rle``, the masks with holes left as RLE.

    Raises:
        ValueError: missing columns (the id / category column must match the run's config),
            a category column that is not a list per row, categories that mix strings and
            integers (or are neither), per-box lists of different lengths, a mask whose size
            differs from the row's image_size, or a malformed image_size / bbox.
        FileNotFoundError: no Parquet files at ``input_path``.
    """
    reader = ResultReader(JobOutput(input_path, storage), ResultColumns(id_column, category_column, image_path_column),
                          min_score=min_score, min_stability=min_stability, batch_rows=batch_rows)
    return write_coco(reader, Location(output_path, storage), as_polygons=as_polygons, simplify=simplify)


def write_coco(reader: ResultReader, output: Location, as_polygons: bool = False, simplify: float = 0.0,
               images_root: Optional[ImageSources] = None) -> Dict[str, int]:
    """`export_coco` of the results `reader` streams. `images_root`: each image under its root
    is named by its path relative to the root (a file a tool opens wherever the images are
    mounted); the others keep their URI and are counted in ``outside_images_root``."""
    if as_polygons:
        polygons.check_tolerance(simplify)
    num_annotations = kept_rle = outside_root = 0
    with tempfile.TemporaryDirectory(prefix="coco_export_") as tmp:
        images_path, annotations_path = os.path.join(tmp, "images.json"), os.path.join(tmp, "annotations.json")
        with open(images_path, "w", encoding="utf-8") as images, open(annotations_path, "w", encoding="utf-8") as anns:
            for image in reader.images():
                file_name = image.file_name
                if images_root is not None:
                    source = images_root.source(image.uri)
                    relative = images_root.under_root(source) if source is not None else None
                    file_name = relative if relative is not None else file_name
                    outside_root += relative is None
                images.write(("," if image.index > 1 else "") + _dumps({
                    "id": image.index, "file_name": file_name, "height": image.height, "width": image.width,
                    "source_id": json_value(image.row_id)}))
                for mask in image.masks:
                    num_annotations += 1
                    segmentation = _polygons(image, mask, simplify) if as_polygons else None
                    if as_polygons and segmentation is None:
                        kept_rle += 1
                    anns.write(("," if num_annotations > 1 else "") + _dumps({
                        "id": num_annotations, "image_id": image.index, "category_id": mask.category_id,
                        "segmentation": mask.rle if segmentation is None else segmentation, "area": float(mask.area),
                        "bbox": mask.bbox, "iscrowd": 0, "score": mask.score}))
        categories = reader.categories()
        info = {
            "description": "SAM-HQ masks exported from the samhq-annotate pipeline's results",
            "source": reader.output.url,
            "segmentation": ("polygons on the masks' pixel edges" + (f", simplified by {simplify} px" if simplify else "")
                             + "; RLE for masks with holes" if as_polygons else "RLE"),
            "date_created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        _write_output(output, info, images_path, annotations_path, categories)
    result = {"images": reader.num_images, "annotations": reader.num_masks, "skipped_rows": reader.skipped_rows,
              "skipped_boxes": reader.skipped_boxes, "categories": len(reader.categories())}
    if images_root is not None:
        result["outside_images_root"] = outside_root
    return {**result, "kept_rle": kept_rle} if as_polygons else result


def _polygons(image: ResultImage, mask: ResultMask, simplify: float) -> Optional[List[List[int]]]:
    decoded = rle.decode(mask.rle, f"image {image.file_name!r}", f"mask {mask.mask_index}")
    return polygons.coco_polygons(decoded, simplify)


def _write_output(output: Location, info: Dict[str, Any], images_path: str, annotations_path: str,
                  categories: List[Dict[str, Any]]) -> None:
    with output.open_for_write() as out:
        out.write(('{"info":' + _dumps(info) + ',"licenses":[],"images":[').encode())
        _copy(images_path, out)
        out.write(b'],"annotations":[')
        _copy(annotations_path, out)
        out.write(('],"categories":' + _dumps(categories) + "}").encode())


def _copy(src: str, out: IO[bytes]) -> None:
    with open(src, "rb") as f:
        shutil.copyfileobj(f, out, 1 << 20)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


__all__ = ["export_coco", "write_coco"]
