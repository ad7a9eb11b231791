"""`evaluate_masks`: the evaluation, from the two inputs to its result (see the package
docstring for formats and metrics)."""


import logging
import math
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from ..config import StorageConfig
from ..ids import id_key
from ..masks import rle
from ..masks.metrics import Accumulator, dilation_pixels, mask_scores
from ..output import JobOutput
from ..schema import BOX_ERRORS, ERROR, FOUND_BY, GROUND_TRUTH_MASKS, IOU_SCORES, MASKS, PROMPT_INDEX
from ..storage import Location, ParquetInput
from .coco_ap import EvaluatedImage, category_order, coco_ap
from .everything import EverythingEvaluation, split_masks
from .join import Spool
from .overlays import write_overlays
from .report import SKIP_REASONS, CategoryMetrics, EvaluationResult, WorstBox

log = logging.getLogger("pipeline.evaluation")

PREDICTION_COLUMNS = (MASKS, IOU_SCORES, BOX_ERRORS, ERROR)
_EXAMPLE_IDS = 5  # unmatched ids listed per side


def evaluate_masks(
    predictions: str,
    ground_truth: str,
    id_column: str = "id",
    category_column: Optional[str] = None,
    worst: int = 20,
    overlays_dir: Optional[str] = None,
    images: Optional[str] = None,
    image_column: str = "image",
    storage: Optional[StorageConfig] = None,
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
    gt_files = ParquetInput(Location(ground_truth, storage), "ground truth")
    predicted = JobOutput(predictions, storage)
    try:
        listed = predicted.result_files().files
    except FileNotFoundError as e:
        raise FileNotFoundError(f"predictions: {e}") from None
    pred_files = ParquetInput(predicted.location, "predictions", listed)
    gt_category = pred_category = None
    if category_column is not None:
        if category_column in gt_files.first_schema().names:
            gt_category = category_column
        elif category_column in pred_files.first_schema().names:
            pred_category = category_column
        else:
            raise ValueError(f"category column {category_column!r} is in neither the ground truth "
                             f"({ground_truth}) nor the predictions ({predictions})")
    description = predicted.read_description()
    state = _State(category_column is not None, worst,
                   EverythingEvaluation(description.config.everything if description is not None else None))
    with tempfile.TemporaryDirectory(prefix="evaluate_", dir=temp_dir) as tmp:
        gt_spool = Spool(tmp, "gt", num_partitions)
        with gt_spool:
            for row in gt_files.rows(id_column, [GROUND_TRUTH_MASKS], gt_category, batch_rows):
                state.ground_truth_rows += 1
                if row[0] is None:
                    state.null_id_rows += 1
                else:
                    gt_spool.write(row)
        pred_spool = Spool(tmp, "pred", num_partitions)
        with pred_spool:
            # Outputs written before prompt_index existed have one mask per box, those before
            # found_by no segment-everything masks.
            for row in pred_files.rows(id_column, list(PREDICTION_COLUMNS), pred_category, batch_rows,
                                       optional=[PROMPT_INDEX, FOUND_BY]):
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
    result = state.result(predictions, ground_truth, category_column, id_column)
    if overlays_dir is not None and images is not None and state.worst_boxes():
        write_overlays(state.worst_boxes(), Location(images, storage), id_column, image_column,
                       Location(overlays_dir, storage), batch_rows)
    return result


class _State:
    def __init__(self, has_categories: bool, worst: int, everything: EverythingEvaluation) -> None:
        self.has_categories = has_categories
        self.num_worst = worst
        self.everything = everything
        self.prediction_rows = self.ground_truth_rows = self.matched_rows = self.prompt_rows = 0
        self.pred_only = self.gt_only = self.error_rows = self.null_id_rows = 0
        self.unmatched: Dict[str, List[Tuple[bytes, Any]]] = {"predictions": [], "ground_truth": []}
        self.skipped = dict.fromkeys(SKIP_REASONS, 0)
        self.total = Accumulator()
        self.categories: Dict[Any, Accumulator] = {}
        self.images: List[EvaluatedImage] = []
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

    def add_box(self, image: EvaluatedImage, row_id: Any, index: int, category: Any, gt: Dict[str, Any],
                pred: Dict[str, Any], score: float, iou: float, biou: float) -> None:
        self.total.add(iou, biou)
        if self.has_categories:
            self.categories.setdefault(category, Accumulator()).add(iou, biou)
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

    def result(self, predictions: str, ground_truth: str, category_column: Optional[str], id_column: str
               ) -> EvaluationResult:
        ap, category_ap = coco_ap(self.images, self.has_categories)
        per_category = {
            c: CategoryMetrics(acc.count, acc.iou.mean(acc.count), acc.biou.mean(acc.count), category_ap.get(c, math.nan))
            for c, acc in sorted(self.categories.items(), key=lambda kv: category_order(kv[0]))
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
            worst=[w for w, _, _ in self.worst_boxes()], prompt_rows=self.prompt_rows,
            everything=self.everything.metrics(id_column),
        )


def _join_partition(gt_spool: Spool, pred_spool: Spool, part: int, id_column: str, state: _State) -> None:
    gt_rows: Dict[bytes, Tuple[Any, ...]] = {}
    for row in gt_spool.read(part):
        key = id_key(row[0])
        if key in gt_rows:
            raise ValueError(f"ground truth: duplicate {id_column} {row[0]!r}")
        gt_rows[key] = row
    seen = set()
    for pred in pred_spool.read(part):
        key = id_key(pred[0])
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
    _, pred_masks, scores, box_errors, error, prompt_index, found_by, pred_categories = pred
    where = f"row {id_column}={row_id!r}"
    categories = gt_categories if gt_categories is not None else pred_categories
    if error is not None:
        state.error_rows += 1
        state.skipped["row_error"] += len(gt_masks or pred_masks or [])
        return
    pred_masks, scores, box_errors = pred_masks or [], scores or [], box_errors or []
    if prompt_index is not None and len(prompt_index) != len(pred_masks):
        raise ValueError(f"{where}: {PROMPT_INDEX} has {len(prompt_index)} entries for {len(pred_masks)} masks")
    if found_by is not None:
        (pred_masks, scores, prompt_index), (found_masks, found_scores) = split_masks(
            found_by, pred_masks, scores, prompt_index, where)
        state.everything.add_row(key, row_id, where, gt_masks, found_masks, found_scores, bool(box_errors))
        if not box_errors and not pred_masks:
            return  # no prompts: the ground truth is the image's objects, segment-everything's alone
    state.prompt_rows += 1
    if prompt_index is not None and len(pred_masks) != len(box_errors):
        pred_masks, scores = _best_per_box(pred_masks, scores, prompt_index, len(box_errors))
    num_boxes = len(pred_masks)
    if gt_masks is None:
        gt_masks = [None] * num_boxes
    lengths = {"ground truth masks": len(gt_masks), "predicted masks": num_boxes, IOU_SCORES: len(scores),
               BOX_ERRORS: len(box_errors)}
    if state.has_categories:
        if categories is None:
            categories = [None] * num_boxes
        lengths["categories"] = len(categories)
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{where}: per-box lists differ in length ({', '.join(f'{k}: {v}' for k, v in lengths.items())});"
                         " the ground truth must be aligned with the boxes given to the pipeline")
    image: Optional[EvaluatedImage] = None
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
            image = EvaluatedImage(key, height, width)
            state.images.append(image)
        elif [height, width] != [image.height, image.width]:
            raise ValueError(f"{where}: masks of one row have different sizes ({[height, width]} and "
                             f"{[image.height, image.width]})")
        iou, biou = mask_scores(rle.decode(gt_rle, where, f"ground truth mask {i}"), rle.decode(pred_rle, where, f"mask {i}"),
                                dilation_pixels(height, width))
        state.add_box(image, row_id, i, category, gt_rle, pred_rle, float(score), iou, biou)


def _best_per_box(masks: List[Any], scores: List[Any], prompt_index: List[Any], num_boxes: int
                  ) -> Tuple[List[Any], List[Any]]:
    """Per box, its first mask and score (model.multimask_keep: all writes a box's candidates
    best predicted IoU first), None where it has none."""
    first: Dict[int, int] = {}
    for i, box in enumerate(prompt_index):
        if box is not None:
            first.setdefault(box, i)
    return ([masks[first[b]] if b in first else None for b in range(num_boxes)],
            [scores[first[b]] if b in first else None for b in range(num_boxes)])
