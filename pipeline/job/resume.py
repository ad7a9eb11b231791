"""What an earlier run left at the output, for a run that continues it (`output.mode: resume`)
or runs its transiently failed rows again (`--retry-errors`), and why it cannot when it
cannot: a different config, input files or weights replaced since (`Fingerprint`), results
without the checkpoint that says which rows they hold, or a checkpoint that cannot be trusted."""

import concurrent.futures
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import JobConfig
from ..ids import InputIdKeys
from ..output import Fingerprint, JobDescription, JobOutput, changed_settings, job_file, success_file
from ..schema import ERROR, error_kind
from ..storage import basename, is_transient

_FOOTER_THREADS = 32
_STR_OBJECT_BYTES = 49  # sys.getsizeof("") on CPython 3.10+: a compact ASCII str's header
# Errors that come from the row's data: another try meets them again.
_DATA_ERROR_KINDS = ("id", "boxes", "per_box", "image_decode")


@dataclass(frozen=True)
class ResumeState:
    """What an earlier run at the output left (`output.mode: resume`)."""

    rows_done: int = 0  # rows the checkpoint holds as written
    # What Ray Data will count the restored ids as (an int64 array, or an object array of str:
    # 8 bytes a pointer plus each str object), estimated from the checkpoint's entries; it sizes
    # the checkpoint filter actor's memory reservation from that.
    restored_bytes: int = 0
    complete: bool = False  # the earlier run finished (its _SUCCESS manifest is there)
    # Input files an earlier run of the output found unreadable and left out (JobDescription).
    skipped_inputs: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    @property
    def rows_from_skipped(self) -> int:
        """Rows of the left-out files written before they failed: they stay in the output."""
        return sum(int(entry.get("rows_written", 0)) for entry in self.skipped_inputs.values())

    @property
    def filters_rows(self) -> bool:
        """Whether Ray Data will filter the input against the checkpoint (an actor of its own)."""
        return self.rows_done > 0 and not self.complete


@dataclass
class RetryState:
    """The rows of a completed output whose errors another try may not meet (`--retry-errors`)."""

    files: Dict[str, List[Any]] = field(default_factory=dict)  # result file (path in its filesystem) → ids
    examples: List[str] = field(default_factory=list)  # some of their errors

    @property
    def ids(self) -> List[Any]:
        return [row_id for ids in self.files.values() for row_id in ids]


def retryable(error: Optional[str]) -> bool:
    """Whether a row's `error` is a transient failure (a store's or network's, or a read that
    timed out) rather than one of its data."""
    return error is not None and error_kind(error) not in _DATA_ERROR_KINDS and is_transient(error)


def _differences(description: JobDescription, config: JobConfig) -> str:
    return ", ".join(changed_settings(description.config, config)) or "its description is from another version"


def _input_changes(description: JobDescription, fingerprint: Optional[Fingerprint], what: str,
                   url: str) -> List[str]:
    """The problem when the input files or weights are not those the earlier run used."""
    if fingerprint is None or description.fingerprint is None:
        return []
    changes = fingerprint.changes_since(description.fingerprint)
    if not changes:
        return []
    return [f"{what}: the input or weights changed since the run that wrote {url} ({'; '.join(changes)}): its results "
            "would mix rows made from different data or weights; restore them as they were, or start over with "
            "output.mode: overwrite"]


def check_resume(config: JobConfig, output: JobOutput, fingerprint: Optional[Fingerprint] = None,
                 input_ids: Optional[InputIdKeys] = None) -> Tuple[ResumeState, List[str]]:
    """What an earlier run at the output left, or why it cannot be resumed: another config,
    input files or weights changed since (`fingerprint`, now), a checkpoint entry that cannot
    be read, or one listing ids that the input (`input_ids`, when given) does not hold."""
    description = output.read_description()
    if description is None:
        if any(basename(path) != output.lease_name for path in output.job_files()):
            return ResumeState(), [f"output.mode: resume: {output.url} holds results but no {job_file(output.shard)}; "
                                   "it cannot be resumed: use output.mode: overwrite"]
        return ResumeState(), []  # nothing there yet: a first run
    if changed_settings(description.config, config):
        return ResumeState(), [f"output.mode: resume: the config differs from the run being resumed at {output.url} "
                               f"({_differences(description, config)}); resume with the same input, model and output "
                               "settings, or use output.mode: overwrite"]
    changed = _input_changes(description, fingerprint, "output.mode: resume", output.url)
    if changed:
        return ResumeState(), changed
    if output.read_manifest() is not None:
        return ResumeState(complete=True, skipped_inputs=description.skipped_inputs), []
    done, restored, problems = _checkpoint_rows(output, input_ids)
    if problems:
        return ResumeState(), problems
    if not done and output.result_files().files:
        return ResumeState(), [f"output.mode: resume: {output.url} holds results but its checkpoint "
                               f"({output.checkpoint.url}) lists no rows as written; it cannot be resumed: use "
                               "output.mode: overwrite"]
    return ResumeState(rows_done=done, restored_bytes=restored, skipped_inputs=description.skipped_inputs), []


def _restored_size(rows: int, text_bytes: Optional[int]) -> int:
    """Ray's size of `rows` restored ids: int64, or str (`text_bytes` of text in all, ASCII:
    sys.getsizeof of a compact str is 49 bytes plus its characters) behind 8-byte pointers."""
    return 8 * rows + (0 if text_bytes is None else _STR_OBJECT_BYTES * rows + text_bytes)


def _checkpoint_rows(output: JobOutput, input_ids: Optional[InputIdKeys]) -> Tuple[int, int, List[str]]:
    """The rows the checkpoint's committed entries list and their restored size
    (`_restored_size`), read in threads (whole, when the input's ids are given to check them
    against; else their footers), or the entries that cannot be read or list ids the input
    does not hold."""
    checkpoint = output.checkpoint
    fs = checkpoint.fs

    def read(path: str) -> Tuple[int, int, int, Optional[str]]:
        """(rows, their restored size, those of its ids the input lacks when they are checked,
        the problem reading it)."""
        try:
            if input_ids is None:
                with fs.open(path, "rb") as f:
                    meta = pq.ParquetFile(f).metadata
                rows = int(meta.num_rows)
                chunks = [meta.row_group(g).column(0) for g in range(meta.num_row_groups)]
                # A text column's plain values are each a 4-byte length and the text.
                text = (sum(c.total_uncompressed_size for c in chunks) - 4 * rows
                        if chunks and chunks[0].physical_type == "BYTE_ARRAY" else None)
                return rows, _restored_size(rows, text), 0, None
            ids = output.checkpoint_entry_ids(path)
            text = int(pc.sum(pc.utf8_length(ids)).as_py() or 0) if pa.types.is_string(ids.type) else None
            return len(ids), _restored_size(len(ids), text), input_ids.lacks(ids), None  # in this entry's thread, then let go
        except Exception as e:  # noqa: BLE001 - truncated, corrupt or not Parquet at all
            return 0, 0, 0, f"{type(e).__name__}: {e}"[:300]

    entries = output.committed_checkpoint_entries()
    with concurrent.futures.ThreadPoolExecutor(_FOOTER_THREADS) as pool:
        found = list(pool.map(read, entries))
    unreadable = [(checkpoint.url_of(path), problem) for path, (_, _, _, problem) in zip(entries, found, strict=True)
                  if problem is not None]
    if unreadable:
        url, problem = unreadable[0]
        name = basename(url)[: -len(".parquet")]
        return 0, 0, [f"output.mode: resume: {len(unreadable)} checkpoint entries cannot be read, e.g. {url} ({problem}); "
                   f"remove each with the result files it covers (for this one: {output.url}/{name}*.parquet), whose "
                   "rows are then processed again, or start over with output.mode: overwrite"]
    foreign = sum(lacking for _, _, lacking, _ in found)
    if foreign:
        return 0, 0, [f"output.mode: resume: the checkpoint at {checkpoint.url} lists {foreign} ids that the input "
                      "does not hold: it belongs to another input (or was edited); start over with output.mode: "
                      "overwrite"]
    return sum(rows for rows, _, _, _ in found), sum(size for _, size, _, _ in found), []


def check_retry(config: JobConfig, output: JobOutput, fingerprint: Optional[Fingerprint] = None
                ) -> Tuple[Optional[RetryState], List[str]]:
    """The rows with transient errors in the completed output (their id and error columns
    read, file by file in threads), or why there is none to retry (also: the input files or
    weights changed since, `fingerprint` being now's)."""
    description = output.read_description()
    if description is None:
        return None, [f"--retry-errors: {output.url} holds no results of this pipeline (no "
                      f"{job_file(output.shard)}); run the job first"]
    if changed_settings(description.config, config):
        return None, [f"--retry-errors: the config differs from the one that wrote {output.url} "
                      f"({_differences(description, config)}); retry with the same input, model and output settings"]
    changed = _input_changes(description, fingerprint, "--retry-errors", output.url)
    if changed:
        return None, changed
    if output.read_manifest() is None:
        return None, [f"--retry-errors: {output.url} has no {success_file(output.shard)}: its run has not finished; complete it "
                      "with output.mode: resume first"]
    retry = RetryState()
    for path, table in output.read_tables(output.result_files().files, [config.input.id_column, ERROR]):
        rows = [(row_id, error) for row_id, error in zip(*(c.to_pylist() for c in table.columns), strict=True)
                if retryable(error)]
        if rows:
            retry.files[path] = [row_id for row_id, _ in rows]
            retry.examples += [error for _, error in rows][: 3 - len(retry.examples)]
    return retry, []
