"""What an earlier run left at the output, for a run that continues it (`output.mode: resume`)
or runs its transiently failed rows again (`--retry-errors`), and why it cannot when it
cannot: a different config, or results without the checkpoint that says which rows they hold."""

import concurrent.futures
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import pyarrow.parquet as pq

from ..config import JobConfig
from ..output import JOB_FILE, SUCCESS_FILE, JobDescription, JobOutput, changed_settings
from ..schema import ERROR, error_kind
from ..storage import is_transient

_FOOTER_THREADS = 32
# Errors that come from the row's data: another try meets them again.
_DATA_ERROR_KINDS = ("id", "boxes", "per_box", "image_decode")


@dataclass(frozen=True)
class ResumeState:
    """What an earlier run at the output left (`output.mode: resume`)."""

    rows_done: int = 0  # rows the checkpoint holds as written
    complete: bool = False  # the earlier run finished (its _SUCCESS manifest is there)

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


def check_resume(config: JobConfig, output: JobOutput) -> Tuple[ResumeState, List[str]]:
    """What an earlier run at the output left, or why it cannot be resumed."""
    description = output.read_description()
    if description is None:
        if output.job_files():
            return ResumeState(), [f"output.mode: resume: {output.url} holds results but no {JOB_FILE}; it cannot be "
                                   "resumed: use output.mode: overwrite"]
        return ResumeState(), []  # nothing there yet: a first run
    if changed_settings(description.config, config):
        return ResumeState(), [f"output.mode: resume: the config differs from the run being resumed at {output.url} "
                               f"({_differences(description, config)}); resume with the same input, model and output "
                               "settings, or use output.mode: overwrite"]
    if output.read_manifest() is not None:
        return ResumeState(complete=True), []
    committed = output.committed_checkpoint_entries()
    fs = output.checkpoint.fs

    def rows(path: str) -> int:
        with fs.open(path, "rb") as f:
            return int(pq.ParquetFile(f).metadata.num_rows)

    with concurrent.futures.ThreadPoolExecutor(_FOOTER_THREADS) as pool:
        done = sum(pool.map(rows, committed))
    if not done and output.result_files().files:
        return ResumeState(), [f"output.mode: resume: {output.url} holds results but its checkpoint "
                               f"({output.checkpoint.url}) lists no rows as written; it cannot be resumed: use "
                               "output.mode: overwrite"]
    return ResumeState(rows_done=done), []


def check_retry(config: JobConfig, output: JobOutput) -> Tuple[Optional[RetryState], List[str]]:
    """The rows with transient errors in the completed output (their id and error columns
    read, file by file in threads), or why there is none to retry."""
    description = output.read_description()
    if description is None:
        return None, [f"--retry-errors: {output.url} holds no results of this pipeline (no {JOB_FILE}); run the job "
                      "first"]
    if changed_settings(description.config, config):
        return None, [f"--retry-errors: the config differs from the one that wrote {output.url} "
                      f"({_differences(description, config)}); retry with the same input, model and output settings"]
    if output.read_manifest() is None:
        return None, [f"--retry-errors: {output.url} has no {SUCCESS_FILE}: its run has not finished; complete it "
                      "with output.mode: resume first"]
    retry = RetryState()
    for path, table in output.read_tables(output.result_files().files, [config.input.id_column, ERROR]):
        rows = [(row_id, error) for row_id, error in zip(*(c.to_pylist() for c in table.columns), strict=True)
                if retryable(error)]
        if rows:
            retry.files[path] = [row_id for row_id, _ in rows]
            retry.examples += [error for _, error in rows][: 3 - len(retry.examples)]
    return retry, []
