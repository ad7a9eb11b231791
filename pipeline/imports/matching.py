"""Whether a person changed an annotation: each annotated region paired with the predicted
region it started from, if any, and compared.

Pairs are made first by region id (Label Studio keeps a pre-annotated region's id when a
person edits it; a COCO annotation edited in place keeps its id), then, among the regions
left, by mask IoU of at least MATCH_IOU, the highest first. A paired region is unchanged when
its mask is pixel-identical to the prediction's and its category the same, else changed; an
unpaired annotated region was added by the person (changed); an unpaired predicted region was
deleted by the person."""

from dataclasses import dataclass
from typing import Collection, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from ..masks.metrics import mask_iou
from .records import ImportCounts, Region

# Below this, an annotated region that kept no predicted region's id is taken as drawn anew:
# a person moving a mask onto another object is more likely than one keeping less than half.
MATCH_IOU = 0.5


@dataclass
class Comparison:
    """Per annotated region, whether a person changed it (added regions included); and how
    many were unchanged and added, and how many predicted regions were deleted."""

    changed: List[bool]
    unchanged: int
    added: int
    deleted: int

    def add_to(self, counts: ImportCounts) -> None:
        counts.changed += sum(self.changed) - self.added
        counts.unchanged += self.unchanged
        counts.added += self.added
        counts.deleted += self.deleted


def compare(annotated: Sequence[Region], predicted: Sequence[Region], kept_ids: Collection[str] = ()) -> Comparison:
    """Pair `annotated` with `predicted` (see the module) and compare each pair. `kept_ids`:
    ids of annotated regions that were not imported (skipped as unusable): the predicted
    regions of those ids were not deleted, so they are neither paired nor counted."""
    pairs = _pairs(annotated, predicted, set(kept_ids))
    changed, unchanged, added = [], 0, 0
    for index, region in enumerate(annotated):
        partner = pairs.get(index)
        if partner is None:
            changed.append(True)
            added += 1
            continue
        same = (region.category == predicted[partner].category and region.mask.shape == predicted[partner].mask.shape
                and np.array_equal(region.mask, predicted[partner].mask))
        changed.append(not same)
        unchanged += same
    left = [p for j, p in enumerate(predicted) if j not in pairs.values() and p.region_id not in kept_ids]
    return Comparison(changed, unchanged, added, len(left))


def _pairs(annotated: Sequence[Region], predicted: Sequence[Region], kept_ids: Set[Optional[str]]) -> Dict[int, int]:
    """Annotated index -> predicted index."""
    by_id: Dict[str, int] = {p.region_id: j for j, p in enumerate(predicted) if p.region_id is not None}
    pairs: Dict[int, int] = {}
    for i, region in enumerate(annotated):
        j = by_id.get(region.region_id) if region.region_id is not None else None
        if j is not None and j not in pairs.values():
            pairs[i] = j
    taken = set(pairs.values())
    free = [j for j in range(len(predicted)) if j not in taken and predicted[j].region_id not in kept_ids]
    candidates: List[Tuple[float, int, int]] = []
    for i, region in enumerate(annotated):
        if i in pairs:
            continue
        for j in free:
            score = _iou(region.mask, predicted[j].mask)
            if score >= MATCH_IOU:
                candidates.append((score, i, j))
    for _, i, j in sorted(candidates, key=lambda c: (-c[0], c[1], c[2])):
        if i not in pairs and j not in taken:
            pairs[i] = j
            taken.add(j)
    return pairs


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mask IoU; 0 for masks of different sizes, or empty, which no prediction can have started."""
    if a.shape != b.shape or not a.any() or not b.any():
        return 0.0
    return mask_iou(a, b)
