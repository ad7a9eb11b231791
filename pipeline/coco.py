"""COCO instances export of the pipeline's result Parquet (see `pipeline.schema`).

`export_coco` streams the result files (file by file, record batch by record batch, reading
only the columns it needs) and writes one COCO "instances" JSON file:

    {"info": {...}, "licenses": [], "images": [...], "annotations": [...], "categories": [...]}

Images and annotations are spooled to two temporary local files while the input streams,
then concatenated into the output, so memory stays bounded by the number of categories
(plus one record batch), never by the number of masks. The output is written only once
the whole input has been read and validated: a bad input raises `ValueError` and leaves
`output_path` untouched.
"""

import datetime
import json
import math
import os
import shutil
import tempfile
from typing import IO, Any, Dict, List, Optional

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from . import rle
from .config import StorageConfig
from .output_files import result_files
from .schema import BOX_ERRORS, ERROR, IMAGE_SIZE, IOU_SCORES, MASK_AREAS, MASK_BBOXES, MASKS, PER_BOX_COLUMNS
from .storage import filesystem, open_for_write

# Result columns the export reads (besides the id, category and image-path columns).
_RESULT_COLUMNS = (IMAGE_SIZE, *PER_BOX_COLUMNS, ERROR)
DEFAULT_CATEGORY = {"id": 1, "name": "object"}


def export_coco(
    input_path: str,
    output_path: str,
    id_column: str,
    category_column: Optional[str] = None,
    storage: StorageConfig = StorageConfig(),  # noqa: B008 - a frozen-in-practice default, never mutated
    batch_rows: int = 256,
    image_path_column: Optional[str] = None,
    min_score: Optional[float] = None,
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

    Output:
        - images: one per row that succeeded (``error`` null and ``image_size`` non-null):
          ``{"id": 1-based running index, "file_name": the image's URI or path (with
          ``image_path_column``) else str(id), "height", "width", "source_id": the row's id
          as a JSON value}``. Other rows, and rows with a null id,
          are skipped and counted in ``skipped_rows`` (their boxes are not counted).
        - annotations: one per box of an exported image whose ``box_errors`` entry is null,
          whose mask is non-empty (``mask_areas[i] > 0``), whose score is finite (and at least
          ``min_score``) and whose category is non-null: ``{"id": running index from 1, "image_id", "category_id",
          "segmentation": the mask's RLE {"size": [h, w], "counts": str}, "area",
          "bbox": [x, y, w, h], "iscrowd": 0, "score": the predicted IoU}``. Other boxes are
          counted in ``skipped_boxes``.
        - categories: without ``category_column``, ``[{"id": 1, "name": "object"}]`` and every
          annotation has ``category_id`` 1. With string categories, ids 1, 2, ... in order of
          first appearance over all rows of the input (failed rows and skipped boxes included,
          so the ids do not depend on which images failed); with integer categories, the ids
          themselves, named ``str(id)``, sorted by id. A column mixing names and ids is an error.

    Returns:
        ``{"images", "annotations", "skipped_rows", "skipped_boxes", "categories"}`` counts.

    Raises:
        ValueError: missing columns (the id / category column must match the run's config),
            a category column that is not a list per row, categories that mix strings and
            integers (or are neither), per-box lists of different lengths, a mask whose size
            differs from the row's image_size, or a malformed image_size / bbox.
        FileNotFoundError: no Parquet files at ``input_path``.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    fs, _ = filesystem(input_path, storage)
    files = result_files(input_path, storage).files
    if min_score is not None and not math.isfinite(min_score):
        raise ValueError(f"min_score must be a finite number, got {min_score}")
    state = _State(category_column is not None, image_path_column, min_score)
    with tempfile.TemporaryDirectory(prefix="coco_export_") as tmp:
        images_path, annotations_path = os.path.join(tmp, "images.json"), os.path.join(tmp, "annotations.json")
        with open(images_path, "w", encoding="utf-8") as images, open(annotations_path, "w", encoding="utf-8") as anns:
            state.images_out, state.annotations_out = images, anns
            for path in files:
                _export_file(fs, path, id_column, category_column, batch_rows, state)
        categories = state.categories()
        info = {
            "description": "SAM-HQ masks exported from the samhq-annotate pipeline's results",
            "source": input_path,
            "date_created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        _write_output(output_path, storage, info, images_path, annotations_path, categories)
    return {
        "images": state.num_images,
        "annotations": state.num_annotations,
        "skipped_rows": state.skipped_rows,
        "skipped_boxes": state.skipped_boxes,
        "categories": len(categories),
    }


class _State:
    """Running ids, counts, the category table and the spool files of one export."""

    def __init__(self, has_categories: bool, image_path_column: Optional[str], min_score: Optional[float]) -> None:
        self.has_categories = has_categories
        self.image_path_column = image_path_column
        self.min_score = min_score
        self.num_images = 0
        self.num_annotations = 0
        self.skipped_rows = 0
        self.skipped_boxes = 0
        self.category_kind: Optional[type] = None  # str or int, fixed by the first non-null value
        self.category_ids: Dict[Any, int] = {}  # name -> id (strings) or id -> id (integers)
        self.images_out: Optional[IO[str]] = None
        self.annotations_out: Optional[IO[str]] = None

    def register_categories(self, values: List[Any], column: str, where: str) -> List[Optional[int]]:
        """Category ids of one row's values (None where the value is null)."""
        ids: List[Optional[int]] = []
        for value in values:
            if value is None:
                ids.append(None)
                continue
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise ValueError(f"{where}: category column {column!r} must hold category names (strings) or "
                                 f"integer ids, got {value!r} ({type(value).__name__})")
            kind = str if isinstance(value, str) else int
            if self.category_kind is None:
                self.category_kind = kind
            elif kind is not self.category_kind:
                raise ValueError(f"{where}: category column {column!r} mixes category names (strings) and integer "
                                 f"ids (got {value!r} after {self._kind_name()}); use one or the other")
            if value not in self.category_ids:
                self.category_ids[value] = len(self.category_ids) + 1 if isinstance(value, str) else value
            ids.append(self.category_ids[value])
        return ids

    def _kind_name(self) -> str:
        return "category names" if self.category_kind is str else "integer ids"

    def categories(self) -> List[Dict[str, Any]]:
        if not self.has_categories:
            return [dict(DEFAULT_CATEGORY)]
        if self.category_kind is str:
            return [{"id": cid, "name": name} for name, cid in self.category_ids.items()]
        return [{"id": cid, "name": str(cid)} for cid in sorted(self.category_ids)]

    def write_image(self, image: Dict[str, Any]) -> None:
        assert self.images_out is not None
        self.images_out.write(("," if self.num_images else "") + _dumps(image))
        self.num_images += 1

    def write_annotation(self, annotation: Dict[str, Any]) -> None:
        assert self.annotations_out is not None
        self.annotations_out.write(("," if self.num_annotations else "") + _dumps(annotation))
        self.num_annotations += 1


def _export_file(fs: fsspec.AbstractFileSystem, path: str, id_column: str, category_column: Optional[str],
                 batch_rows: int, state: _State) -> None:
    url = fs.unstrip_protocol(path)
    with fs.open(path, "rb") as f:
        parquet = pq.ParquetFile(f)
        columns = _check_schema(parquet.schema_arrow, url, id_column, category_column, state.image_path_column)
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
            data = {name: batch.column(name).to_pylist() for name in columns}
            for row in range(batch.num_rows):
                _export_row({name: values[row] for name, values in data.items()}, url, id_column, category_column,
                            state)


def _check_schema(schema: pa.Schema, url: str, id_column: str, category_column: Optional[str],
                  image_path_column: Optional[str]) -> List[str]:
    """The columns to read; ValueError naming every missing column."""
    names = set(schema.names)
    problems = []
    named_by = [(id_column, "--id-column", "input.id_column"), (category_column, "--category-column",
                                                                 "input.category_column"),
                (image_path_column, "--image-column", "input.image_uri_column")]
    missing_config = [f"{column!r} ({flag}: the run's {key})" for column, flag, key in named_by
                      if column is not None and column not in names]
    if missing_config:
        problems.append(f"missing column(s) {', '.join(missing_config)}")
    missing_result = [c for c in _RESULT_COLUMNS if c not in names]
    if missing_result:
        problems.append(f"missing result column(s) {', '.join(repr(c) for c in missing_result)}: "
                        "is this the pipeline's output?")
    if problems:
        raise ValueError(f"{url}: " + "; ".join(problems) + f" (columns present: {', '.join(schema.names)})")
    if category_column is not None:
        category_type = schema.field(category_column).type
        if not (pa.types.is_list(category_type) or pa.types.is_large_list(category_type)
                or pa.types.is_fixed_size_list(category_type)):
            raise ValueError(f"{url}: category column {category_column!r} must hold a list per row (one category "
                             f"per box), got type {category_type}")
    return list(dict.fromkeys(c for c in (id_column, *_RESULT_COLUMNS, category_column, image_path_column) if c))


def _export_row(row: Dict[str, Any], url: str, id_column: str, category_column: Optional[str],
                state: _State) -> None:
    row_id = row[id_column]
    where = f"{url}: row {id_column}={row_id!r}"
    category_ids: Optional[List[Optional[int]]] = None
    if category_column is not None and row[category_column] is not None:
        # Every row's categories, failed rows' included, so that ids do not depend on failures.
        category_ids = state.register_categories(row[category_column], category_column, where)
    size = row[IMAGE_SIZE]
    if row[ERROR] is not None or size is None or row_id is None:
        state.skipped_rows += 1
        return
    if len(size) != 2 or any(s is None or s < 1 for s in size):
        raise ValueError(f"{where}: image_size must be [height, width] > 0, got {size!r}")
    height, width = int(size[0]), int(size[1])
    per_box = {name: row[name] if row[name] is not None else [] for name in PER_BOX_COLUMNS}
    num_boxes = len(per_box[MASKS])
    lengths = {name: len(values) for name, values in per_box.items()}
    if category_column is not None:
        if category_ids is None:  # a null list: every box's category is null
            category_ids = [None] * num_boxes
        lengths[category_column] = len(category_ids)
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{where}: per-box lists differ in length ({', '.join(f'{k}: {v}' for k, v in lengths.items())})")

    source_id = _json_value(row_id)
    image_id = state.num_images + 1
    file_name = row[state.image_path_column] if state.image_path_column else None
    state.write_image({"id": image_id, "file_name": str(file_name if file_name else source_id), "height": height,
                       "width": width, "source_id": source_id})
    for i in range(num_boxes):
        mask, area, score = per_box[MASKS][i], per_box[MASK_AREAS][i], per_box[IOU_SCORES][i]
        category_id = category_ids[i] if category_ids is not None else DEFAULT_CATEGORY["id"]
        if (per_box[BOX_ERRORS][i] is not None or mask is None or area is None or area <= 0
                or score is None or not math.isfinite(score) or category_id is None
                or (state.min_score is not None and score < state.min_score)):
            state.skipped_boxes += 1
            continue
        if mask["size"] is None or list(mask["size"]) != [height, width]:
            raise ValueError(f"{where}: mask {i} has size {mask['size']!r}, not the image_size {[height, width]}")
        bbox = per_box[MASK_BBOXES][i]
        if bbox is None or len(bbox) != 4:
            raise ValueError(f"{where}: mask_bboxes[{i}] must be [x, y, w, h], got {bbox!r}")
        state.write_annotation({
            "id": state.num_annotations + 1,
            "image_id": image_id,
            "category_id": category_id,
            "segmentation": {"size": [height, width], "counts": rle.counts_text(mask["counts"])},
            "area": float(area),
            "bbox": [float(v) for v in bbox],
            "iscrowd": 0,
            "score": float(score),
        })


def _write_output(output_path: str, storage: StorageConfig, info: Dict[str, Any], images_path: str,
                  annotations_path: str, categories: List[Dict[str, Any]]) -> None:
    with open_for_write(output_path, storage) as out:
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


def _json_value(value: Any) -> Any:
    """The row id as a JSON value: strings, integers, booleans and finite floats as they are,
    bytes decoded as UTF-8 (hex if not UTF-8), anything else (dates, decimals, ...) as str."""
    if isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.hex()
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)


__all__ = ["export_coco"]
