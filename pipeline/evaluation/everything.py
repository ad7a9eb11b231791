"""Segment-everything's masks evaluated as detections: they answer no prompt, so no ground-truth
mask is theirs to pair with. Per image, all of a row's segment-everything masks (scored by
`iou_scores`, the predicted IoU) against all of the row's ground-truth masks, class-agnostic COCO
mask AP (see the package docstring for which rows take part)."""

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..config import EverythingConfig
from ..masks import rle
from ..schema import FOUND_BY_EVERYTHING
from .coco_ap import annotate, ap_triple, run_cocoeval, valid_mean
from .report import EverythingMetrics

# COCO's maxDets stop at 100; a segment-everything image has hundreds of masks.
MAX_DETS = 1000


def split_masks(found_by: Sequence[Any], masks: List[Any], scores: List[Any], prompt_index: Optional[List[Any]],
                where: str) -> Tuple[Tuple[List[Any], List[Any], Optional[List[Any]]], Tuple[List[Any], List[Any]]]:
    """((masks, scores, prompt_index) of the prompts' masks, (masks, scores) of segment-everything's),
    each in the row's order."""
    if len(found_by) != len(masks) or len(scores) != len(masks):
        raise ValueError(f"{where}: found_by has {len(found_by)} and iou_scores {len(scores)} entries for "
                         f"{len(masks)} masks")
    everything = [i for i, kind in enumerate(found_by) if kind == FOUND_BY_EVERYTHING]
    if not everything:
        return (masks, scores, prompt_index), ([], [])
    taken = set(everything)
    prompts = [i for i in range(len(masks)) if i not in taken]
    return (([masks[i] for i in prompts], [scores[i] for i in prompts],
             [prompt_index[i] for i in prompts] if prompt_index is not None else None),
            ([masks[i] for i in everything], [scores[i] for i in everything]))


@dataclass
class _Image:
    key: bytes
    without_prompts: bool
    objects: List[Dict[str, Any]] = field(default_factory=list)  # ground-truth RLEs (pycocotools form)
    masks: List[Dict[str, Any]] = field(default_factory=list)
    scores: List[float] = field(default_factory=list)
    size: Optional[List[int]] = None


class EverythingEvaluation:
    """The rows of an evaluation that segment-everything ran on, gathered one by one, then
    evaluated together (COCOeval needs every image at once: memory grows with their RLEs)."""

    def __init__(self, configured: Optional[EverythingConfig]) -> None:
        # the job's everything section, from its description; None when the predictions have none
        self.configured = configured
        self.images: List[_Image] = []
        # Rows without prompts nor segment-everything masks: the image's objects, all missed, if
        # segment-everything ran at all (known at the end unless the description says).
        self.pending: List[Tuple[_Image, Any]] = []
        self.found_masks = False
        self.skipped_masks = self.null_objects = self.unannotated_rows = 0

    @property
    def ran(self) -> bool:
        """Whether segment-everything ran in the job: masks of it, or its description says so."""
        return self.found_masks or (self.configured is not None and self.configured.enabled)

    def add_row(self, key: bytes, row_id: Any, where: str, gt_masks: Optional[List[Any]], masks: List[Any],
                scores: List[Any], has_prompts: bool) -> None:
        """One matched row without error: its segment-everything masks and ground truth. A row
        with prompts and none of these masks takes part only when the description says every
        row went through segment-everything (else it may not have)."""
        self.found_masks |= bool(masks)
        if has_prompts and not masks and not (self.configured is not None and self.configured.runs_on(has_prompts)):
            return
        if gt_masks is None:  # not annotated
            self.unannotated_rows += 1
            return
        image = _Image(key, not has_prompts)
        for i, value in enumerate(gt_masks):
            if value is None:
                self.null_objects += 1
                continue
            image.objects.append(self._sized(image, rle.for_pycocotools(value, where, f"ground truth mask {i}"),
                                             where, f"ground truth mask {i}"))
        for mask, score in zip(masks, scores, strict=True):
            if mask is None or score is None or not math.isfinite(score):
                self.skipped_masks += 1
                continue
            what = "a segment-everything mask"
            image.masks.append(self._sized(image, rle.for_pycocotools(mask, where, what), where, what))
            image.scores.append(float(score))
        if masks or self.ran:
            self.images.append(image)
        else:
            self.pending.append((image, row_id))

    @staticmethod
    def _sized(image: _Image, stored: Dict[str, Any], where: str, what: str) -> Dict[str, Any]:
        if image.size is None:
            image.size = stored["size"]
        elif stored["size"] != image.size:
            raise ValueError(f"{where}: {what} has size {stored['size']}, another mask of the row {image.size}")
        return stored

    def metrics(self, id_column: str) -> Optional[EverythingMetrics]:
        """The section's numbers; None when segment-everything did not run. A row without
        prompts whose ground truth has masks is then misaligned, as it is for a job without it."""
        if not self.ran:
            misaligned = sorted(((im.key, row_id, len(im.objects)) for im, row_id in self.pending if im.objects),
                                key=lambda m: m[0])
            if misaligned:
                _, row_id, count = misaligned[0]
                raise ValueError(f"row {id_column}={row_id!r}: no prompts and no segment-everything masks, but "
                                 f"{count} ground-truth masks; the ground truth must be aligned with the boxes "
                                 "given to the pipeline")
            return None
        ordered = sorted(self.images + [im for im, _ in self.pending], key=lambda im: im.key)
        coco_images: List[Dict[str, Any]] = []
        gts: List[Dict[str, Any]] = []
        dets: List[Dict[str, Any]] = []
        for image_id, im in enumerate(ordered, 1):
            height, width = im.size or (0, 0)
            coco_images.append({"id": image_id, "height": height, "width": width})
            annotate(gts, image_id, [1] * len(im.objects), im.objects)
            annotate(dets, image_id, [1] * len(im.masks), im.masks, im.scores)
        max_dets = max([MAX_DETS] + [len(im.masks) for im in ordered])  # every mask counted
        ap, ar = (math.nan,) * 3, math.nan
        if gts or dets:
            ev = run_cocoeval(coco_images, gts, dets, [{"id": 1, "name": "object"}], [1, 10, 100, max_dets])
            ap = ap_triple(ev)
            recall = ev.eval["recall"][:, :, ev.params.areaRngLbl.index("all"), -1]  # [T, K]
            ar = valid_mean(np.asarray(recall))
        return EverythingMetrics(*ap, ar, max_dets, images=len(ordered), masks=len(dets), objects=len(gts),
                                 rows_without_prompts=sum(im.without_prompts for im in ordered),
                                 skipped_masks=self.skipped_masks, null_objects=self.null_objects,
                                 unannotated_rows=self.unannotated_rows)
