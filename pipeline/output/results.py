"""Reading a job's results for the exports and the review page: one streaming reader of the
result Parquet (see `pipeline.schema`) that yields each exportable image with its exportable
masks, and keeps the counts and the category table every output format shares.

`ResultReader.images()` goes file by file, record batch by record batch, reading only the
columns it needs, so memory is bounded by one record batch and the category table, never by
the size of the output.
"""

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import pyarrow as pa
import pyarrow.parquet as pq

from ..config import JobConfig
from ..ids import id_text
from ..masks import rle
from ..schema import (
    BOX_ERRORS,
    ERROR,
    FOUND_BY,
    FOUND_BY_EVERYTHING,
    IMAGE_SIZE,
    IOU_SCORES,
    MASK_AREAS,
    MASK_BBOXES,
    MASKS,
    PER_MASK_COLUMNS,
    POINT_COORDS,
    PROMPT_INDEX,
    STABILITY_SCORES,
    error_kind,
)
from .handle import JobOutput
from .layout import JOB_FILE
from .marks import MarkFilter

# Result columns every reader needs (besides the id, category and image-path columns); outputs
# written before prompt_index existed (or rows where it is null) have one mask per prompt, and
# those written before segment-everything existed have no provenance columns.
_RESULT_COLUMNS = (IMAGE_SIZE, *(c for c in PER_MASK_COLUMNS if c != PROMPT_INDEX), BOX_ERRORS, ERROR)
_OPTIONAL_COLUMNS = (PROMPT_INDEX, FOUND_BY, POINT_COORDS)
DEFAULT_CATEGORY_NAME = "object"  # output.default_category's default
_DEFAULT_CATEGORY_ID = 1  # without a category column, a name's id


@dataclass(frozen=True)
class ResultColumns:
    """Which input columns of the job the results carry: its id, its per-box categories (or
    None) and its image URIs or paths (or None); and the category of masks without one (the
    job's output.default_category)."""

    id_column: str
    category_column: Optional[str] = None
    image_column: Optional[str] = None
    default_category: Union[str, int] = DEFAULT_CATEGORY_NAME


def job_columns(output: JobOutput, config: Optional[JobConfig] = None, id_column: Optional[str] = None,
                category_column: Optional[str] = None, image_column: Optional[str] = None) -> ResultColumns:
    """The result columns: those given, else the job's (`config`, else the description the
    job wrote with its results). ValueError when no id column is known."""
    if config is None:
        description = output.read_description()
        config = description.config if description is not None else None
    id_column = id_column or (config.input.id_column if config else None)
    if id_column is None:
        raise ValueError(f"--id-column: {output.url} has no {JOB_FILE} (written by the job) and no --config was "
                         "given: name the id column (the job's input.id_column)")
    return ResultColumns(id_column, category_column or (config.input.category_column if config else None),
                         image_column or (config.input.image_uri_column if config else None),
                         config.output.default_category if config else DEFAULT_CATEGORY_NAME)


@dataclass
class ResultMask:
    """One exportable mask of an image."""

    box_index: Optional[int]  # its prompt's place among the row's input prompts (None: segment-everything's)
    rle: rle.Rle  # {"size": [h, w], "counts": str}
    score: float  # the model's predicted IoU
    stability: float  # SAM's stability score
    area: int
    bbox: List[float]  # COCO xywh
    category_id: int
    mask_index: int  # its place among the row's masks: box_index, unless model.multimask_keep: all
    found_by: Optional[str] = None  # what found it (`schema.FOUND_BY`); None in outputs that do not say
    point: Optional[List[float]] = None  # segment-everything's: [x, y] of the point that found it


@dataclass
class ResultImage:
    """One row that succeeded, with the masks that pass the reader's filters."""

    index: int  # 1-based running index over the exported images
    row_id: Any
    file_name: str  # the image's URI or path (with an image column), else str(id)
    height: int
    width: int
    masks: List[ResultMask] = field(default_factory=list)
    uri: Optional[str] = None  # the image column's value; None without one or when null (never the id)


class ResultReader:
    """Streams a job's result files as `ResultImage`s.

    Skipped and counted: rows that failed (``error`` non-null, no ``image_size``), have a null id
    or per-mask or per-prompt lists of different lengths, or a ``prompt_index`` naming no
    prompt (it is null only for segment-everything's masks) (``skipped_rows``; their masks are
    not counted; the failed ones also per error kind in ``failed_rows``,
    `pipeline.schema.error_kind`, the misaligned ones as "per_box"), and masks whose prompt has
    a ``box_errors`` entry, empty masks, non-finite scores, null categories, scores below
    ``min_score`` or stabilities below ``min_stability`` (``skipped_boxes``). A mask takes its
    prompt's category; a segment-everything mask, and every mask without a category column,
    the columns' ``default_category``. With `marks` (whose "box" is a mask's place among its
    row's masks), a review's marks leave out masks too (``marked_out_boxes``) and, for
    `--only`, whole images (``unmarked_images``). The counts are attributes that `images()`
    keeps up to date: ``num_images``, ``num_masks`` (exported), ``skipped_rows``,
    ``skipped_boxes``.

    Categories: without a category column every mask is the default category: ``{"id": 1,
    "name": name}`` for a name, ``{"id": id, "name": str(id)}`` for an integer id. With string
    categories, ids 1, 2, ... in order of first appearance over all rows (failed rows and
    skipped boxes included, so that the ids do not depend on which images failed; the default
    category is registered where a segment-everything mask first needs it); with integer
    categories, the ids themselves, named ``str(id)``. A column mixing the two (the default
    category included) is an error.

    Raises ValueError (from `images()`, naming the file and row) for missing columns, masks whose
    size is not the row's image_size, and malformed image_size or bbox values.
    """

    def __init__(self, output: JobOutput, columns: ResultColumns, min_score: Optional[float] = None,
                 min_stability: Optional[float] = None, marks: Optional[MarkFilter] = None,
                 batch_rows: int = 256) -> None:
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        for name, value in (("min_score", min_score), ("min_stability", min_stability)):
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        self.output = output
        self.columns = columns
        self.min_score = min_score
        self.min_stability = min_stability
        self.marks = marks
        self.batch_rows = batch_rows
        self.files = output.result_files().files
        self.num_images = 0
        self.num_masks = 0
        self.skipped_rows = 0
        self.failed_rows: Dict[str, int] = {}  # error kind -> rows, of the skipped rows that have an error
        self.skipped_boxes = 0
        self.marked_out_boxes = 0
        self.unmarked_images = 0
        self._category_kind: Optional[type] = None  # str or int, fixed by the first non-null value
        self._category_ids: Dict[Any, int] = {}  # name -> id (strings) or id -> id (integers)

    def images(self) -> Iterator[ResultImage]:
        """Every exportable image, in file order then row order."""
        fs = self.output.location.fs
        for path in self.files:
            url = self.output.url_of(path)
            with fs.open(path, "rb") as f:
                parquet = pq.ParquetFile(f)
                names = self._check_schema(parquet.schema_arrow, url)
                for batch in parquet.iter_batches(batch_size=self.batch_rows, columns=names):
                    data = {name: batch.column(name).to_pylist() for name in names}
                    for row in range(batch.num_rows):
                        image = self._image({name: values[row] for name, values in data.items()}, url)
                        if image is not None:
                            yield image

    def categories(self) -> List[Dict[str, Any]]:
        """The category table, `[{"id", "name"}]`, of the rows read so far."""
        if self.columns.category_column is None:
            default = self.columns.default_category
            return [{"id": self._default_id(), "name": str(default)}]
        if self._category_kind is str:
            return [{"id": cid, "name": name} for name, cid in self._category_ids.items()]
        return [{"id": cid, "name": str(cid)} for cid in sorted(self._category_ids)]

    def _default_id(self) -> int:
        default = self.columns.default_category
        return default if isinstance(default, int) else _DEFAULT_CATEGORY_ID

    @property
    def integer_categories(self) -> bool:
        """Whether the category column holds integer ids (rather than names), as far as read."""
        return self._category_kind is int

    def _check_schema(self, schema: pa.Schema, url: str) -> List[str]:
        """The columns to read; ValueError naming every missing column."""
        names = set(schema.names)
        columns = self.columns
        problems = []
        named_by = [(columns.id_column, "--id-column", "input.id_column"),
                    (columns.category_column, "--category-column", "input.category_column"),
                    (columns.image_column, "--image-column", "input.image_uri_column")]
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
        if columns.category_column is not None:
            category_type = schema.field(columns.category_column).type
            if not (pa.types.is_list(category_type) or pa.types.is_large_list(category_type)
                    or pa.types.is_fixed_size_list(category_type)):
                raise ValueError(f"{url}: category column {columns.category_column!r} must hold a list per row (one "
                                 f"category per box), got type {category_type}")
        optional = [c for c in _OPTIONAL_COLUMNS if c in names]
        wanted = (columns.id_column, *_RESULT_COLUMNS, *optional, columns.category_column, columns.image_column)
        return list(dict.fromkeys(c for c in wanted if c))

    def _register_categories(self, values: Sequence[Any], where: str) -> List[Optional[int]]:
        """Category ids of one row's values (None where the value is null)."""
        column = self.columns.category_column
        ids: List[Optional[int]] = []
        for value in values:
            if value is None:
                ids.append(None)
                continue
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise ValueError(f"{where}: category column {column!r} must hold category names (strings) or "
                                 f"integer ids, got {value!r} ({type(value).__name__})")
            kind = str if isinstance(value, str) else int
            if self._category_kind is None:
                self._category_kind = kind
            elif kind is not self._category_kind:
                before = "category names" if self._category_kind is str else "integer ids"
                raise ValueError(f"{where}: category column {column!r} mixes category names (strings) and integer "
                                 f"ids (got {value!r} after {before}); use one or the other")
            if value not in self._category_ids:
                self._category_ids[value] = len(self._category_ids) + 1 if isinstance(value, str) else value
            ids.append(self._category_ids[value])
        return ids

    def _image(self, row: Dict[str, Any], url: str) -> Optional[ResultImage]:
        columns = self.columns
        row_id = row[columns.id_column]
        where = f"{url}: row {columns.id_column}={row_id!r}"
        category_ids: Optional[List[Optional[int]]] = None
        if columns.category_column is not None and row[columns.category_column] is not None:
            # Every row's categories, failed rows' included, so that ids do not depend on failures.
            category_ids = self._register_categories(row[columns.category_column], where)
        size = row[IMAGE_SIZE]
        if row[ERROR] is not None or size is None or row_id is None:
            self.skipped_rows += 1
            kind = error_kind(row[ERROR])
            if kind is not None:
                self.failed_rows[kind] = self.failed_rows.get(kind, 0) + 1
            return None
        if len(size) != 2 or any(s is None or s < 1 for s in size):
            raise ValueError(f"{where}: image_size must be [height, width] > 0, got {size!r}")
        height, width = int(size[0]), int(size[1])
        per_mask = {name: row[name] if row.get(name) is not None else [] for name in PER_MASK_COLUMNS}
        box_errors = row[BOX_ERRORS] if row[BOX_ERRORS] is not None else []
        num_prompts, num_masks = len(box_errors), len(per_mask[MASKS])
        if row.get(PROMPT_INDEX) is None:  # one mask per prompt
            per_mask[PROMPT_INDEX] = list(range(num_masks))
        mask_lengths = {len(values) for values in per_mask.values()}
        prompt_lengths = {num_prompts}
        if columns.category_column is not None:
            if category_ids is None:  # a null list: every prompt's category is null
                category_ids = [None] * num_prompts
            prompt_lengths.add(len(category_ids))
        found_by = row.get(FOUND_BY) or [None] * num_masks
        points = row.get(POINT_COORDS) or [None] * num_masks
        mask_lengths |= {len(found_by), len(points)}
        prompts = per_mask[PROMPT_INDEX]
        if (len(mask_lengths) > 1 or len(prompt_lengths) > 1
                or any(not 0 <= p < num_prompts if p is not None else found_by[i] != FOUND_BY_EVERYTHING
                       for i, p in enumerate(prompts))):  # the row is unusable, not the output
            self.skipped_rows += 1
            self.failed_rows["per_box"] = self.failed_rows.get("per_box", 0) + 1
            return None

        text = id_text(row_id)
        if self.marks is not None and not self.marks.keeps_image(text):
            self.unmarked_images += 1
            return None
        uri = row[columns.image_column] if columns.image_column else None
        uri = str(uri) if uri else None
        image = ResultImage(self.num_images + 1, row_id, uri or text, height, width, uri=uri)
        self.num_images += 1
        for i in range(num_masks):
            mask, area, score = per_mask[MASKS][i], per_mask[MASK_AREAS][i], per_mask[IOU_SCORES][i]
            stability, prompt = per_mask[STABILITY_SCORES][i], prompts[i]
            if prompt is None:
                category_id = self._default_category_id(where)
            else:
                category_id = category_ids[prompt] if category_ids is not None else self._default_id()
            marked_in = self.marks is None or self.marks.keeps(text, i)
            if ((prompt is not None and box_errors[prompt] is not None) or mask is None or area is None or area <= 0
                    or score is None or not math.isfinite(score) or category_id is None
                    or (self.min_score is not None and score < self.min_score)
                    or (self.min_stability is not None and not (stability is not None
                                                                and stability >= self.min_stability))):
                self.skipped_boxes += 1
                continue
            if not marked_in:
                self.marked_out_boxes += 1
                continue
            if mask["size"] is None or list(mask["size"]) != [height, width]:
                raise ValueError(f"{where}: mask {i} has size {mask['size']!r}, not the image_size {[height, width]}")
            bbox = per_mask[MASK_BBOXES][i]
            if bbox is None or len(bbox) != 4:
                raise ValueError(f"{where}: mask_bboxes[{i}] must be [x, y, w, h], got {bbox!r}")
            image.masks.append(ResultMask(
                box_index=prompt, rle={"size": [height, width], "counts": rle.counts_text(mask["counts"])},
                score=float(score), stability=float("nan") if stability is None else float(stability), area=int(area),
                bbox=[float(v) for v in bbox], category_id=category_id, mask_index=i, found_by=found_by[i],
                point=points[i]))
            self.num_masks += 1
        return image

    def _default_category_id(self, where: str) -> Optional[int]:
        """The category id of a segment-everything mask: the default category's."""
        if self.columns.category_column is None:
            return self._default_id()
        return self._register_categories([self.columns.default_category], f"{where} (output.default_category)")[0]


__all__ = ["DEFAULT_CATEGORY_NAME", "ResultColumns", "ResultImage", "ResultMask", "ResultReader", "job_columns"]
