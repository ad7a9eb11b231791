"""The model stage's result for one row: its masks as run lengths, with what the output says
about each (`pipeline.schema`'s per-mask columns)."""

from dataclasses import dataclass, field
from typing import List, Optional

from ..masks import rle
from ..schema import RUN_LENGTHS
from .contract import column


@dataclass
class MaskResult:
    """One row's masks, as run lengths, with their scores, areas, boxes, prompts and what found
    each: per input prompt one mask (or its candidates with model.multimask_keep: all), then
    segment-everything's masks."""

    run_lengths: List[rle.RunLengths] = column(RUN_LENGTHS, default_factory=list)
    iou_scores: List[float] = field(default_factory=list)
    stability_scores: List[float] = field(default_factory=list)
    mask_areas: List[int] = field(default_factory=list)
    mask_bboxes: List[List[float]] = field(default_factory=list)
    prompt_index: List[Optional[int]] = field(default_factory=list)
    found_by: List[str] = field(default_factory=list)
    point_coords: List[Optional[List[float]]] = field(default_factory=list)
    crop_boxes: List[Optional[List[float]]] = field(default_factory=list)
    error: Optional[str] = None

    @classmethod
    def passthrough(cls) -> "MaskResult":
        return cls()

    def add(self, run_lengths: rle.RunLengths, iou_score: float, stability_score: float, area: int,
            bbox: List[float], prompt_index: Optional[int], found_by: str, point: Optional[List[float]] = None,
            crop_box: Optional[List[float]] = None) -> None:
        """Append one mask and its per-mask values."""
        self.run_lengths.append(run_lengths)
        self.iou_scores.append(iou_score)
        self.stability_scores.append(stability_score)
        self.mask_areas.append(area)
        self.mask_bboxes.append(bbox)
        self.prompt_index.append(prompt_index)
        self.found_by.append(found_by)
        self.point_coords.append(point)
        self.crop_boxes.append(crop_box)
