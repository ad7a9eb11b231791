"""What an import builds, whatever the format: the objects of one image (`Region`), the row of
the labelled Parquet they become (`LabelledRow`), and the counts its summary prints
(`ImportCounts`)."""

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, List, Optional

import numpy as np

from ..masks import rle
from ..text import plural


@dataclass
class Region:
    """One object of an image as an annotation or a prediction holds it."""

    region_id: Optional[str]  # Label Studio's result id, COCO's annotation id: what matching pairs first
    mask: np.ndarray  # bool (H, W) at the image's original size
    category: Optional[str]
    box: Optional[List[float]] = None  # xyxy, when the source gives a rectangle; else the mask's tight box


class RegionProblem(ValueError):
    """Why one annotated or predicted region cannot be imported: the reason it is counted under."""


def is_number(value: Any) -> bool:
    """Whether a JSON value is a finite number (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def tight_box(mask: np.ndarray) -> List[float]:
    """The xyxy box of a non-empty mask's pixels, on pixel edges: [first column, first row,
    last column + 1, last row + 1], as COCO's bbox of the same mask reads in xywh."""
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [float(columns[0]), float(rows[0]), float(columns[-1] + 1), float(rows[-1] + 1)]


@dataclass
class LabelledRow:
    """One image of the labelled Parquet (`pipeline.schema.LABELLED_FIELDS`), its lists aligned."""

    row_id: Any
    image_uri: str
    boxes: List[List[float]] = field(default_factory=list)
    masks: List[rle.Rle] = field(default_factory=list)
    categories: List[Optional[str]] = field(default_factory=list)
    changed: List[Optional[bool]] = field(default_factory=list)

    def add(self, region: Region, changed: Optional[bool]) -> None:
        self.boxes.append(region.box if region.box is not None else tight_box(region.mask))
        self.masks.append(rle.encode(region.mask))
        self.categories.append(region.category)
        self.changed.append(changed)


@dataclass
class ImportCounts:
    """What an import read, wrote, compared and left out. `source` names what the input holds
    per image (a Label Studio task, a COCO image)."""

    source: str
    read: int = 0
    rows: int = 0
    imported: int = 0
    changed: int = 0
    unchanged: int = 0
    added: int = 0
    deleted: int = 0
    predictions_known: bool = False
    not_compared: int = 0  # annotations imported whose starting prediction the input does not hold
    skipped: Counter = field(default_factory=Counter)  # reason -> regions not imported (or not compared with)
    unused: Counter = field(default_factory=Counter)  # reason -> tasks or images that gave no row
    other_annotations: Counter = field(default_factory=Counter)  # reason -> annotations not taken (Label Studio)
    notes: Counter = field(default_factory=Counter)  # what was read otherwise than the input says -> times

    def lines(self) -> List[str]:
        """The summary, a line each: what was read and imported, the comparison with the
        predictions, and every count of what was left out, by reason."""
        out = [f"read {plural(self.read, self.source)}: {plural(self.imported, 'annotation')} imported into "
               f"{plural(self.rows, 'row')}"]
        if self.predictions_known:
            out.append(f"compared with the predictions they started from: {self.changed} changed by a person, "
                       f"{self.unchanged} unchanged, {self.added} added; {plural(self.deleted, 'predicted region')} deleted")
            if self.not_compared:
                out.append(f"not compared: {plural(self.not_compared, 'annotation')} whose starting prediction the "
                           "input does not hold (`changed` null)")
        else:
            out.append("no predictions in the input to compare with: `changed` is null (unknown) for every annotation")
        for title, counts in (("regions skipped", self.skipped), (f"{self.source}s without a row", self.unused),
                              ("annotations not used", self.other_annotations), ("notes", self.notes)):
            if counts:
                out.append(f"{title}: {sum(counts.values())} ("
                           + ", ".join(f"{reason}: {n}" for reason, n in sorted(counts.items())) + ")")
        return out
