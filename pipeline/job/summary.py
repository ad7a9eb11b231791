"""What a job says when it ends, read back from its output: rows in and out, prompts (boxes,
where they are the only prompts) and why some got no mask, masks by what found them (outputs
with found_by), rows with errors by kind, the warnings the counts give, and the closing check
(one output row per input row, each id once)."""

import collections
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import pyarrow as pa

from samhq_core import MaskSource, SamHQMaskDecoderConfig

from ..config import JobConfig
from ..ids import repeated_ids
from ..masks.found_by import COUNTED_COLUMNS, FoundByCounts, render_counts
from ..output import JobOutput
from ..schema import BOX_ERRORS, ERROR, NUM_BOXES, error_kind
from ..text import plural

# Under xyxy, [x, y, w, h] boxes come out inverted whenever w < x or h < y: a share of inverted
# boxes this large is rarely anything else.
INVERTED_HINT_SHARE = 0.25
_EXAMPLES = 3


@dataclass
class RetryPass:
    """A --retry-errors pass: rows with transient errors run again, in place in their files."""

    rows: int = 0  # rows run again
    fixed: int = 0  # of those, rows that now have no error
    files: int = 0  # result files rewritten

    def render(self) -> str:
        if not self.rows:
            return "retry: no row had a transient error"
        return (f"retried {plural(self.rows, 'row')} with transient errors: {self.fixed} now succeed, "
                f"{self.rows - self.fixed} failed again; {plural(self.files, 'result file')} rewritten")

    def record(self) -> Dict[str, Any]:
        return {"rows": self.rows, "fixed": self.fixed, "files": self.files,
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


@dataclass
class ClosingCheck:
    """What the job verified after writing: one output row per input row, each id once."""

    rows_in: int = 0
    rows_out: int = 0
    duplicate_ids: int = 0  # distinct ids that appear more than once
    duplicate_examples: List[Any] = field(default_factory=list)
    null_ids: int = 0

    @property
    def passed(self) -> bool:
        return self.rows_out == self.rows_in and not self.duplicate_ids

    def render(self) -> str:
        if self.passed:
            return f"closing check: passed ({self.rows_out} rows out for {self.rows_in} in, every id once)"
        problems = []
        if self.rows_out != self.rows_in:
            problems.append(f"{self.rows_out} rows out for {self.rows_in} in")
        if self.duplicate_ids:
            cause = ("the input holds duplicate ids" if self.rows_out == self.rows_in
                     else "rows were written more than once")
            problems.append(f"{self.duplicate_ids} ids appear more than once (e.g. "
                            f"{', '.join(map(repr, self.duplicate_examples))}): {cause}")
        return "closing check: FAILED: " + "; ".join(problems)


@dataclass
class JobSummary:
    rows_in: int = 0
    rows_out: int = 0
    rows_already_done: int = 0  # written by the run this one resumed, and skipped
    rows_run: int = 0  # rows this run processed
    retried: Optional[RetryPass] = None  # what a --retry-errors pass did
    boxes: int = 0  # every input prompt (box), those of failed rows included
    masks: int = 0  # prompts that got their masks
    box_reasons: Dict[str, int] = field(default_factory=dict)  # why prompts got no mask, with counts
    found_by: Optional[Dict[str, int]] = None  # masks per found_by value; None for outputs without found_by
    errors: Dict[str, int] = field(default_factory=dict)  # rows with an error, by kind
    box_format: str = "xyxy"
    noun: str = "box"  # what a prompt is called: "box" where boxes are the only prompts
    masks_per_prompt: int = 1  # 3 with model.multimask_keep: all
    seconds: float = 0.0
    stats: str = ""  # Ray Data's per-stage execution stats
    skipped_files: List[str] = field(default_factory=list)  # "<url>: <reason>", input.on_bad_file: skip
    closing: Optional[ClosingCheck] = None

    @property
    def unusable_boxes(self) -> int:
        return self.boxes - self.masks

    @property
    def images_per_second(self) -> Optional[float]:
        """This run's rows per second; None when it ran none."""
        return self.rows_run / self.seconds if self.rows_run and self.seconds else None

    def warnings(self) -> List[str]:
        """What in the counts points at a wrong config rather than bad rows."""
        found = []
        inverted = sum(n for reason, n in self.box_reasons.items() if reason.startswith("inverted box"))
        if self.box_format == "xyxy" and self.boxes and inverted >= INVERTED_HINT_SHARE * self.boxes:
            found.append(f"{inverted} of {self.boxes} boxes ({inverted / self.boxes:.0%}) are inverted under "
                         "input.box_format: xyxy, as [x, y, width, height] boxes read as xyxy are; if the input "
                         "is xywh, set input.box_format: xywh and run again")
        if self.boxes and self.unusable_boxes > self.boxes / 2:
            found.append(f"most {self._nouns} could not be used ({self.unusable_boxes} of {self.boxes}): check "
                         f"input.box_format (now {self.box_format}) and that {self._nouns} are in absolute pixels of "
                         "the image")
        return found

    @property
    def _nouns(self) -> str:
        return "boxes" if self.noun == "box" else f"{self.noun}s"

    def render(self) -> str:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items())) or "none"
        resumed = (f" ({self.rows_already_done} already written by the run resumed, skipped)"
                   if self.rows_already_done else "")
        if self.retried is not None:
            resumed += f" ({self.retried.render()})"
        rate = self.images_per_second
        speed = f", {rate:.2f} images/s" if rate is not None else ", no row run"
        masks = f"{self.masks} x {self.masks_per_prompt}" if self.masks_per_prompt > 1 else str(self.masks)
        lines = [
            f"rows in: {self.rows_in}, rows out: {self.rows_out}{resumed}, {self._nouns}: {self.boxes} "
            f"(masks: {masks}, unusable: {self.unusable_boxes}), rows with errors: {errors}, "
            f"{self.seconds:.1f} s{speed}"
        ]
        if self.box_reasons:
            lines.append(f"  {self._nouns} without a mask: " + "; ".join(
                f"{reason}: {n}" for reason, n in sorted(self.box_reasons.items(), key=lambda kv: (-kv[1], kv[0]))))
        if self.found_by is not None:
            lines.append(f"  {render_counts(self.found_by)}")
        lines += [f"  warning: {w}" for w in self.warnings()]
        if self.skipped_files:
            lines.append(f"  skipped {plural(len(self.skipped_files), 'input file')} (input.on_bad_file: skip): "
                         + "; ".join(self.skipped_files))
        if self.closing is not None:
            lines.append("  " + self.closing.render())
        return "\n".join(lines)


def summarize_output(config: JobConfig, output: JobOutput, files: List[str], rows_in: int) -> JobSummary:
    """Counts over the result `files` (reads only their id and small result columns, file by
    file), and the closing check against `rows_in`."""
    model = config.model
    keeps = model.keeps_candidates(model.mask_source or MaskSource.SAM_PLUS_HQ)
    summary = JobSummary(box_format=config.input.box_format, noun=config.input.prompt_columns().noun,
                         masks_per_prompt=SamHQMaskDecoderConfig().num_multimask_outputs if keeps else 1)
    errors: Dict[str, int] = collections.Counter()
    reasons: Dict[str, int] = collections.Counter()
    id_column = config.input.id_column
    ids: List[pa.ChunkedArray] = []
    masks_found = FoundByCounts()
    for _, table in output.location.read_tables(files, [id_column, ERROR, BOX_ERRORS, NUM_BOXES],
                                                optional=COUNTED_COLUMNS):
        summary.rows_out += table.num_rows
        masks_found.add(table)
        ids.append(table.column(id_column))
        for error, box_errors, num_boxes in zip(*(table.column(c).to_pylist() for c in (ERROR, BOX_ERRORS, NUM_BOXES)),
                                                strict=True):
            summary.boxes += num_boxes or 0
            kind = error_kind(error)
            if kind is not None:
                errors[kind] += 1
                if num_boxes:
                    reasons[f"row failed ({kind})"] += num_boxes
                continue
            for reason in box_errors or []:
                if reason is None:
                    summary.masks += 1
                else:
                    reasons[reason] += 1
    summary.errors, summary.box_reasons = dict(errors), dict(reasons)
    summary.found_by = None if masks_found.counts is None else dict(masks_found.counts)
    summary.closing = closing_check(ids, rows_in)
    return summary


def closing_check(ids: List[pa.ChunkedArray], rows_in: int) -> ClosingCheck:
    """Rows out against rows in, and ids that appear more than once (nulls apart: those rows
    carry an id error)."""
    nulls, repeated, examples = repeated_ids(ids, _EXAMPLES)
    return ClosingCheck(rows_in, sum(len(c) for c in ids), repeated, examples, nulls)
