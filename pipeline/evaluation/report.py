"""The evaluation's result and its Markdown report."""

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..masks.metrics import DILATION_RATIO
from ..storage import Location

SKIP_REASONS = {
    "row_error": "prediction row failed (`error` set)",
    "box_error": "box not used by the pipeline (`box_errors` set)",
    "null_ground_truth": "ground-truth mask null",
    "null_prediction": "predicted mask null",
    "non_finite_score": "predicted score null or not finite",
    "null_category": "category null",
}


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
class EverythingMetrics:
    """Segment-everything's masks as detections against the rows' ground-truth objects
    (class-agnostic COCOeval, segm, area all, up to `max_dets` detections per image; NaN where
    COCOeval has nothing to average)."""

    ap: float  # over IoU .50:.95
    ap50: float
    ap75: float
    ar: float  # recall over IoU .50:.95 at max_dets
    max_dets: int
    images: int  # annotated rows evaluated
    masks: int  # detections
    objects: int  # ground-truth masks
    rows_without_prompts: int  # of the images, rows whose ground truth is the image's objects only
    skipped_masks: int = 0  # null mask or score not finite
    null_objects: int = 0  # null entries of a ground-truth list: not annotated, left out
    unannotated_rows: int = 0  # null ground-truth lists: the row is left out

    def table(self) -> List[str]:
        """The section's Markdown lines."""
        lines = ["## Segment-everything", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {_fmt(value)} |" for name, value in (
            ("AP", self.ap), ("AP50", self.ap50), ("AP75", self.ap75), (f"AR@{self.max_dets}", self.ar))]
        lines += [f"| images | {self.images} (without prompts: {self.rows_without_prompts}) |",
                  f"| masks (detections) | {self.masks} |", f"| ground-truth objects | {self.objects} |"]
        for count, what in ((self.skipped_masks, "masks skipped (null, or score not finite)"),
                            (self.null_objects, "null ground-truth masks (left out)"),
                            (self.unannotated_rows, "rows with a null ground-truth list (left out)")):
            if count:
                lines.append(f"| {what} | {count} |")
        return lines


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
    prompt_rows: int = 0  # matched rows, not failed, with prompts (every one in outputs without found_by)
    everything: Optional[EverythingMetrics] = None  # when the predictions hold segment-everything masks

    @property
    def has_prompt_metrics(self) -> bool:
        """Whether the per-prompt metrics mean anything: not when only segment-everything's
        masks were evaluated (no row had prompts)."""
        return self.everything is None or self.prompt_rows > 0

    def metrics_table(self) -> str:
        """The per-prompt metrics (when there were prompts), row and box counts, the per-category
        table and the segment-everything section (when there is one), as Markdown."""
        lines = []
        if self.has_prompt_metrics:
            lines += ["| metric | value |", "|---|---|"]
            for name, value in (("mIoU", self.miou), ("mBIoU", self.mbiou), ("AP", self.ap), ("AP50", self.ap50),
                                ("AP75", self.ap75)):
                lines.append(f"| {name} | {_fmt(value)} |")
            lines += [f"| boxes evaluated | {self.evaluated_boxes} |", ""]
        lines += ["| rows | count |", "|---|---|",
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
        if self.everything is not None:
            lines += [""] + self.everything.table()
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
        parts += ["", "## Definitions", ""]
        if self.has_prompt_metrics:
            parts += [
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
        if self.everything is not None:
            parts.append(f"- Segment-everything: per image, the row's segment-everything masks (scored by "
                         "`iou_scores`) as detections against all its ground-truth masks (a row without prompts: "
                         "the image's objects), class-agnostic; AP (IoU .50:.95), AP50, AP75 and AR from "
                         f"pycocotools COCOeval (segm, area all) at maxDets {self.everything.max_dets}.")
        return "\n".join(parts) + "\n"


def write_report(result: EvaluationResult, destination: Location) -> None:
    """Write `result.render_markdown()` to a local path or fsspec URL (local parents are created)."""
    with destination.open_for_write() as f:
        f.write(result.render_markdown().encode("utf-8"))


def _fmt(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _md(value: Any) -> str:
    return "—" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def _examples(ids: Optional[List[Any]]) -> str:
    return f" (e.g. {', '.join(_md(repr(i)) for i in ids)})" if ids else ""
