"""Build and run the annotation job on Ray Data, then summarise what it wrote.

`run_job` first runs every check of `pipeline.preflight` (nothing is read, written or
deleted when one fails), then checks the cluster's resources, says in one line per stage
what will run where, reports progress while the job runs, and ends with a summary read
back from the output.
"""

import collections
import math
import re
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, cast

import pyarrow as pa
import ray
from ray.data.checkpoint import CheckpointConfig
from ray.data.expressions import col

from samhq_core import SamHQConfig

from .config import ConfigError, JobConfig
from .ids import repeated_ids
from .output_files import (
    JOB_FILE_FORMAT,
    SUCCESS_FILE,
    ResultFilenames,
    checkpoint_path,
    config_digest,
    read_job_description,
    read_manifest,
    remove_job_files,
    replace_rows,
    result_files,
    retry_path,
    write_job_description,
    write_json,
)
from .preflight import JobPlan, Resources, check_resources, cluster_resources, num_gpus_per_actor, plan_job, read_columns
from .schema import BOX_ERRORS, ERROR, NUM_BOXES, error_kind
from .stages import Stage, check_column_flow, decode_memory, decode_stage, encode_stage, model_stage
from .stages.crash_guard import CrashGuard
from .storage import (
    TRANSIENT_ERRORS,
    arrow_filesystem,
    basename,
    filesystem,
    list_parquet_files,
    read_tables,
    remove,
)

Log = Callable[[str], None]
# Under xyxy, [x, y, w, h] boxes come out inverted whenever w < x or h < y: a share of inverted
# boxes this large is rarely anything else.
_INVERTED_HINT_SHARE = 0.25
# Ray Data's checkpoint filter actor (resumed runs) holds the sorted ids written so far; its
# default reservation (1 GiB, up to 10 actors) would starve a small cluster of the CPUs and
# memory its read and write tasks need. One actor does a searchsorted per block.
_CHECKPOINT_FILTER_MEMORY = 256 << 20
_EXAMPLES = 3
# Default block bounds (input.num_blocks unset): a 10M-image job becomes about 10k result files.
_ROWS_PER_BLOCK = 1000
_BLOCK_BYTES = 256 << 20


def _print(message: str) -> None:
    print(message, flush=True)


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


class JobFailed(RuntimeError):
    """The job stopped before it had written every row; what it wrote stays (a resumable
    output), and the message says why it stopped and how to go on."""


_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (\S.*)$", re.M)


def root_cause(exception: BaseException) -> str:
    """"<type>: <message>" of what stopped a job: Ray wraps a task's error in its own, with the
    original's traceback in the message, so the innermost exception of the chain that says
    something gives the last error line of its text, or its own first line."""
    chain: List[BaseException] = []
    current: Optional[BaseException] = exception
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for inner in reversed(chain):
        text = str(inner).strip()
        lines = _ERROR_LINE.findall(text)
        if lines:
            kind, message = lines[-1]
            return f"{kind.rsplit('.', 1)[-1]}: {message}"[:500]
        if text:
            return f"{type(inner).__name__}: {text.splitlines()[0]}"[:500]
    return type(exception).__name__


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
    retried: Optional["RetryPass"] = None  # what a --retry-errors pass did
    boxes: int = 0  # every input box, those of failed rows included
    masks: int = 0
    box_reasons: Dict[str, int] = field(default_factory=dict)  # why boxes got no mask, with counts
    errors: Dict[str, int] = field(default_factory=dict)  # rows with an error, by kind
    box_format: str = "xyxy"
    seconds: float = 0.0
    stats: str = ""  # Ray Data's per-stage execution stats
    skipped_files: List[str] = field(default_factory=list)  # "<url>: <reason>", input.on_bad_file: skip
    closing: Optional[ClosingCheck] = None

    @property
    def unusable_boxes(self) -> int:
        return self.boxes - self.masks

    @property
    def images_per_second(self) -> float:
        return self.rows_out / self.seconds if self.seconds else 0.0

    def warnings(self) -> List[str]:
        """What in the counts points at a wrong config rather than bad rows."""
        found = []
        inverted = sum(n for reason, n in self.box_reasons.items() if reason.startswith("inverted box"))
        if self.box_format == "xyxy" and self.boxes and inverted >= _INVERTED_HINT_SHARE * self.boxes:
            found.append(f"{inverted} of {self.boxes} boxes ({inverted / self.boxes:.0%}) are inverted under "
                         "input.box_format: xyxy, as [x, y, width, height] boxes read as xyxy are; if the input "
                         "is xywh, set input.box_format: xywh and run again")
        if self.boxes and self.unusable_boxes > self.boxes / 2:
            found.append(f"most boxes could not be used ({self.unusable_boxes} of {self.boxes}): check "
                         f"input.box_format (now {self.box_format}) and that boxes are in absolute pixels of the "
                         "image")
        return found

    def render(self) -> str:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items())) or "none"
        resumed = (f" ({self.rows_already_done} already written by the run resumed, skipped)"
                   if self.rows_already_done else "")
        if self.retried is not None:
            resumed += f" ({self.retried.render()})"
        lines = [
            f"rows in: {self.rows_in}, rows out: {self.rows_out}{resumed}, boxes: {self.boxes} "
            f"(masks: {self.masks}, unusable: {self.unusable_boxes}), rows with errors: {errors}, "
            f"{self.seconds:.1f} s, {self.images_per_second:.2f} images/s"
        ]
        if self.box_reasons:
            lines.append("  boxes without a mask: " + "; ".join(
                f"{reason}: {n}" for reason, n in sorted(self.box_reasons.items(), key=lambda kv: (-kv[1], kv[0]))))
        lines += [f"  warning: {w}" for w in self.warnings()]
        if self.skipped_files:
            lines.append(f"  skipped {plural(len(self.skipped_files), 'input file')} (input.on_bad_file: skip): "
                         + "; ".join(self.skipped_files))
        if self.closing is not None:
            lines.append("  " + self.closing.render())
        return "\n".join(lines)


class RowCounter:
    """Rows each stage that counts has finished ("model", "encoded"), for progress lines."""

    def __init__(self) -> None:
        self.rows: Dict[str, int] = collections.Counter()

    def add(self, stage: str, rows: int) -> None:
        self.rows[stage] += rows

    def value(self) -> Dict[str, int]:
        return dict(self.rows)


class ProgressReporter:
    """A driver thread that logs rows done / total, images/s and the time left, every
    `interval` seconds, whether or not stdout is a terminal."""

    def __init__(self, counter: "ray.actor.ActorHandle", total: int, interval: float, log: Log) -> None:
        self.counter, self.total, self.interval, self.log = counter, total, interval, log
        self.start = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def __enter__(self) -> "ProgressReporter":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        # One question to the counter at a time, waited on across intervals: a reply dropped at
        # each timeout and asked again would never arrive while the counter starts on a busy
        # node, and the job could end without one progress line.
        reply: Any = None
        while not self._stop.wait(self.interval):
            if reply is None:
                reply = self.counter.value.remote()
            try:
                done = ray.get(reply, timeout=self.interval)
            except ray.exceptions.GetTimeoutError:
                continue
            except ray.exceptions.RayError:
                reply = None  # a restarting counter; ask again next interval
                continue
            reply = None
            self.log(progress_line(done.get("model", 0), done.get("encoded", 0), self.total,
                                   time.perf_counter() - self.start))


def progress_line(modelled: int, encoded: int, total: int, seconds: float) -> str:
    """Rows through the model (the rate and time left follow it) and rows encoded for writing:
    Ray Data may run the model well ahead of the writes (on a small cluster, until the decode
    tasks are done)."""
    rate = modelled / seconds if seconds > 0 else 0.0
    share = f" ({modelled / total:.0%})" if total else ""
    eta = f", about {_duration((total - modelled) / rate)} left" if rate > 0 and total > modelled else ""
    return (f"progress: {modelled} / {total} rows through the model{share}, {encoded} encoded for writing, after "
            f"{_duration(seconds)}, {rate:.2f} images/s{eta}")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe_model(config: SamHQConfig) -> str:
    v = config.vision_config
    if v.encoder_type == "tiny_vit":
        encoder = "vit_tiny"
    else:
        encoder = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}.get(v.hidden_size, f"ViT {v.hidden_size}x{v.num_hidden_layers}")
    kind = "SAM-HQ" if config.mask_decoder_config.hq else "SAM"
    return f"{encoder} {kind} at {v.image_size} px"


def output_columns(config: JobConfig) -> List[str]:
    """The input columns the output keeps: id, passthrough, category, image URIs, and the
    image bytes with output.include_image_bytes."""
    inp = config.input
    keep = [inp.id_column, *inp.passthrough_columns]
    for extra in (inp.category_column, inp.image_uri_column):
        if extra:
            keep.append(extra)
    if config.output.include_image_bytes and inp.image_column:
        keep.append(inp.image_column)
    return list(dict.fromkeys(keep))


def job_stages(plan: JobPlan, resources: Resources, counter: Optional["ray.actor.ActorHandle"] = None,
               crash_guard: Optional[CrashGuard] = None) -> List[Stage]:
    """decode (CPU tasks) → SAM-HQ (actor pool) → RLE encode (CPU tasks)."""
    config = plan.config
    keep = output_columns(config)
    return [
        decode_stage(config.input, config.storage, plan.image_size, config.compute.decode_batch_size,
                     keep_image=config.input.image_column in keep, crash_guard=crash_guard),
        model_stage(config.model, config.storage, config.compute, num_gpus_per_actor(config, resources),
                    plan.image_size, describe_model(plan.model_config), counter, crash_guard),
        encode_stage(keep, config.output.path, counter, crash_guard),
    ]


def build_dataset(plan: JobPlan, resources: Resources, counter: Optional["ray.actor.ActorHandle"] = None,
                  log: Log = _print, verbose: bool = False, only_ids: Optional[List[Any]] = None,
                  crash_guard: Optional[CrashGuard] = None) -> ray.data.Dataset:
    """read Parquet (the rows of `only_ids` alone, when given: a --retry-errors pass, which
    has no checkpoint), then the job's stages in turn."""
    config = plan.config
    stages = job_stages(plan, resources, counter, crash_guard)
    columns = read_columns(config)
    check_column_flow(stages, columns)
    read_fs, _ = arrow_filesystem(config.input.path, config.storage)
    ds = ray.data.read_parquet([f.path for f in plan.scan.files], filesystem=read_fs).select_columns(columns)
    if only_ids is not None:
        ds = ds.filter(expr=col(config.input.id_column).is_in(only_ids))
    num_blocks = block_count(plan)
    _size_blocks(ds, plan, num_blocks)
    ds.context.checkpoint_config = job_checkpoint(config) if only_ids is None else None
    # Reads, writes and checkpoint entries retry (10 tries, backoff up to 32 s: about 2.5 min
    # in all) on the store's transient errors as our clients word them too. Ray warns on any
    # change to the list that its substring matching is deprecated; ours are regexes.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.context.retried_io_errors = list(dict.fromkeys([*ds.context.retried_io_errors, *TRANSIENT_ERRORS]))
    ds.context.enable_progress_bars = verbose
    log(f"input:   {plural(len(plan.scan.files), 'Parquet file')}, {plural(plan.scan.num_rows, 'row')}, "
        f"{_size(plan.scan.read_bytes)} to read, in about {num_blocks} blocks (input.num_blocks)")
    for stage in stages:
        log(f"{stage.name + ':':<8} {stage.description}")
        ds = stage.apply(ds)
    log(f"cluster: {resources.describe()}")
    return ds


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def job_checkpoint(config: JobConfig) -> CheckpointConfig:
    """Ray Data's checkpointing for the job: every written result file's ids are recorded (a
    pending entry before the file is written, committed after), and a rerun over the same
    checkpoint filters out the ids already written and deletes the files of interrupted
    writes. The job removes the checkpoint itself, only after its closing check and manifest,
    so that a driver that dies in between still leaves a resumable output."""
    fs, path = arrow_filesystem(checkpoint_path(config), config.storage)
    checkpoint = CheckpointConfig(config.input.id_column, path, override_filesystem=fs,
                                  delete_checkpoint_on_success=False)
    checkpoint.checkpoint_actor_pool_max_size = 1
    checkpoint.checkpoint_actor_memory_bytes = _CHECKPOINT_FILTER_MEMORY
    return checkpoint


def block_count(plan: JobPlan) -> int:
    """input.num_blocks, or by default 4 blocks per model actor, more for a large input:
    blocks of at most _ROWS_PER_BLOCK rows and _BLOCK_BYTES of input. A block is one result
    file and one checkpoint entry: what a crash costs, and what a worker holds at once."""
    scan = plan.scan
    return plan.config.input.num_blocks or max(4 * plan.config.compute.num_actors,
                                               math.ceil(scan.num_rows / _ROWS_PER_BLOCK),
                                               math.ceil(scan.read_bytes / _BLOCK_BYTES))


def _size_blocks(ds: ray.data.Dataset, plan: JobPlan, num_blocks: int) -> None:
    """Make Ray Data cut the input into about `num_blocks` blocks. Its Parquet reader ignores
    override_num_blocks and packs small files into one block, which one actor then processes
    alone; blocks are cut by size, so this dataset's target block size is set from the rows'
    average size in the Parquet footers (halved: a block is cut once it exceeds the target, so
    blocks come out between 1 and 2 targets big)."""
    rows = plan.scan.num_rows
    rows_per_block = max(1, math.ceil(rows / num_blocks))
    row_bytes = max(1, plan.scan.read_bytes // max(rows, 1))
    ds.context.target_max_block_size = max(1024, row_bytes * rows_per_block // 2)


def run_job(config: JobConfig, plan: Optional[JobPlan] = None, log: Log = _print, verbose: bool = False,
            progress_interval: float = 10.0) -> JobSummary:
    """Run the job to completion and return its summary (read back from the output).

    Runs the preflight checks first (or takes the `plan` they returned) and then checks the
    connected Ray cluster's resources: ConfigError before anything is written. Joins the
    connected cluster (`ray.init` first, else Ray Data starts a local one). After writing, the
    closing check reads the output's ids; only when it passes is the `_SUCCESS` manifest
    written (and the checkpoint removed). The caller decides what a failed check means
    (`summary.closing.passed`)."""
    start = time.perf_counter()
    plan = plan or plan_job(config)
    config = plan.config
    for warning in plan.warnings:
        log(f"warning: {warning}")
    if plan.resume.complete:
        log(f"output: {config.output.path} holds a completed run ({SUCCESS_FILE}); nothing to resume")
        return _finish(plan, start, rows_done=plan.scan.num_rows, stats="")
    if plan.retry is not None and not plan.retry.ids:
        log(f"retry:   no row of {config.output.path} has a transient error; nothing to run again")
        return _finish(plan, start, 0, "", RetryPass())
    resources = cluster_resources()
    problems = check_resources(config, resources, decode_memory(config.compute.decode_batch_size,
                                                                config.input.max_image_pixels),
                               checkpoint_filter=plan.resume.filters_rows)
    if problems:
        raise ConfigError(problems)
    if plan.retry is not None:
        return _retry_errors(plan, resources, start, log, verbose, progress_interval)
    if config.output.mode == "overwrite":  # only the job's own files are there (checked in the plan)
        remove_job_files(config.output.path, config.storage)
    if config.output.mode != "resume" or read_job_description(config.output.path, config.storage) is None:
        write_job_description(config.output.path, config.storage, config.to_dict(), plan.scan.num_rows)
    if plan.resume.rows_done:
        log(f"resume:  {plan.resume.rows_done} of {plan.scan.num_rows} rows already written; the rest is processed "
            "(Ray Data filters the input against the checkpoint)")
    remaining = plan.scan.num_rows - plan.resume.rows_done
    stats = _run_stages(plan, resources, config.output.path, remaining, log, verbose, progress_interval)
    return _finish(plan, start, plan.resume.rows_done, stats)


def _run_stages(plan: JobPlan, resources: Resources, destination: str, rows: int, log: Log, verbose: bool,
                progress_interval: float, only_ids: Optional[List[Any]] = None) -> str:
    """Run the job's dataset (over the rows of `only_ids` alone, when given) into result files
    at `destination`, with progress lines; returns Ray Data's stats. JobFailed when it stops."""
    config = plan.config
    # Ray's stubs type .remote() of an actor class as "handle or class"; it is the handle.
    counter = cast("ray.actor.ActorHandle", ray.remote(num_cpus=0)(RowCounter).remote())
    guard = CrashGuard(config.input.id_column, config.compute.max_worker_crashes)
    dataset = build_dataset(plan, resources, counter, log, verbose, only_ids, guard)
    out_fs, out_path = arrow_filesystem(destination, config.storage)
    # Without a floor, each batch the model hands on (batch_size rows) would be a file of its
    # own and a checkpoint entry: millions of tiny files on a large job.
    rows_per_file = math.ceil(plan.scan.num_rows / block_count(plan))
    try:
        with ProgressReporter(counter, rows, progress_interval, log):
            dataset.write_parquet(out_path, filesystem=out_fs, filename_provider=ResultFilenames(),
                                  min_rows_per_file=rows_per_file)
    except Exception as e:  # noqa: BLE001 - Ray raises its own wrappers of whatever stopped a task
        if only_ids is not None:
            raise JobFailed(f"the --retry-errors pass stopped: {root_cause(e)}. The output at {config.output.path} "
                            "is as it was; run the pass again once the cause is fixed") from e
        written = len(result_files(config.output.path, config.storage).files)
        raise JobFailed(f"the job stopped: {root_cause(e)}. The {plural(written, 'result file')} written so far at "
                        f"{config.output.path} are kept; once the cause is fixed, run again with output.mode: resume "
                        "(--set output.mode=resume) to process only the rows not written yet") from e
    finally:
        ray.kill(counter)
        guard.close()
    return dataset.stats()


def _retry_errors(plan: JobPlan, resources: Resources, start: float, log: Log, verbose: bool,
                  progress_interval: float) -> JobSummary:
    """Run the rows with transient errors again (into `_retry/`), put each new row in the place
    of the failed one in its result file, and record the pass in the manifest. Each file is
    replaced at once, so a pass that dies leaves every id once; running it again retries what
    is still failed."""
    config, retry = plan.config, plan.retry
    assert retry is not None
    done = RetryPass(rows=len(retry.ids))
    log(f"retry:   {plural(done.rows, 'row')} with transient errors in {plural(len(retry.files), 'result file')} "
        f"run again (e.g. {retry.examples[0]})")
    staging = retry_path(config)
    remove(staging, config.storage)  # the new rows of a pass that died, no longer needed
    stats = _run_stages(plan, resources, staging, done.rows, log, verbose, progress_interval, only_ids=retry.ids)
    fs, _ = filesystem(staging, config.storage)
    new_rows = pa.concat_tables([table for _, table in read_tables(fs, list_parquet_files(staging, config.storage))])
    done.fixed = new_rows.column(ERROR).null_count
    for path in retry.files:
        done.files += bool(replace_rows(path, config, new_rows))
    remove(staging, config.storage)
    return _finish(plan, start, 0, stats, done)


def _finish(plan: JobPlan, start: float, rows_done: int, stats: str, retried: Optional[RetryPass] = None) -> JobSummary:
    """The summary and closing check of what the output holds; the manifest when it passed."""
    config = plan.config
    files = result_files(config.output.path, config.storage).files
    summary = summarize_output(config, files, plan.scan.num_rows)
    summary.stats, summary.rows_in, summary.rows_already_done = stats, plan.scan.num_rows, rows_done
    summary.retried = retried
    summary.skipped_files = [f"{s.url}: {s.reason}" for s in plan.scan.skipped]
    assert summary.closing is not None
    if summary.closing.passed:
        write_manifest(plan, summary, files)
        if not config.output.keep_checkpoint:
            remove(checkpoint_path(config), config.storage)
    summary.seconds = time.perf_counter() - start
    return summary


def write_manifest(plan: JobPlan, summary: JobSummary, files: List[str]) -> None:
    """The `_SUCCESS` manifest; a --retry-errors pass adds its record to the earlier ones."""
    config = plan.config
    retries: List[Dict[str, Any]] = []
    if summary.retried is not None:
        retries = (read_manifest(config.output.path, config.storage) or {}).get("retries", [])
        if summary.retried.rows:
            retries.append(summary.retried.record())
    write_json(config.output.path, config.storage, SUCCESS_FILE, {
        "retries": retries,
        "format": JOB_FILE_FORMAT,
        "config_digest": config_digest(config.to_dict()),
        "rows_in": summary.rows_in,
        "rows_out": summary.rows_out,
        "files": sorted(basename(path) for path in files),
        "skipped_input_files": [{"url": s.url, "reason": s.reason} for s in plan.scan.skipped],
        "checkpoint": {"path": checkpoint_path(config), "kept": config.output.keep_checkpoint},
    })


def summarize_output(config: JobConfig, files: List[str], rows_in: int) -> JobSummary:
    """Counts over the result `files` (reads only their id and small result columns), and the
    closing check against `rows_in`."""
    summary = JobSummary(box_format=config.input.box_format)
    errors: Dict[str, int] = collections.Counter()
    reasons: Dict[str, int] = collections.Counter()
    fs, _ = filesystem(config.output.path, config.storage)
    id_column = config.input.id_column
    ids: List[pa.ChunkedArray] = []
    for _, table in read_tables(fs, files, [id_column, ERROR, BOX_ERRORS, NUM_BOXES]):
        summary.rows_out += table.num_rows
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
    summary.closing = closing_check(ids, rows_in)
    return summary


def closing_check(ids: List[pa.ChunkedArray], rows_in: int) -> ClosingCheck:
    """Rows out against rows in, and ids that appear more than once (nulls apart: those rows
    carry an id error)."""
    nulls, repeated, examples = repeated_ids(ids, _EXAMPLES)
    return ClosingCheck(rows_in, sum(len(c) for c in ids), repeated, examples, nulls)
