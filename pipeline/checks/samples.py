"""What the input's first rows, or its id column, say about a config before any work starts:
boxes that look like another box_format, prompt and category lists that disagree on the
number of prompts, image URIs that all lie outside the allowed prefixes, and ids that a
resumed run could not tell apart."""

import math
from typing import Callable, List, Tuple

import pyarrow as pa

from ..config import JobConfig
from ..ids import InputIdKeys, repeated_ids
from ..inputs.boxes import per_box_columns, per_box_mismatch
from ..inputs.images import input_directory, resolve_image_uri
from ..inputs.prompts import count_mismatch, prompt_counts
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
    first, (values,) = sample
    directory = input_directory(scan.location)
    uris = [u for u in values if isinstance(u, str) and u]
    outside = [u for u in uris if not uri_allowed(resolve_image_uri(u, directory), inp.allowed_uri_prefixes)]
    if not outside or len(outside) < len(uris):  # a few hostile rows are those rows' errors, not the job's
        return []
    return [f"input.allowed_uri_prefixes: all {len(uris)} of the first image URIs of {first.url} lie "
            f"outside {', '.join(inp.allowed_uri_prefixes)} (e.g. {outside[0]}); list where the images are in "
            "input.allowed_uri_prefixes"]


def check_per_box_lengths(scan: InputScan, config: JobConfig) -> Tuple[List[str], List[str]]:
    """(problems, warnings) from the first rows of one file: rows whose lists meant to hold an
    entry per prompt (the prompt columns, the categories) hold different numbers of entries.
    Each such row becomes that row's error ("per_box") in the job; when every sampled row with
    two such lists is one, the config names the wrong column, and the job is refused."""
    prompts = config.input.prompt_columns()
    prompt_columns, per_box = [column for _, column in prompts.named()], per_box_columns(config)
    if len(prompt_columns) + len(per_box) < 2:
        return [], []
    sample = scan.first_rows(*prompt_columns, *per_box.values())
    if sample is None:
        return [], []
    first, values = sample
    checked, wrong = 0, []  # wrong: (what is wrong, what the config may name wrongly) per row
    for row in zip(*values, strict=True):
        lists = dict(zip([*prompt_columns, *per_box.values()], row, strict=True))
        if any(not isinstance(v, list) for v in lists.values() if v is not None):
            continue
        counts = prompt_counts(lists, prompts)
        entries = {key: len(lists[column]) for key, column in per_box.items() if lists[column] is not None}
        if len(counts) + len(entries) < 2:
            continue
        checked += 1
        count = next(iter(counts.values()), 0)
        if len(set(counts.values())) > 1:
            wrong.append((count_mismatch(counts), "do the prompt columns hold one entry per prompt, aligned?"))
        for key, n in entries.items():
            if counts and n != count:
                column = per_box[key]
                nouns = "boxes" if prompts.noun == "box" else "prompts"
                wrong.append((per_box_mismatch(key, column, n, count, prompts.noun),
                              f"is {column!r} the column of the {nouns}' categories?"))
                break
    if not wrong:
        return [], []
    example, hint = wrong[0]
    finding = f"{len(wrong)} of the first {checked} rows of {first.url}: {example}"
    if len(wrong) == checked:
        return [f"{finding}; {hint}"], []
    return [], [f"{finding}; such rows are written with a per_box error"]


def check_ids_unique(keys: InputIdKeys, read_ids: Callable[[], pa.ChunkedArray], id_column: str,
                     resuming: bool) -> Tuple[List[str], List[str]]:
    """(problems, warnings) of null and duplicate ids, known before any work: the job tells
    rows apart by id (the closing check, --retry-errors), so ids must be unique. A null id is
    that row's error, except in a resumed run (`resuming`), which skips the rows already
    written by id and so needs one for every row. The ids are read again (`read_ids`) only
    when their `keys` repeat, to tell the same id twice from a collision and to name them."""
    nulls = keys.nulls
    repeated, examples = repeated_ids([read_ids()])[1:] if keys.may_repeat() else (0, [])
    problems, warnings = [], []
    if nulls and resuming:
        problems.append(f"input.id_column: {nulls} rows have a null {id_column!r}; output.mode: resume skips the rows "
                        "already written by id, so every row needs one")
    elif nulls:
        warnings.append(f"input.id_column: {nulls} rows have a null {id_column!r}: each comes out as a row error, and "
                        "output.mode: resume would refuse the input; give every row an id")
    if repeated:
        problems.append(f"input.id_column: {repeated} ids appear more than once (e.g. "
                        f"{', '.join(map(repr, examples))}); the job tells rows apart by id (what a resumed run skips, "
                        "the closing check), so ids must be unique")
    return problems, warnings


# Shares of the sampled boxes inverted under xyxy: from the first, a warning; above the
# second ("most"), the job is refused unless told to go on (xywh boxes read as xyxy come out
# inverted whenever w < x or h < y).
INVERTED_WARNING_SHARE, INVERTED_REFUSAL_SHARE = 0.25, 0.5
FORCE_BOX_FORMAT = "--force-box-format"


def box_format_evidence(scan: InputScan, boxes_column: str, box_format: str) -> Tuple[List[str], List[str]]:
    """(problems, warnings) from the first rows of one file. Most boxes inverted under xyxy
    (the sign of xywh boxes read as xyxy), or every coordinate within [0, 1] (normalised boxes,
    where the pipeline takes absolute pixels), is a problem: the whole job would make masks of
    misread boxes. Fewer inverted boxes are a warning."""
    found = scan.first_rows(boxes_column)
    if found is None:
        return [], []
    first, (values,) = found
    boxes = [box for row in values if isinstance(row, list)
             for box in row if isinstance(box, list) and len(box) == 4
             and all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)]
    if not boxes:
        return [], []
    problems, warnings = [], []
    sample = f"{len(boxes)} boxes in the first rows of {first.url}"
    go_on = f"; if they are right as they are, run with {FORCE_BOX_FORMAT}"
    if box_format == "xyxy":
        inverted = sum(b[2] < b[0] or b[3] < b[1] for b in boxes)
        finding = (f"input.box_format is xyxy, but {inverted} of {sample} have x2 < x1 or y2 < y1, as [x, y, width, "
                   "height] boxes read as xyxy do; if the boxes are xywh, set input.box_format: xywh")
        if inverted > INVERTED_REFUSAL_SHARE * len(boxes):
            problems.append(finding + go_on)
        elif inverted >= max(1, INVERTED_WARNING_SHARE * len(boxes)):
            warnings.append(finding)
    if all(0.0 <= v <= 1.0 for b in boxes for v in b) and any(v > 0 for b in boxes for v in b):
        problems.append(f"input.boxes_column: every coordinate of {sample} lies within [0, 1]: the pipeline takes "
                        "boxes in absolute pixels; scale normalised boxes by the image width and height first"
                        + go_on)
    return problems, warnings
