"""The audit behind `status`: a job's output (a job run in shards or not) read back against the
job's own description of its input.

For each part (each shard `--shard I/N`, or the unsharded job): complete (its `_SUCCESS`
manifest is there), incomplete (its description is there, no manifest: running or stopped) or
not started (no file of it; N comes from the other shards' descriptions); its rows in (its
description's; a shard not started: the rows the other shards' records give it) and out; its
result files (those of interrupted writes left out while it is incomplete; those a complete
part's manifest does not list are read too, and named). Then, over the whole job: input ids
with no output row (missing), ids in more than one output row (duplicates, over every result
file in the directory), rows with errors by kind, and masks by what found them (outputs with
found_by).

Memory: the result files and the input files are read one at a time, their id (and error,
found_by and iou_scores) columns only, but the output's ids are kept (in Arrow arrays, about
the ids' size plus 8 bytes each) to find duplicates and missing ids: fine up to a few million
ids; a job of 100M rows needs some GB on the machine that runs `status`."""

import collections
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import JobConfig
from ..ids import repeated_ids
from ..masks.found_by import COUNTED_COLUMNS, FoundByCounts, render_counts
from ..output import (
    CHECKPOINT_DIR,
    JOB_FILE,
    RETRY_DIR,
    JobDescription,
    JobOutput,
    Shard,
    is_job_file,
    is_result_file,
    shard_of,
)
from ..output.layout import RESULT_FILE
from ..schema import ERROR, error_kind
from ..storage import Location, basename, store_problem
from ..text import plural

COMPLETE, INCOMPLETE, NOT_STARTED = "complete", "incomplete", "not started"
# `status`'s exit codes (2: the output cannot be read, as other commands' bad input).
EXIT_COMPLETE, EXIT_UNFINISHED, EXIT_WRONG = 0, 1, 3
_EXAMPLES = 3


@dataclass
class PartStatus:
    """One part of the job: a shard, or the whole of an unsharded job."""

    name: str  # "shard 0/4", or "job"
    state: str  # COMPLETE, INCOMPLETE or NOT_STARTED
    rows_in: Optional[int] = None  # None when no description says
    rows_out: int = 0
    result_files: int = 0
    interrupted_files: int = 0  # result files of interrupted writes, not read
    unlisted_files: List[str] = field(default_factory=list)  # a complete part's files its manifest does not list
    missing_ids: int = 0
    skipped_input_files: int = 0  # left out under input.on_bad_file: skip

    def render(self) -> str:
        facts = [f"rows in {self.rows_in if self.rows_in is not None else 'unknown'}"]
        if self.state != NOT_STARTED:
            facts += [f"rows out {self.rows_out}", plural(self.result_files, "result file")]
        if self.interrupted_files:
            facts.append(f"{self.interrupted_files} of interrupted writes left out")
        if self.missing_ids:
            facts.append(f"{self.missing_ids} ids missing")
        if self.skipped_input_files:
            facts.append(f"{plural(self.skipped_input_files, 'input file')} skipped")
        if self.unlisted_files:
            facts.append(f"{plural(len(self.unlisted_files), 'result file')} its manifest does not list "
                         f"({', '.join(self.unlisted_files[:_EXAMPLES])})")
        return f"{self.name}: {self.state}: " + ", ".join(facts)


@dataclass
class JobStatus:
    """The whole job's state, as `status` prints it."""

    url: str
    shard_count: Optional[int]
    parts: List[PartStatus] = field(default_factory=list)
    missing_ids: int = 0
    missing_examples: List[Any] = field(default_factory=list)
    duplicate_ids: int = 0  # distinct ids in more than one output row
    duplicate_examples: List[Any] = field(default_factory=list)
    null_ids: int = 0
    errors: Dict[str, int] = field(default_factory=dict)  # rows with an error, by kind
    found_by: Optional[Dict[str, int]] = None  # masks per found_by value; None for outputs without found_by
    problems: List[str] = field(default_factory=list)  # what makes the output wrong besides ids

    @property
    def complete(self) -> bool:
        return all(part.state == COMPLETE for part in self.parts)

    @property
    def exit_code(self) -> int:
        """EXIT_WRONG for duplicate ids, ids missing from a complete part or another problem;
        else EXIT_UNFINISHED while a part is not complete; else EXIT_COMPLETE."""
        lost = any(part.missing_ids for part in self.parts if part.state == COMPLETE)
        if self.duplicate_ids or lost or self.problems:
            return EXIT_WRONG
        return EXIT_COMPLETE if self.complete and not self.missing_ids else EXIT_UNFINISHED

    def render(self) -> List[str]:
        """The lines `status` prints."""
        kind = f"a job in {self.shard_count} shards" if self.shard_count else "a job without shards"
        lines = [f"output: {self.url} ({kind})"]
        lines += [f"  {part.render()}" for part in self.parts]
        states = collections.Counter(part.state for part in self.parts)
        known = [part.rows_in for part in self.parts if part.rows_in is not None]
        rows_in = str(sum(known)) if len(known) == len(self.parts) else "unknown"
        lines.append(f"total: rows in {rows_in}, rows out {sum(part.rows_out for part in self.parts)}"
                     + (f"; shards: {states[COMPLETE]} complete, {states[INCOMPLETE]} incomplete, "
                        f"{states[NOT_STARTED]} not started" if self.shard_count else f"; the job is {self.parts[0].state}"))
        lines.append(f"missing ids: {self.missing_ids}" + _examples(self.missing_examples) if self.missing_ids
                     else "missing ids: none")
        lines.append(f"duplicate ids: {self.duplicate_ids} ids appear in more than one row"
                     + _examples(self.duplicate_examples) if self.duplicate_ids else "duplicate ids: none")
        if self.null_ids:
            lines.append(f"null ids: {self.null_ids} rows")
        errors = ", ".join(f"{kind}: {n}" for kind, n in sorted(self.errors.items())) or "none"
        lines.append(f"rows with errors: {errors}")
        if self.found_by is not None:
            lines.append(render_counts(self.found_by))
        lines += [f"problem: {problem}" for problem in self.problems]
        lines.append(f"status: {self._verdict()} (exit {self.exit_code})")
        return lines

    def _verdict(self) -> str:
        code = self.exit_code
        if code == EXIT_COMPLETE:
            return "complete: every input id once"
        if code == EXIT_UNFINISHED:
            unfinished = [part.name for part in self.parts if part.state != COMPLETE]
            return (f"incomplete: {', '.join(unfinished[:5])}{', ...' if len(unfinished) > 5 else ''} not complete; "
                    "run each again with output.mode: resume (and its --shard)")
        return "WRONG: the output holds duplicate ids, lost rows or files of another job (above)"


def _examples(values: Sequence[Any]) -> str:
    return f" (e.g. {', '.join(repr(v) for v in values)})" if values else ""


class _Ids:
    """The output ids read so far, per part, with the rows' error kinds and their masks by what
    found them."""

    def __init__(self) -> None:
        self.columns: List[pa.ChunkedArray] = []
        self.errors: Dict[str, int] = collections.Counter()
        self.found_by = FoundByCounts()

    def read(self, output: JobOutput, files: List[str], id_column: str) -> "pa.ChunkedArray":
        """The ids of `files` (all kept for the duplicate check), counting their errors."""
        own: List[pa.ChunkedArray] = []
        for _, table in output.location.read_tables(files, [id_column, ERROR], optional=COUNTED_COLUMNS):
            own.append(table.column(id_column))
            self.found_by.add(table)
            for error in table.column(ERROR).drop_null().to_pylist():
                kind = error_kind(error)
                if kind is not None:
                    self.errors[kind] += 1
        self.columns += own
        chunks = [chunk for column in own for chunk in column.chunks]
        return pa.chunked_array(chunks, type=chunks[0].type) if chunks else pa.chunked_array([], pa.null())


def audit_output(output: JobOutput) -> JobStatus:
    """The state of the job whose output `output` is (its whole-output handle). ValueError when
    it holds no job's output this version can read."""
    try:
        names = output.location.names() if output.location.isdir() else []
    except Exception as e:  # noqa: BLE001 - permissions, endpoints, network
        raise ValueError(f"cannot list {output.url}: {store_problem(e, output.url)}") from None
    shards = sorted({shard for shard in (shard_of(name) for name in names) if shard is not None})
    unsharded = [n for n in names if is_job_file(n) and shard_of(n) is None and n not in (CHECKPOINT_DIR, RETRY_DIR)]
    counts = sorted({shard.count for shard in shards})
    status = JobStatus(output.url, counts[-1] if counts else None)
    if shards and unsharded:
        status.problems.append(f"the output holds both shards and a run without --shard ({', '.join(unsharded[:3])})")
    if len(counts) > 1:
        status.problems.append(f"the output holds shards of different N ({', '.join(map(str, counts))})")
    parts: List[Optional[Shard]] = ([Shard(i, status.shard_count) for i in range(status.shard_count)]
                                    if status.shard_count else [None])
    handles = [output.for_shard(part) if part is not None else output for part in parts]
    descriptions = [handle.read_description() for handle in handles]
    known = next((d for d in descriptions if d is not None), None)
    if known is None:
        raise ValueError(f"{output.url} holds no job output of this pipeline (no {JOB_FILE} nor "
                         "_samhq_job.shard-*.json, which a run writes before its first result)")
    ids = _Ids()
    id_column = known.config.input.id_column
    read: Set[str] = set()
    part_ids: List[pa.ChunkedArray] = []
    for part, handle, description in zip(parts, handles, descriptions, strict=True):
        found = _part_status(part, handle, description, known, names, ids, id_column)
        status.parts.append(found[0])
        part_ids.append(found[1])
        read |= found[2]
    strays = [n for n in names if RESULT_FILE.match(n) and output.location.join(n).path not in read
              and not _interrupted(n, status, parts)]
    if strays:
        status.problems.append(f"{plural(len(strays), 'result file')} of no part of this job ({', '.join(strays[:3])})")
        ids.read(output, [output.location.join(n).path for n in strays], id_column)
    _missing(status, descriptions, known, part_ids, id_column)
    status.null_ids, status.duplicate_ids, status.duplicate_examples = repeated_ids(_one_type(ids.columns), _EXAMPLES)
    status.errors = dict(ids.errors)
    status.found_by = None if ids.found_by.counts is None else dict(ids.found_by.counts)
    return status


def _interrupted(name: str, status: JobStatus, parts: List[Optional[Shard]]) -> bool:
    """Whether `name` is a result file of an incomplete part (not read: an interrupted write)."""
    return any(is_result_file(name, part) and found.state == INCOMPLETE
               for part, found in zip(parts, status.parts, strict=True))


def _part_status(part: Optional[Shard], handle: JobOutput, description: Optional[JobDescription],
                 known: JobDescription, names: List[str], ids: _Ids, id_column: str
                 ) -> Tuple[PartStatus, pa.ChunkedArray, Set[str]]:
    """A part's status, its output ids and the paths of the result files read."""
    name = f"shard {part}" if part is not None else "job"
    if description is None:
        rows = known.shard.rows_per_shard if known.shard is not None and part is not None else []
        found = PartStatus(name, NOT_STARTED, rows[part.index] if part is not None and part.index < len(rows) else None)
        own = [handle.location.join(n).path for n in names if is_result_file(n, part)]
        return found, ids.read(handle, own, id_column), set(own)
    manifest = handle.read_manifest()
    listing = handle.result_files().files
    own = [handle.location.join(n).path for n in names if is_result_file(n, part)]
    found = PartStatus(name, COMPLETE if manifest is not None else INCOMPLETE,
                       manifest.rows_in if manifest is not None else description.rows_in)
    files = list(listing)
    if manifest is not None:
        found.unlisted_files = sorted(basename(p) for p in set(own) - set(listing))
        files += sorted(set(own) - set(listing))
    else:
        found.interrupted_files = len(set(own) - set(listing))
    record = description.shard
    found.skipped_input_files = len(description.skipped_inputs) + (len(record.skipped_input_files) if record else 0)
    part_ids = ids.read(handle, files, id_column)
    found.rows_out, found.result_files = len(part_ids), len(files)
    return found, part_ids, set(files)


def _missing(status: JobStatus, descriptions: List[Optional[JobDescription]], known: JobDescription,
             part_ids: List[pa.ChunkedArray], id_column: str) -> None:
    """Input ids with no output row, per part: each input file's ids read in turn and looked up
    among its part's output ids. The files of shards not started are those of the whole input
    (any description's fingerprint) that no started shard holds."""
    claimed = {url for d in descriptions if d is not None and d.shard is not None for url in d.shard.input_files}
    whole = list(known.fingerprint.input_files) if known.fingerprint is not None else []
    unclaimed = [url for url in whole if url not in claimed]
    config = known.config
    for index, (description, written) in enumerate(zip(descriptions, part_ids, strict=True)):
        if description is None:
            continue
        files = _expected_files(description, whole)
        status.parts[index].missing_ids = _count_missing(status, files, written, config, id_column)
    not_started = [i for i, d in enumerate(descriptions) if d is None]
    if not_started and unclaimed:
        missing = _count_missing(status, unclaimed, pa.chunked_array([], pa.null()), config, id_column)
        if len(not_started) == 1:
            status.parts[not_started[0]].missing_ids = missing


def _expected_files(description: JobDescription, whole: List[str]) -> List[str]:
    """The input files whose every id a part must write: its shard's (or the whole input's),
    but those left out under input.on_bad_file: skip."""
    record = description.shard
    files = record.input_files if record is not None else whole
    left_out = set(description.skipped_inputs) | (set(record.skipped_input_files) if record is not None else set())
    return [url for url in files if url not in left_out]


def _count_missing(status: JobStatus, files: List[str], written: pa.ChunkedArray, config: JobConfig,
                   id_column: str) -> int:
    """How many ids of the input `files` are not `written` (a few kept as examples)."""
    missing = 0
    written_ids = written.combine_chunks() if len(written) else None
    for url in files:
        location = Location(url, config.storage)
        try:
            with location.open("rb") as f:
                input_ids = pq.read_table(f, columns=[id_column]).column(0).combine_chunks()
        except Exception as e:  # noqa: BLE001 - gone, unreadable: the missing ids cannot be known
            raise ValueError(f"cannot read the ids of input file {url}: {store_problem(e, url)}") from None
        absent = (input_ids.drop_null() if written_ids is None else
                  pc.filter(input_ids, pc.invert(pc.is_in(input_ids, value_set=written_ids.cast(input_ids.type))))
                  .drop_null())
        missing += len(absent)
        status.missing_examples += absent[: _EXAMPLES - len(status.missing_examples)].to_pylist()
    status.missing_ids += missing
    return missing


def _one_type(columns: List[pa.ChunkedArray]) -> List[pa.ChunkedArray]:
    """The id columns cast to the first one's type (result files of one job share it)."""
    typed = [c for c in columns if len(c) and c.type != pa.null()]
    return [c.cast(typed[0].type) for c in typed] if typed else []
