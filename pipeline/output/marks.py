"""A reviewer's marks on a job's masks: the list the review page downloads (JSON or CSV) of
masks, each named by its row's id and its box's index in the row, marked "good" or "bad",
and the filter an export makes of it (`export --exclude` / `--only`).

JSON: ``{"results": <the job's output>, "marks": [{"id", "box", "mark", ...}]}`` (or the list
alone); CSV: a header with at least ``id`` and ``box``, and ``mark``. Other fields (the page
adds ``file``, ``category``, ``iou``) are for people and ignored here. An entry without a mark
counts as "bad" for `--exclude` and as "good" for `--only`, so that a hand-made list of ids
and box indices works with either.

Ids are compared as text (``12`` in a JSON list is the row id 12 as well as "12"), the way
the page shows them.
"""

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, List, Set, Tuple

from ..ids import id_text
from ..storage import Location

GOOD, BAD = "good", "bad"
EXCLUDE, ONLY = "exclude", "only"
MaskKey = Tuple[str, int]  # (the row's id as text, the box's index in the row)


@dataclass(frozen=True)
class MaskMarks:
    """The masks a marks file names, by mark."""

    source: str
    good: FrozenSet[MaskKey]
    bad: FrozenSet[MaskKey]
    unmarked: FrozenSet[MaskKey]


def read_marks(location: Location) -> MaskMarks:
    """The marks in the JSON or CSV file at `location` (by its content: JSON starts with `{` or `[`).

    Raises FileNotFoundError when there is no such file and ValueError naming the entry for a
    malformed one (no id, a box that is not an index, a mark other than good/bad) or a mask
    marked both good and bad.
    """
    url = location.url
    if not location.exists():
        raise FileNotFoundError(f"marks file not found: {url} (the review page's Download JSON / CSV)")
    with location.open("rb") as f:
        text = f.read().decode("utf-8-sig")
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        entries = _json_entries(text, url)
    else:
        entries = _csv_entries(text, url)
    marks: Dict[str, Set[MaskKey]] = {GOOD: set(), BAD: set(), "": set()}
    for where, entry in entries:
        key, mark = _entry(entry, f"{url}: {where}")
        marks[mark].add(key)
    both = marks[GOOD] & marks[BAD]
    if both:
        named = ", ".join(f"id {i!r} box {b}" for i, b in sorted(both)[:3])
        raise ValueError(f"{url}: {len(both)} mask(s) marked both good and bad ({named}): keep one mark per mask")
    return MaskMarks(url, frozenset(marks[GOOD]), frozenset(marks[BAD]),
                     frozenset(marks[""] - marks[GOOD] - marks[BAD]))


def _json_entries(text: str, url: str) -> List[Tuple[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{url}: not valid JSON ({e})") from None
    entries = data.get("marks") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ValueError(f"{url}: expected a list of marks, or an object with a \"marks\" list, as the review page "
                         "writes")
    return [(f"marks[{n}]", entry) for n, entry in enumerate(entries)]


def _csv_entries(text: str, url: str) -> List[Tuple[str, Any]]:
    rows = csv.DictReader(io.StringIO(text))
    missing = [name for name in ("id", "box") if name not in (rows.fieldnames or [])]
    if missing:
        raise ValueError(f"{url}: a CSV of marks needs a header with the columns id, box (and mark); missing "
                         f"{', '.join(missing)} (header: {','.join(rows.fieldnames or [])})")
    return [(f"line {rows.line_num}", row) for row in rows]


def _entry(entry: Any, where: str) -> Tuple[MaskKey, str]:
    """((id text, box index), mark or "") of one entry."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected {{\"id\", \"box\", \"mark\"}}, got {entry!r}")
    row_id = entry.get("id")
    if row_id is None or row_id == "":
        raise ValueError(f"{where}: no id")
    box = entry.get("box")
    index = -1
    if isinstance(box, float) and box.is_integer():
        index = int(box)
    elif isinstance(box, int) and not isinstance(box, bool):
        index = box
    elif isinstance(box, str) and box.strip().isdigit():
        index = int(box)
    if index < 0:
        raise ValueError(f"{where}: box must be the mask's box index in its row (0, 1, ...), got {box!r}")
    mark = (entry.get("mark") or "").strip().lower()
    if mark not in (GOOD, BAD, ""):
        raise ValueError(f"{where}: mark must be \"good\" or \"bad\" (or empty), got {entry.get('mark')!r}")
    return (id_text(row_id), index), mark


@dataclass
class MarkFilter:
    """Which masks an export keeps by a review's marks: `EXCLUDE` leaves out the masks marked
    bad (and those listed without a mark); `ONLY` keeps only the masks marked good (and those
    listed without a mark), and only the images that have one. It records which listed masks
    it met, so that a list from another job is noticed."""

    marks: MaskMarks
    mode: str
    listed: FrozenSet[MaskKey] = field(init=False)
    met: Set[MaskKey] = field(init=False, default_factory=set)
    _ids: FrozenSet[str] = field(init=False)

    def __post_init__(self) -> None:
        if self.mode not in (EXCLUDE, ONLY):
            raise ValueError(f"mode must be {EXCLUDE!r} or {ONLY!r}, got {self.mode!r}")
        marked = self.marks.bad if self.mode == EXCLUDE else self.marks.good
        self.listed = marked | self.marks.unmarked
        self._ids = frozenset(row_id for row_id, _ in self.listed)

    def keeps_image(self, row_id: str) -> bool:
        """Whether an image may be exported at all (`ONLY`: it has a listed mask)."""
        return self.mode == EXCLUDE or row_id in self._ids

    def keeps(self, row_id: str, box: int) -> bool:
        """Whether the mask of box `box` of row `row_id` is exported."""
        key = (row_id, box)
        if key in self.listed:
            self.met.add(key)
            return self.mode == ONLY
        return self.mode == EXCLUDE

    def unmet(self) -> List[MaskKey]:
        """The listed masks not met among the rows read (sorted): masks of another job, or of
        rows that failed."""
        return sorted(self.listed - self.met)


__all__ = ["BAD", "EXCLUDE", "GOOD", "ONLY", "MarkFilter", "MaskKey", "MaskMarks", "read_marks"]
