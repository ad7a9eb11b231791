"""Masks counted by what found them (the result's `found_by`: a prompt's parts, or segment-
everything), as the job's closing summary and `status` report them, table by table so that
memory stays that of one result file's found_by and iou_scores columns."""

import collections
from typing import Dict, List, Optional, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from ..schema import FOUND_BY, FOUND_BY_EVERYTHING, IOU_SCORES, PROMPT_PART_SEPARATOR, PROMPT_PARTS

# What a counting reader needs of a result file; outputs written before found_by lack both or the first.
COUNTED_COLUMNS = (FOUND_BY, IOU_SCORES)


class FoundByCounts:
    """Masks per found_by value over the tables added. An unusable prompt's mask (empty, its
    score NaN) is no mask found, and not counted."""

    def __init__(self) -> None:
        self.counts: Optional["collections.Counter[str]"] = None  # None until a table has found_by

    def add(self, table: pa.Table) -> None:
        """Count a table's masks (a table without found_by adds nothing)."""
        if FOUND_BY not in table.column_names:
            return
        if self.counts is None:
            self.counts = collections.Counter()
        counts = self.counts
        found = table.column(FOUND_BY)
        if IOU_SCORES in table.column_names:
            scores = table.column(IOU_SCORES)
            # Rows whose lists disagree in length cannot be paired mask by mask: left out.
            aligned = pc.fill_null(pc.equal(pc.list_value_length(found), pc.list_value_length(scores)), False)
            found, scores = pc.filter(found, aligned), pc.filter(scores, aligned)
            kinds = pc.filter(pc.list_flatten(found), pc.fill_null(pc.is_finite(pc.list_flatten(scores)), False))
        else:
            kinds = pc.list_flatten(found)
        for entry in pc.value_counts(kinds).to_pylist():
            if entry["values"] is not None:
                counts[entry["values"]] += entry["counts"]


def render_counts(counts: Dict[str, int]) -> str:
    """"masks by what found them: box 12, points 3, everything 540" (prompt kinds in the order
    of their parts, segment-everything last)."""
    found = ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items(), key=lambda kv: _order(kv[0])))
    return f"masks by what found them: {found or 'none'}"


def prompt_parts(found_by: Optional[str]) -> List[str]:
    """The prompt parts a found_by value names, in the order of PROMPT_PARTS ("points+box" →
    ["box", "points"]); [] for segment-everything, no value, or a value that names no part."""
    named = (found_by or "").split(PROMPT_PART_SEPARATOR)
    return [part for part in PROMPT_PARTS if part in named]


def _order(kind: str) -> Tuple[int, Tuple[int, ...], str]:
    parts = prompt_parts(kind)
    if parts and len(parts) == len(kind.split(PROMPT_PART_SEPARATOR)):
        return 0, tuple(PROMPT_PARTS.index(part) for part in parts), kind
    return (1 if kind == FOUND_BY_EVERYTHING else 2), (), kind
