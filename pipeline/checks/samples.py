"""What the input's first rows, or its id column, say about a config before any work starts:
boxes that look like another box_format, image URIs that all lie outside the allowed
prefixes, and ids that a resumed run could not tell apart."""

import math
from typing import List

from ..config import JobConfig
from ..ids import repeated_ids
from ..storage import uri_allowed
from .input_files import InputScan


def check_uri_sample(scan: InputScan, config: JobConfig) -> List[str]:
    """The first rows' image URIs of one file all lying outside input.allowed_uri_prefixes:
    a config that would fail every row, refused before work starts."""
    inp = config.input
    if inp.image_uri_column is None or inp.allowed_uri_prefixes is None:
        return []
    sample = scan.first_rows(inp.image_uri_column)
    if sample is None:
        return []
    first, values = sample
    uris = [u for u in values if isinstance(u, str) and u]
    outside = [u for u in uris if not uri_allowed(u, inp.allowed_uri_prefixes)]
    if not outside or len(outside) < len(uris):  # a few hostile rows are those rows' errors, not the job's
        return []
    return [f"input.allowed_uri_prefixes: all {len(uris)} of the first image URIs of {first.url} lie "
            f"outside {', '.join(inp.allowed_uri_prefixes)} (e.g. {outside[0]}); list where the images are in "
            "input.allowed_uri_prefixes"]


def check_ids_unique(scan: InputScan, id_column: str) -> List[str]:
    """Null and duplicate ids, from the id column of every input file (read in parallel):
    resuming skips rows by id, so it needs one distinct id per row."""
    columns = [table.column(0) for _, table in scan.location.read_tables([f.path for f in scan.files], [id_column])]
    nulls, repeated, examples = repeated_ids(columns)
    problems = []
    if nulls:
        problems.append(f"input.id_column: {nulls} rows have a null {id_column!r}; output.mode: resume skips rows "
                        "already written by id, so every row needs an id")
    if repeated:
        problems.append(f"input.id_column: {repeated} ids appear more than once (e.g. "
                        f"{', '.join(map(repr, examples))}); output.mode: resume skips rows already written by id, so "
                        "ids must be unique")
    return problems


def box_format_warnings(scan: InputScan, boxes_column: str, box_format: str) -> List[str]:
    """Warnings from the first rows of one file: boxes inverted under xyxy (the usual sign of
    xywh boxes read as xyxy), or every coordinate within [0, 1] (normalised boxes, where the
    pipeline takes absolute pixels)."""
    found = scan.first_rows(boxes_column)
    if found is None:
        return []
    first, values = found
    boxes = [box for row in values if isinstance(row, list)
             for box in row if isinstance(box, list) and len(box) == 4
             and all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)]
    if not boxes:
        return []
    warnings = []
    sample = f"{len(boxes)} boxes in the first rows of {first.url}"
    if box_format == "xyxy":
        inverted = sum(b[2] < b[0] or b[3] < b[1] for b in boxes)
        if inverted >= max(1, 0.25 * len(boxes)):
            warnings.append(f"input.box_format is xyxy, but {inverted} of {sample} have x2 < x1 or y2 < y1, as "
                            "[x, y, width, height] boxes read as xyxy do; if the boxes are xywh, set "
                            "input.box_format: xywh")
    if all(0.0 <= v <= 1.0 for b in boxes for v in b) and any(v > 0 for b in boxes for v in b):
        warnings.append(f"every coordinate of {sample} lies within [0, 1]: the pipeline takes boxes in absolute "
                        "pixels; scale normalised boxes by the image width and height first")
    return warnings
