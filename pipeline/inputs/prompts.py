"""A row's prompts as the job reads them: the values of its prompt columns (boxes, points, point
labels, mask prompts: `PromptColumns`), one entry per prompt in each, counted and aligned
(`read_prompts`), then checked against the decoded image (`RowPrompts.check`): why each prompt
cannot be used, or the prompt in the image's pixels. Coordinates are those of the image as
shown (EXIF orientation applied), as the decoded image's; bringing the usable prompts into the
model's frame is the processor's (the decode stage's) work. No torch: the review page reads
boxes through this package."""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from ..config import PromptColumns
from ..masks import rle
from ..schema import prompt_kind
from ..text import clipped
from .boxes import boxes_to_xyxy, check_boxes, parse_boxes

# What `check` finds for a prompt with nothing in it.
EMPTY_PROMPT = "empty prompt: no box, points or mask prompt"
_LABELS = (0, 1)


class PromptCountError(ValueError):
    """The row's prompt columns hold different numbers of entries (a "per_box" row error)."""


@dataclass
class Prompt:
    """One usable prompt in the image's pixels: a box (xyxy, clipped to the image) or None,
    points (n, 2) with their labels (n,), and a mask prompt: a bool (h, w) mask, or float32
    low-res logits (s, s) given as they are, or None."""

    box: Optional[np.ndarray]
    points: np.ndarray
    labels: np.ndarray
    mask: Optional[np.ndarray] = None
    logits: Optional[np.ndarray] = None


@dataclass
class CheckedPrompts:
    """A row's prompts checked against its image: per prompt, None or why it cannot be used,
    and the usable ones in order."""

    reasons: List[Optional[str]] = field(default_factory=list)
    usable: List[Prompt] = field(default_factory=list)


@dataclass
class RowPrompts:
    """The values of a row's prompt columns, aligned: `count` prompts; boxes already in xyxy
    ((count, 4), NaN where a prompt has no box), the other columns' entries as read (None
    where a column is not given or null for the row)."""

    count: int
    boxes: np.ndarray
    has_box: np.ndarray
    points: Optional[List[Any]] = None
    labels: Optional[List[Any]] = None
    masks: Optional[List[Any]] = None

    def kinds(self) -> List[str]:
        """Per prompt, its parts as the output's found_by names them (`schema.prompt_kind`)."""
        return [prompt_kind(bool(self.has_box[i]), bool(_entry(self.points, i)), _entry(self.masks, i) is not None)
                for i in range(self.count)]

    def check(self, height: int, width: int, mask_side: int) -> CheckedPrompts:
        """Each prompt against the (height, width) image: boxes clipped to it (`check_boxes`),
        points inside it with a label 0 or 1 each, a mask prompt of its size (a COCO RLE) or
        of mask_side x mask_side float32 logits, and something in every prompt."""
        clipped, box_reasons = check_boxes(self.boxes, height, width)
        found = CheckedPrompts()
        for i in range(self.count):
            try:
                points, labels = self._points(i, height, width)
                mask, logits = self._mask(i, height, width, mask_side)
            except ValueError as e:
                found.reasons.append(str(e))
                continue
            has_box = bool(self.has_box[i])
            if has_box and box_reasons[i] is not None:
                found.reasons.append(box_reasons[i])
            elif not has_box and not len(points) and mask is None and logits is None:
                found.reasons.append(EMPTY_PROMPT)
            else:
                found.reasons.append(None)
                found.usable.append(Prompt(clipped[i] if has_box else None, points, labels, mask, logits))
        return found

    def _points(self, i: int, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
        points = _entry(self.points, i) or []
        labels = _entry(self.labels, i)
        coords = np.zeros((len(points), 2))
        for k, point in enumerate(points):
            if point is None or len(point) != 2:
                raise ValueError(f"point {k} is {point!r}: a point is [x, y]")
            x, y = (np.nan if v is None else float(v) for v in point)
            if not (np.isfinite(x) and np.isfinite(y)):
                raise ValueError(f"point {k} has non-finite coordinates")
            if not (0 <= x <= width and 0 <= y <= height):
                raise ValueError(f"point {k} ({x:g}, {y:g}) lies outside the {width} x {height} image "
                                 "(width x height)")
            coords[k] = x, y
        if labels is None or (not labels and not points):
            return coords, np.ones(len(points), np.int64)
        if len(labels) != len(points):
            raise ValueError(f"{len(labels)} point labels for {len(points)} points: give one label per point")
        for k, label in enumerate(labels):
            if isinstance(label, bool) or label not in _LABELS:
                raise ValueError(f"point label {k} is {label!r}: labels are 1 (foreground) or 0 (background)")
        return coords, np.array(labels, np.int64)

    def _mask(self, i: int, height: int, width: int, side: int) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        value = _entry(self.masks, i)
        if value is None:
            return None, None
        if isinstance(value, (bytes, bytearray)):
            if len(value) != 4 * side * side:
                raise ValueError(f"mask prompt logits have {len(value)} bytes: low-res logits are {side} x {side} "
                                 f"float32 ({4 * side * side} bytes)")
            logits = np.frombuffer(value, "<f4").reshape(side, side).astype(np.float32)
            if not np.isfinite(logits).all():
                raise ValueError("mask prompt logits hold NaN or infinite values")
            return None, logits
        try:
            mask = rle.decode(value, "mask prompt", "its value")
        except (ValueError, TypeError):  # pycocotools: "Invalid RLE mask representation"
            raise ValueError(f"mask prompt is not a COCO RLE {{size: [h, w], counts}}: {clipped(value)}") from None
        if mask.shape != (height, width):
            raise ValueError(f"mask prompt is {mask.shape[0]} x {mask.shape[1]} (h x w), not the image's "
                             f"{height} x {width}")
        return mask, None


def _entry(values: Optional[List[Any]], i: int) -> Any:
    return None if values is None else values[i]


def read_prompts(values: Mapping[str, Any], columns: PromptColumns) -> RowPrompts:
    """A row's prompts from the values of its prompt columns (by column name). Raises
    ValueError when the boxes are not boxes (a "boxes" row error) and PromptCountError when
    the columns hold different numbers of entries; a null column value holds none."""
    counts = prompt_counts(values, columns)
    count = next(iter(counts.values()), 0)
    if len(set(counts.values())) > 1:
        raise PromptCountError(count_mismatch(counts))
    boxes, has_box = np.full((count, 4), np.nan), np.zeros(count, bool)
    box_values = values[columns.boxes] if columns.boxes is not None else None
    if box_values is not None:
        given = [k for k, box in enumerate(box_values) if box]  # a null or empty entry: no box
        boxes[given] = boxes_to_xyxy(parse_boxes([box_values[k] for k in given]), columns.box_format)
        has_box[given] = True

    def listed(column: Optional[str]) -> Optional[List[Any]]:
        return None if column is None else values[column]

    return RowPrompts(count, boxes, has_box, listed(columns.points), listed(columns.point_labels),
                      listed(columns.mask_prompts))


def prompt_counts(values: Mapping[str, Any], columns: PromptColumns) -> Dict[str, int]:
    """Config key → entries, of each prompt column whose value is not null."""
    return {key: len(values[column]) for key, column in columns.named() if values[column] is not None}


def count_mismatch(counts: Mapping[str, int]) -> str:
    """What is wrong with a row whose prompt columns hold `counts` entries (by config key)."""
    listing = ", ".join(f"{key}: {n}" for key, n in counts.items())
    return f"the prompt columns hold different numbers of entries ({listing}): give one per prompt (null for none)"
