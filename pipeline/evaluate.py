"""Mask quality of the pipeline's results against ground-truth masks: mIoU, boundary IoU, COCO mask AP.

`evaluate_masks` compares the result Parquet (see `pipeline.schema`) with a ground-truth Parquet and
returns an `EvaluationResult` (`render_markdown()` gives the report). `python -m pipeline evaluate`
is its command line.

Ground truth: Parquet (file, directory searched recursively for ``*.parquet``, or glob; local or any
fsspec URL) with
- the id column (the run's ``input.id_column``; ids unique per side),
- ``masks``: ``list<struct<size: list<int32> [h, w], counts: string>>``, per box a COCO compressed RLE
  (as ``pycocotools.mask.encode`` writes it, counts as a string), aligned with the boxes the pipeline
  was given for that row: same order, same count. A null mask means "not annotated": that box is not
  evaluated (counted in ``skipped_boxes["null_ground_truth"]``); a null list, that none of the row's
  boxes is annotated;
- optionally the category column (``category_column``): per row a list aligned with the boxes of
  category names (strings) or integer ids. It is read from the ground truth when the ground truth has
  it, else from the predictions (the pipeline passes the input's category column through).

Which boxes are evaluated: box ``i`` of a row whose id is in both inputs, when the prediction row's
``error`` is null, its ``box_errors[i]`` is null, the ground-truth mask ``i`` is not null, its score is
finite and (with a category column) its category is not null. Every other box is counted in
``skipped_boxes`` by reason; rows present on one side only are counted (``predictions_without_ground_truth``,
``ground_truth_without_predictions``, with a few example ids) and not evaluated. Misaligned rows (another
number of masks than the ground truth has) and masks whose size differs from the ground truth's raise
`ValueError`: the ground truth does not belong to this run.

Metrics, per evaluated box (prediction mask ``i`` against ground-truth mask ``i`` of the same id):
- IoU = |G ∩ P| / |G ∪ P| of the binary masks (1.0 when both are empty); mIoU is the mean.
- Boundary IoU (Cheng et al. 2021, "Boundary IoU: Improving Object-Centric Image Segmentation
  Evaluation"), as the reference code and the SAM-HQ evaluation compute it, with dilation ratio 0.02:
  ``d = max(1, round(0.02 * sqrt(h² + w²)))`` of the image, ``B(M) = M - erode(M)`` with ``erode`` the
  erosion by a 3x3 square applied ``d`` times, pixels outside the image counting as background, and
  BIoU = |B(G) ∩ B(P)| / |B(G) ∪ B(P)| (1.0 when both boundaries are empty, which happens exactly when
  both masks are empty). The erosion is computed exactly, without OpenCV: eroding ``d`` times by a 3x3
  square is eroding once by a (2d+1)x(2d+1) square, i.e. ``1 - max_pool(pad(1 - M, d, value=1))``; it is
  evaluated with an integer summed-area table (a pixel survives when its zero-padded window is all
  ones), on the crop of the union's bounding box (exact: outside it both masks are background, as
  outside the image). mBIoU is the mean.
- COCO mask AP (``pycocotools`` COCOeval, iouType ``segm``): the ground truth masks of the evaluated
  boxes are the annotations (iscrowd 0, area and bbox from pycocotools, category from the category
  column or 1), the predicted masks the detections, scored by ``iou_scores``. AP, AP50 and AP75 are
  COCOeval's ``stats[0..2]`` (area "all"), except that the detections per image are not capped at 100
  (``params.maxDets[-1]`` is raised to the largest box count of an image): with at most 100 boxes per
  image the numbers are exactly ``stats[0..2]``. Boxes not evaluated are in neither set (rather than
  counting as misses). COCOeval holds all annotations and detections of the evaluation in memory (as
  compressed RLE, the size of the ``masks`` columns), so this part of the memory grows with the data.
- Per category (with a category column): box count, mIoU, mBIoU and AP (from the same COCOeval's
  per-category precision, equal to a COCOeval restricted to that category).
- The ``worst`` boxes by IoU (ties by BIoU, then id and box index); with ``overlays_dir`` and ``images``,
  one PNG per worst box: the image with the ground truth only in green, the prediction only in red and
  their overlap in yellow, alpha-blended.

Streaming: neither input is loaded whole. The two inputs are joined by id with a grace hash join: one
pass over each, record batch by record batch over only the needed columns, spooling every row into one
of ``num_partitions`` local temporary files (pickle) by a stable hash of its id; then partition by
partition the ground truth's rows are held in a dict and the predictions' rows streamed against it.
Memory is bounded by one ground-truth partition (compressed RLE), plus the COCOeval data above; the
temporary files need about the size of both inputs' mask columns. Masks are decoded one box at a time.
Results do not depend on the partitioning, batch size or file order: means are exactly rounded sums,
and COCO image ids follow the sorted row ids.
"""

import contextlib
import hashlib
import io
import logging
import math
import os
import pickle
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from fsspec.implementations.local import LocalFileSystem
from PIL import Image, ImageOps
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from . import rle
from .config import StorageConfig
from .storage import ParquetInput, filesystem, open_for_write

log = logging.getLogger("pipeline.evaluate")

DILATION_RATIO = 0.02
PREDICTION_COLUMNS = ("masks", "iou_scores", "box_errors", "error")
SKIP_REASONS = {
    "row_error": "prediction row failed (`error` set)",
    "box_error": "box not used by the pipeline (`box_errors` set)",
    "null_ground_truth": "ground-truth mask null",
    "null_prediction": "predicted mask null",
    "non_finite_score": "predicted score null or not finite",
    "null_category": "category null",
}
GT_ONLY_COLOR, PRED_ONLY_COLOR, OVERLAP_COLOR = (0, 200, 0), (230, 0, 0), (255, 215, 0)
OVERLAY_ALPHA = 0.5
_EXAMPLE_IDS = 5  # unmatched ids listed per side


# ---------------------------------------------------------------------------------------------- metrics


def dilation_pixels(height: int, width: int, ratio: float = DILATION_RATIO) -> int:
    """The boundary width d of an image: ``max(1, round(ratio * diagonal))`` (Python's round, as the reference)."""
    return max(1, int(round(ratio * math.sqrt(height * height + width * width))))


def erode(mask: np.ndarray, d: int) -> np.ndarray:
    """Erosion by a (2d+1)x(2d+1) square (= d times by a 3x3 square), pixels outside the array background.

    Exact, in integers: a pixel survives when the (2d+1)² window around it, zero-padded, sums to (2d+1)²,
    read from a summed-area table. This is ``1 - max_pool2d(pad(1 - M, d, value=1), 2d+1, stride 1)``
    (and OpenCV's iterated 3x3 erosion of the reference code) at a cost independent of d.
    """
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}")
    mask = np.asarray(mask, dtype=bool)
    k = 2 * d + 1
    dtype = np.int32 if mask.size < 2**31 - 1 else np.int64
    table = np.pad(mask.astype(dtype), ((d + 1, d), (d + 1, d))).cumsum(axis=0, dtype=dtype).cumsum(axis=1, dtype=dtype)
    window = table[k:, k:] - table[:-k, k:] - table[k:, :-k] + table[:-k, :-k]
    return window == k * k


def boundary(mask: np.ndarray, d: Optional[int] = None) -> np.ndarray:
    """Boundary IoU's inner boundary band: ``mask - erode(mask, d)`` (d: `dilation_pixels` of the mask's shape)."""
    mask = np.asarray(mask, dtype=bool)
    if d is None:
        d = dilation_pixels(*mask.shape)
    return mask & ~erode(mask, d)


def mask_scores(gt: np.ndarray, pred: np.ndarray, d: Optional[int] = None) -> Tuple[float, float]:
    """(IoU, boundary IoU) of two binary masks of one image; d defaults to `dilation_pixels` of their shape.

    Both are 1.0 when both masks are empty. Computed on the crop of the union's bounding box, which
    gives the same result as the full image (outside it both masks are background, as outside the image).
    """
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"masks must be 2-D of one shape, got {gt.shape} and {pred.shape}")
    if d is None:
        d = dilation_pixels(*gt.shape)
    union = gt | pred
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    if rows.size == 0:
        return 1.0, 1.0
    crop = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    gt, pred = gt[crop], pred[crop]
    iou = int(np.count_nonzero(gt & pred)) / int(np.count_nonzero(union[crop]))
    bg, bp = boundary(gt, d), boundary(pred, d)
    b_union = int(np.count_nonzero(bg | bp))
    biou = int(np.count_nonzero(bg & bp)) / b_union if b_union else 1.0
    return iou, biou


# ---------------------------------------------------------------------------------------------- results


@dataclass
class WorstBox:
    """One of the lowest-IoU boxes; `overlay` is the PNG written for it, if any."""

    id: Any
    box_index: int
    category: Any
    iou: float
    boundary_iou: float
    overlay: Optional[str] = None


@dataclass
class CategoryMetrics:
    count: int
    miou: float
    mbiou: float
    ap: float  # NaN when COCOeval has nothing for the category


@dataclass
class EvaluationResult:
    """Numbers of one evaluation (NaN where there were no evaluated boxes)."""

    predictions: str
    ground_truth: str
    miou: float
    mbiou: float
    ap: float
    ap50: float
    ap75: float
    evaluated_boxes: int
    skipped_boxes: Dict[str, int]  # reason (see SKIP_REASONS) -> count
    prediction_rows: int  # rows read, null ids included
    ground_truth_rows: int
    matched_rows: int  # ids on both sides
    predictions_without_ground_truth: int
    ground_truth_without_predictions: int
    error_rows: int  # matched rows whose prediction has `error` set
    null_id_rows: int  # rows with a null id, both inputs together
    unmatched_examples: Dict[str, List[Any]]  # "predictions" / "ground_truth" -> a few unmatched ids
    category_column: Optional[str] = None
    per_category: Dict[Any, CategoryMetrics] = field(default_factory=dict)
    worst: List[WorstBox] = field(default_factory=list)
    dilation_ratio: float = DILATION_RATIO

    def metrics_table(self) -> str:
        """The metrics, row and box counts and the per-category table, as Markdown."""
        lines = ["| metric | value |", "|---|---|"]
        for name, value in (("mIoU", self.miou), ("mBIoU", self.mbiou), ("AP", self.ap), ("AP50", self.ap50),
                            ("AP75", self.ap75)):
            lines.append(f"| {name} | {_fmt(value)} |")
        lines.append(f"| boxes evaluated | {self.evaluated_boxes} |")
        lines += ["", "| rows | count |", "|---|---|",
                  f"| predictions read | {self.prediction_rows} |",
                  f"| ground truth read | {self.ground_truth_rows} |",
                  f"| matched by id | {self.matched_rows} |",
                  f"| predictions without ground truth | {self.predictions_without_ground_truth}"
                  f"{_examples(self.unmatched_examples.get('predictions'))} |",
                  f"| ground truth without predictions | {self.ground_truth_without_predictions}"
                  f"{_examples(self.unmatched_examples.get('ground_truth'))} |",
                  f"| matched, prediction failed (`error`) | {self.error_rows} |",
                  f"| null id (skipped) | {self.null_id_rows} |"]
        skipped = {k: v for k, v in self.skipped_boxes.items() if v}
        if skipped:
            lines += ["", "| boxes skipped | count |", "|---|---|"]
            lines += [f"| {SKIP_REASONS.get(k, k)} | {v} |" for k, v in skipped.items()]
        if self.per_category:
            lines += ["", f"| category (`{self.category_column}`) | boxes | mIoU | mBIoU | AP |", "|---|---|---|---|---|"]
            for category, m in self.per_category.items():
                lines.append(f"| {_md(category)} | {m.count} | {_fmt(m.miou)} | {_fmt(m.mbiou)} | {_fmt(m.ap)} |")
        return "\n".join(lines)

    def render_markdown(self) -> str:
        """The full report: inputs, metrics, counts, per-category table, worst boxes, definitions."""
        parts = ["# Mask quality", "",
                 f"Predictions: `{self.predictions}`  ", f"Ground truth: `{self.ground_truth}`", "",
                 self.metrics_table()]
        if self.worst:
            parts += ["", f"## Worst {len(self.worst)} boxes by IoU", "",
                      "| # | id | box | category | IoU | BIoU | overlay |", "|---|---|---|---|---|---|---|"]
            for rank, w in enumerate(self.worst, 1):
                overlay = f"`{w.overlay}`" if w.overlay else "—"
                parts.append(f"| {rank} | {_md(w.id)} | {w.box_index} | {_md(w.category)} | {_fmt(w.iou)} | "
                             f"{_fmt(w.boundary_iou)} | {overlay} |")
            if any(w.overlay for w in self.worst):
                parts += ["", "Overlays: ground truth only green, prediction only red, overlap yellow."]
        parts += ["", "## Definitions", "",
                  "- IoU: |G ∩ P| / |G ∪ P| per box (prediction mask i vs ground-truth mask i of the same id); "
                  "1 when both are empty. mIoU: mean over the evaluated boxes.",
                  f"- BIoU: Boundary IoU (Cheng et al. 2021) with dilation ratio {self.dilation_ratio}: "
                  "B(M) = M minus M eroded d times by a 3x3 square (outside the image is background), "
                  f"d = max(1, round({self.dilation_ratio} · image diagonal)); |B(G) ∩ B(P)| / |B(G) ∪ B(P)|, "
                  "1 when both masks are empty.",
                  "- AP, AP50, AP75: pycocotools COCOeval (segm, area all) over the evaluated boxes, predictions "
                  "scored by `iou_scores`; detections per image not capped at 100.",
                  "- Evaluated: ids on both sides, prediction `error` and `box_errors[i]` null, ground-truth mask "
                  "non-null, finite score (and non-null category)."]
        return "\n".join(parts) + "\n"


def _fmt(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _md(value: Any) -> str:
    return "—" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def _examples(ids: Optional[List[Any]]) -> str:
    return f" (e.g. {', '.join(_md(repr(i)) for i in ids)})" if ids else ""


# ------------------------------------------------------------------------------------------- evaluation


def evaluate_masks(
    predictions: str,
    ground_truth: str,
    id_column: str = "id",
    category_column: Optional[str] = None,
    worst: int = 20,
    overlays_dir: Optional[str] = None,
    images: Optional[str] = None,
    image_column: str = "image",
    storage: StorageConfig = StorageConfig(),  # noqa: B008 - a frozen-in-practice default, never mutated
    batch_rows: int = 256,
    num_partitions: int = 16,
    temp_dir: Optional[str] = None,
) -> EvaluationResult:
    """Evaluate the pipeline's masks against ground truth (see the module docstring for formats and metrics).

    Args:
        predictions: the run's output Parquet (file, directory or glob; local or fsspec URL).
        ground_truth: the ground-truth Parquet (same forms).
        id_column: the id column of both (the run's ``input.id_column``).
        category_column: per-box categories (from the ground truth if it has the column, else from the
            predictions); None: one category, no per-category table.
        worst: how many lowest-IoU boxes to list.
        overlays_dir: directory (local or fsspec URL) for one PNG per worst box; needs ``images``.
        images: Parquet with the id column and ``image_column`` (encoded image bytes, or URIs read through
            fsspec), e.g. the run's input; read only for the worst boxes' rows.
        storage: object-store settings for every path.
        batch_rows: rows per Parquet record batch.
        num_partitions: temporary partitions of the hash join (memory: one ground-truth partition).
        temp_dir: where the partitions are spooled (default: the system's temporary directory).

    Raises:
        ValueError: missing columns, duplicate ids, misaligned rows or mask sizes, bad categories,
            ``overlays_dir`` without ``images`` or the reverse, bad arguments.
        FileNotFoundError: no Parquet files at an input path.
    """
    if batch_rows < 1 or num_partitions < 1 or worst < 0:
        raise ValueError(f"batch_rows and num_partitions must be >= 1 and worst >= 0, got {batch_rows}, "
                         f"{num_partitions}, {worst}")
    if (overlays_dir is None) != (images is None):
        raise ValueError("overlays_dir and images go together: overlays need the images")
    gt_files = ParquetInput(ground_truth, storage, "ground truth")
    pred_files = ParquetInput(predictions, storage, "predictions")
    gt_category = pred_category = None
    if category_column is not None:
        if category_column in gt_files.first_schema().names:
            gt_category = category_column
        elif category_column in pred_files.first_schema().names:
            pred_category = category_column
        else:
            raise ValueError(f"category column {category_column!r} is in neither the ground truth "
                             f"({ground_truth}) nor the predictions ({predictions})")
    state = _State(category_column is not None, worst)
    with tempfile.TemporaryDirectory(prefix="evaluate_", dir=temp_dir) as tmp:
        gt_spool = _Spool(tmp, "gt", num_partitions)
        with gt_spool:
            for row in gt_files.rows(id_column, ["masks"], gt_category, batch_rows):
                state.ground_truth_rows += 1
                if row[0] is None:
                    state.null_id_rows += 1
                else:
                    gt_spool.write(row)
        pred_spool = _Spool(tmp, "pred", num_partitions)
        with pred_spool:
            for row in pred_files.rows(id_column, list(PREDICTION_COLUMNS), pred_category, batch_rows):
                state.prediction_rows += 1
                if row[0] is None:
                    state.null_id_rows += 1
                else:
                    pred_spool.write(row)
        log.info("spooled %d prediction and %d ground-truth rows into %d partitions", state.prediction_rows,
                 state.ground_truth_rows, num_partitions)
        for part in range(num_partitions):
            _join_partition(gt_spool, pred_spool, part, id_column, state)
            log.debug("evaluated partition %d/%d (%d boxes so far)", part + 1, num_partitions, state.boxes)
    result = state.result(predictions, ground_truth, category_column)
    if overlays_dir is not None and images is not None and state.worst_boxes():
        _write_overlays(state.worst_boxes(), images, id_column, image_column, overlays_dir, storage, batch_rows)
    return result


def write_report(result: EvaluationResult, path: str, storage: StorageConfig = StorageConfig()) -> None:  # noqa: B008
    """Write `result.render_markdown()` to a local path or fsspec URL (local parents are created)."""
    _write_bytes(path, result.render_markdown().encode("utf-8"), storage)


def _id_key(value: Any) -> bytes:
    """A stable byte key of an id: equal ids of one type give equal keys in every process."""
    payload = value if isinstance(value, bytes) else value.encode() if isinstance(value, str) else repr(value).encode()
    return type(value).__name__.encode() + b":" + payload


def stable_hash(value: Any) -> int:
    """A 64-bit hash of an id that is the same in every process and run (unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(_id_key(value), digest_size=8).digest(), "little")


class _Spool:
    """`num_partitions` temporary pickle files of rows, by a stable hash of the row id."""

    def __init__(self, directory: str, name: str, num_partitions: int) -> None:
        self.paths = [os.path.join(directory, f"{name}-{i:04d}.pkl") for i in range(num_partitions)]
        self.files: List[Any] = []

    def __enter__(self) -> "_Spool":
        self.files = [open(p, "wb") for p in self.paths]  # closed in __exit__
        return self

    def __exit__(self, *exc: Any) -> None:
        for f in self.files:
            f.close()
        self.files = []

    def write(self, row: Tuple[Any, ...]) -> None:
        pickle.dump(row, self.files[stable_hash(row[0]) % len(self.files)], pickle.HIGHEST_PROTOCOL)

    def read(self, part: int) -> Iterator[Tuple[Any, ...]]:
        with open(self.paths[part], "rb") as f:
            while True:
                try:
                    yield pickle.load(f)  # our own spool files, written above
                except EOFError:
                    return


class _ExactSum:
    """Correctly rounded float sum (Shewchuk's partials, as `math.fsum`): independent of the order of adds."""

    def __init__(self) -> None:
        self.partials: List[float] = []

    def add(self, x: float) -> None:
        i = 0
        for y in self.partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                self.partials[i] = lo
                i += 1
            x = hi
        self.partials[i:] = [x]

    def mean(self, count: int) -> float:
        return math.fsum(self.partials) / count if count else float("nan")


@dataclass
class _Accumulator:
    count: int = 0
    iou: _ExactSum = field(default_factory=_ExactSum)
    biou: _ExactSum = field(default_factory=_ExactSum)

    def add(self, iou: float, biou: float) -> None:
        self.count += 1
        self.iou.add(iou)
        self.biou.add(biou)


@dataclass
class _Image:
    """One matched row with evaluated boxes, for COCOeval: [(category, gt RLE, pred RLE, score)]."""

    key: bytes
    height: int
    width: int
    boxes: List[Tuple[Any, Dict[str, Any], Dict[str, Any], float]] = field(default_factory=list)


class _State:
    def __init__(self, has_categories: bool, worst: int) -> None:
        self.has_categories = has_categories
        self.num_worst = worst
        self.prediction_rows = self.ground_truth_rows = self.matched_rows = 0
        self.pred_only = self.gt_only = self.error_rows = self.null_id_rows = 0
        self.unmatched: Dict[str, List[Tuple[bytes, Any]]] = {"predictions": [], "ground_truth": []}
        self.skipped = dict.fromkeys(SKIP_REASONS, 0)
        self.total = _Accumulator()
        self.categories: Dict[Any, _Accumulator] = {}
        self.images: List[_Image] = []
        # ((iou, biou, id key, box index), WorstBox, gt RLE, pred RLE), trimmed to the lowest `num_worst`
        self.worst: List[Tuple[Tuple[float, float, bytes, int], WorstBox, Dict[str, Any], Dict[str, Any]]] = []

    @property
    def boxes(self) -> int:
        return self.total.count

    def note_unmatched(self, side: str, key: bytes, row_id: Any) -> None:
        examples = self.unmatched[side]
        examples.append((key, row_id))
        if len(examples) > 4 * _EXAMPLE_IDS:
            examples.sort(key=lambda e: e[0])
            del examples[_EXAMPLE_IDS:]

    def add_box(self, image: _Image, row_id: Any, index: int, category: Any, gt: Dict[str, Any],
                pred: Dict[str, Any], score: float, iou: float, biou: float) -> None:
        self.total.add(iou, biou)
        if self.has_categories:
            self.categories.setdefault(category, _Accumulator()).add(iou, biou)
        image.boxes.append((category, gt, pred, score))
        if self.num_worst:
            self.worst.append(((iou, biou, image.key, index), WorstBox(row_id, index, category, iou, biou), gt, pred))
            if len(self.worst) > max(4 * self.num_worst, 256):
                self._trim_worst()

    def _trim_worst(self) -> None:
        self.worst.sort(key=lambda w: w[0])
        del self.worst[self.num_worst:]

    def worst_boxes(self) -> List[Tuple[WorstBox, Dict[str, Any], Dict[str, Any]]]:
        self._trim_worst()
        return [(w, gt, pred) for _, w, gt, pred in self.worst]

    def result(self, predictions: str, ground_truth: str, category_column: Optional[str]) -> EvaluationResult:
        ap, category_ap = _coco_ap(self.images, self.has_categories)
        per_category = {
            c: CategoryMetrics(acc.count, acc.iou.mean(acc.count), acc.biou.mean(acc.count), category_ap.get(c, math.nan))
            for c, acc in sorted(self.categories.items(), key=lambda kv: _category_order(kv[0]))
        }
        examples = {side: [row_id for _, row_id in sorted(ex, key=lambda e: e[0])[:_EXAMPLE_IDS]]
                    for side, ex in self.unmatched.items()}
        return EvaluationResult(
            predictions=predictions, ground_truth=ground_truth,
            miou=self.total.iou.mean(self.total.count), mbiou=self.total.biou.mean(self.total.count),
            ap=ap[0], ap50=ap[1], ap75=ap[2], evaluated_boxes=self.total.count, skipped_boxes=dict(self.skipped),
            prediction_rows=self.prediction_rows, ground_truth_rows=self.ground_truth_rows,
            matched_rows=self.matched_rows, predictions_without_ground_truth=self.pred_only,
            ground_truth_without_predictions=self.gt_only, error_rows=self.error_rows, null_id_rows=self.null_id_rows,
            unmatched_examples=examples, category_column=category_column, per_category=per_category,
            worst=[w for w, _, _ in self.worst_boxes()],
        )


def _category_order(category: Any) -> Tuple[int, Any]:
    return (0, category) if isinstance(category, int) else (1, str(category))


def _join_partition(gt_spool: _Spool, pred_spool: _Spool, part: int, id_column: str, state: _State) -> None:
    gt_rows: Dict[bytes, Tuple[Any, ...]] = {}
    for row in gt_spool.read(part):
        key = _id_key(row[0])
        if key in gt_rows:
            raise ValueError(f"ground truth: duplicate {id_column} {row[0]!r}")
        gt_rows[key] = row
    seen = set()
    for pred in pred_spool.read(part):
        key = _id_key(pred[0])
        if key in seen:
            raise ValueError(f"predictions: duplicate {id_column} {pred[0]!r}")
        seen.add(key)
        gt = gt_rows.pop(key, None)
        if gt is None:
            state.pred_only += 1
            state.note_unmatched("predictions", key, pred[0])
        else:
            state.matched_rows += 1
            _evaluate_row(key, gt, pred, id_column, state)
    for key, gt in gt_rows.items():
        state.gt_only += 1
        state.note_unmatched("ground_truth", key, gt[0])


def _evaluate_row(key: bytes, gt: Tuple[Any, ...], pred: Tuple[Any, ...], id_column: str, state: _State) -> None:
    row_id, gt_masks, gt_categories = gt
    _, pred_masks, scores, box_errors, error, pred_categories = pred
    where = f"row {id_column}={row_id!r}"
    categories = gt_categories if gt_categories is not None else pred_categories
    if error is not None:
        state.error_rows += 1
        state.skipped["row_error"] += len(gt_masks or pred_masks or [])
        return
    pred_masks, scores, box_errors = pred_masks or [], scores or [], box_errors or []
    num_boxes = len(pred_masks)
    if gt_masks is None:
        gt_masks = [None] * num_boxes
    lengths = {"ground truth masks": len(gt_masks), "predicted masks": num_boxes, "iou_scores": len(scores),
               "box_errors": len(box_errors)}
    if state.has_categories:
        if categories is None:
            categories = [None] * num_boxes
        lengths["categories"] = len(categories)
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{where}: per-box lists differ in length ({', '.join(f'{k}: {v}' for k, v in lengths.items())});"
                         " the ground truth must be aligned with the boxes given to the pipeline")
    image: Optional[_Image] = None
    for i in range(num_boxes):
        category = categories[i] if state.has_categories else None
        score = scores[i]
        reason = ("box_error" if box_errors[i] is not None else "null_ground_truth" if gt_masks[i] is None
                  else "null_prediction" if pred_masks[i] is None
                  else "non_finite_score" if score is None or not math.isfinite(score)
                  else "null_category" if state.has_categories and category is None else None)
        if reason is not None:
            state.skipped[reason] += 1
            continue
        if state.has_categories and (isinstance(category, bool) or not isinstance(category, (str, int))):
            raise ValueError(f"{where}: categories must be names (strings) or integer ids, got {category!r}")
        gt_rle = rle.for_pycocotools(gt_masks[i], where, f"ground truth mask {i}")
        pred_rle = rle.for_pycocotools(pred_masks[i], where, f"mask {i}")
        if gt_rle["size"] != pred_rle["size"]:
            raise ValueError(f"{where}: mask {i} has size {pred_rle['size']}, the ground truth {gt_rle['size']}")
        height, width = gt_rle["size"]
        if image is None:
            image = _Image(key, height, width)
            state.images.append(image)
        elif [height, width] != [image.height, image.width]:
            raise ValueError(f"{where}: masks of one row have different sizes ({[height, width]} and "
                             f"{[image.height, image.width]})")
        iou, biou = mask_scores(mask_utils.decode(gt_rle), mask_utils.decode(pred_rle), dilation_pixels(height, width))
        state.add_box(image, row_id, i, category, gt_rle, pred_rle, float(score), iou, biou)


def _coco_ap(images: Sequence[_Image], has_categories: bool) -> Tuple[Tuple[float, float, float], Dict[Any, float]]:
    """(AP, AP50, AP75) and per-category AP of COCOeval over the evaluated boxes."""
    nan3 = (math.nan, math.nan, math.nan)
    if not images:
        return nan3, {}
    ordered = sorted(images, key=lambda im: im.key)  # image ids independent of the partitioning
    categories = sorted({c for im in ordered for c, _, _, _ in im.boxes}, key=_category_order)
    category_ids = {c: i + 1 for i, c in enumerate(categories)}
    coco_images, gts, dets = [], [], []
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


# --------------------------------------------------------------------------------------------- overlays


def _write_overlays(worst: List[Tuple[WorstBox, Dict[str, Any], Dict[str, Any]]], images: str, id_column: str,
                    image_column: str, overlays_dir: str, storage: StorageConfig, batch_rows: int) -> None:
    """One PNG per worst box whose row is in `images`; sets `WorstBox.overlay` (the objects of the result)."""
    wanted: Dict[bytes, List[int]] = {}
    for rank, (w, _, _) in enumerate(worst):
        wanted.setdefault(_id_key(w.id), []).append(rank)
    source = ParquetInput(images, storage, "images")
    out_fs, out_base = filesystem(overlays_dir, storage)
    if isinstance(out_fs, LocalFileSystem):
        os.makedirs(out_base, exist_ok=True)
    for row_id, data, _ in source.rows(id_column, [image_column], None, max(1, min(batch_rows, 16))):
        ranks = wanted.pop(_id_key(row_id), None) if row_id is not None else None
        if ranks is None or data is None:
            continue
        if isinstance(data, str):  # a URI
            fs, path = filesystem(data, storage)
            with fs.open(path, "rb") as f:
                data = f.read()
        image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
        pixels = np.asarray(image)
        for rank in ranks:
            w, gt, pred = worst[rank]
            gt_mask, pred_mask = mask_utils.decode(gt).astype(bool), mask_utils.decode(pred).astype(bool)
            if gt_mask.shape != pixels.shape[:2]:
                log.warning("overlay of %r box %d skipped: image is %s, masks %s", w.id, w.box_index,
                            list(pixels.shape[:2]), list(gt_mask.shape))
                continue
            name = f"worst_{rank + 1:03d}_{_safe_name(w.id)}_box{w.box_index}.png"
            buffer = io.BytesIO()
            Image.fromarray(overlay(pixels, gt_mask, pred_mask)).save(buffer, format="PNG")
            url = (os.path.join(overlays_dir, name) if isinstance(out_fs, LocalFileSystem)
                   else overlays_dir.rstrip("/") + "/" + name)
            _write_bytes(url, buffer.getvalue(), storage)
            w.overlay = url
        if not wanted:
            break


def overlay(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """RGB uint8 image with the ground truth only in green, the prediction only in red, both in yellow."""
    canvas = image.astype(np.float32)
    for region, color in ((gt & ~pred, GT_ONLY_COLOR), (pred & ~gt, PRED_ONLY_COLOR), (gt & pred, OVERLAP_COLOR)):
        canvas[region] = (1 - alpha) * canvas[region] + alpha * np.asarray(color, np.float32)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def _safe_name(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(value))[:60] or "id"


def _write_bytes(url: str, data: bytes, storage: StorageConfig) -> None:
    with open_for_write(url, storage) as f:
        f.write(data)


__all__ = ["EvaluationResult", "CategoryMetrics", "WorstBox", "evaluate_masks", "write_report", "mask_scores",
           "boundary", "erode", "dilation_pixels", "overlay"]
