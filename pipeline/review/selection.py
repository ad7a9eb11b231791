"""Which images the review page shows, in one pass over any number of results: the
`needs_review` images with the lowest review score (an image's lowest predicted IoU or
stability over its masks), then a seeded uniform sample of the others; with the counts and
histograms of all, and what found each mask (`found_by_kinds`)."""

import dataclasses
import heapq
import math
import random
from typing import Dict, Iterable, List, Optional, Tuple

from ..masks.found_by import prompt_parts
from ..output.results import ResultImage
from ..schema import FOUND_BY_EVERYTHING, PROMPT_PARTS

HISTOGRAM_BINS = 20
# The page's found-by filter: a prompt's parts, segment-everything, and "unknown" for masks of
# outputs written before found_by existed (prompt masks whose prompt's parts the output does
# not say).
FOUND_BY_UNKNOWN = "unknown"
FOUND_BY_KINDS = (*PROMPT_PARTS, FOUND_BY_EVERYTHING, FOUND_BY_UNKNOWN)


def found_by_kinds(found_by: Optional[str]) -> List[str]:
    """The filter's kinds a mask counts under: each part of its prompt ("box+points" under both
    box and points), ["everything"], or ["unknown"] where the output does not say."""
    if found_by == FOUND_BY_EVERYTHING:
        return [FOUND_BY_EVERYTHING]
    return prompt_parts(found_by) or [FOUND_BY_UNKNOWN]


def review_score(image: ResultImage) -> Optional[float]:
    """The lowest predicted IoU or stability over the image's masks; None without masks."""
    scores = [s for m in image.masks for s in (m.score, finite_score(m.stability)) if s is not None]
    return min(scores) if scores else None


def finite_score(value: Optional[float]) -> Optional[float]:
    """A score, or None for a missing or non-finite one (the reader passes any stability on)."""
    return value if value is not None and math.isfinite(value) else None


@dataclasses.dataclass
class Histogram:
    """Counts of scores in [0, 1] in equal bins (values outside are clamped into the end bins);
    `missing`: masks without the score."""

    bins: List[int] = dataclasses.field(default_factory=lambda: [0] * HISTOGRAM_BINS)
    missing: int = 0

    def add(self, value: Optional[float]) -> None:
        if value is None:
            self.missing += 1
        else:
            self.bins[min(len(self.bins) - 1, max(0, int(value * len(self.bins))))] += 1


@dataclasses.dataclass
class Selection:
    """What one pass over the results keeps: the images to show and the counts of all."""

    needs_review: List[ResultImage]  # lowest review score first
    sample: List[ResultImage]  # in result order
    masks_per_category: Dict[int, int]
    masks_per_kind: Dict[str, int]  # by `found_by_kinds`: a mask of a combined prompt under each part
    iou: Histogram
    stability: Histogram
    images_seen: int


def select(images: Iterable[ResultImage], max_images: int, needs_review: int, seed: int = 0) -> Selection:
    """One pass: the `needs_review` lowest-scored images (ties: the earlier first) and a
    uniform sample (reservoir, seeded) of the others, `max_images` in all when there are as
    many (fewer scored images than `needs_review` leave more room for the sample); images
    without masks are only sampled. Holds at most `max_images` images."""
    if max_images < 1 or not 0 <= needs_review <= max_images:
        raise ValueError(f"need max_images >= 1 and 0 <= needs_review <= max_images, got {max_images}, {needs_review}")
    rng = random.Random(seed)
    lowest: List[Tuple[float, int, ResultImage]] = []  # a max-heap by score, as (-score, -index, image)
    reservoir: List[ResultImage] = []
    offered = 0
    per_category: Dict[int, int] = {}
    per_kind: Dict[str, int] = {}
    iou, stability = Histogram(), Histogram()
    seen = 0

    def offer(image: ResultImage) -> None:
        # Algorithm R over the images that end up outside the heap (evicted ones when they
        # leave it): a uniform sample of the rest, whatever order they are offered in.
        nonlocal offered
        offered += 1
        if len(reservoir) < max_images - len(lowest):
            reservoir.append(image)
        else:
            slot = rng.randrange(offered)
            if slot < len(reservoir):
                reservoir[slot] = image

    for image in images:
        seen += 1
        for mask in image.masks:
            per_category[mask.category_id] = per_category.get(mask.category_id, 0) + 1
            for kind in found_by_kinds(mask.found_by):
                per_kind[kind] = per_kind.get(kind, 0) + 1
            iou.add(mask.score)
            stability.add(finite_score(mask.stability))
        score = review_score(image)
        if score is None or needs_review == 0:
            offer(image)
        elif len(lowest) < needs_review:
            heapq.heappush(lowest, (-score, -image.index, image))
            # The sample holds what the heap leaves free: a random one of it leaves when the
            # heap grows (a uniform sample of a uniform sample, so Algorithm R goes on).
            if len(reservoir) > max_images - len(lowest):
                reservoir.pop(rng.randrange(len(reservoir)))
        elif (-score, -image.index) > lowest[0][:2]:
            offer(heapq.heapreplace(lowest, (-score, -image.index, image))[2])
        else:
            offer(image)
    return Selection([entry[2] for entry in sorted(lowest, reverse=True)], sorted(reservoir, key=lambda i: i.index),
                     per_category, per_kind, iou, stability, seen)
