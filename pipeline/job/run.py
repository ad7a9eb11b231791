"""`run_job`: the job from its plan to its summary. It checks the connected cluster's
resources, says in one line per stage what will run where, writes the job's description,
takes the output's lease, runs the dataset with progress lines, and ends with the summary and
closing check read back from the output (in a Ray task off the driver: it holds every id);
the `_SUCCESS` manifest only when the check passed. A `--retry-errors` pass runs the rows
with transient errors again and puts them in place in their files."""

import _thread
import dataclasses
import re
import time
from typing import Any, List, Optional, cast

import pyarrow as pa
import ray

from ..checks.resources import Resources, cluster_resources
from ..config import ConfigError, JobConfig
from ..output import (
    LEASE_FILE,
    JobDescription,
    LeaseHeld,
    Manifest,
    OutputLease,
    Shard,
    config_digest,
    result_file_name,
    success_file,
)
from ..schema import ERROR
from ..stages.crash_guard import CrashGuard
from ..storage import Location, basename
from ..text import plural, some
from .bad_input import skip_unreadable, unreadable_input
from .dataset import ResultFilenames, block_count, build_dataset, cpu_reservations, resource_problems, rows_per_block
from .off_driver import run_off_driver
from .plan import JobPlan, continues_output, plan_job
from .progress import Log, ProgressReporter, RowCounter
from .resume import check_resume
from .shard_checks import check_shard_layout
from .summary import JobSummary, RetryPass, summarize_output


def _print(message: str) -> None:
    print(message, flush=True)


class ShardResultFilenames(ResultFilenames):
    """The result files' names with the shard's label in them, so that shards never collide."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        return result_file_name(write_uuid, task_index, self.shard)


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


def nothing_to_do(plan: JobPlan) -> Optional[str]:
    """Why the run the plan describes has no row to run (a completed output resumed, or a
    --retry-errors pass without a transient error), or None."""
    if plan.resume.complete:
        done = success_file(plan.output.shard)
        return f"output: {plan.config.output.path} holds a completed run ({done}); nothing to resume"
    if plan.retry is not None and not plan.retry.ids:
        return f"retry:   no row of {plan.config.output.path} has a transient error; nothing to run again"
    return None


def run_job(config: JobConfig, plan: Optional[JobPlan] = None, log: Log = _print, verbose: bool = False,
            progress_interval: float = 10.0) -> JobSummary:
    """Run the job to completion and return its summary (read back from the output).

    Runs the plan's checks first (or takes the `plan` they returned) and then checks the
    connected Ray cluster's resources: ConfigError before anything is written. Then takes the
    output's lease (`pipeline.output.OutputLease`; ConfigError naming the holder when another
    run has it) and checks again what the output holds, which another run may have changed
    since the plan. Joins the connected cluster (`ray.init` first, else Ray Data starts a local
    one). After writing, the closing check reads the output's ids; only when it passes is the
    `_SUCCESS` manifest written (and the checkpoint removed). The caller decides what a failed
    check means (`summary.closing.passed`)."""
    start = time.perf_counter()
    plan = plan or plan_job(config)
    config = plan.config
    for note in plan.notes:
        log(note)
    for warning in plan.warnings:
        log(f"warning: {warning}")
    idle = nothing_to_do(plan)
    if idle is not None:
        log(idle)
        return _finish(plan, start, rows_done=plan.rows_in if plan.resume.complete else 0, rows_run=0,
                       stats="", retried=RetryPass() if plan.retry is not None else None)
    resources = cluster_resources()
    problems = resource_problems(plan, resources)
    if problems:
        raise ConfigError(problems)
    lease = OutputLease(plan.output.location, "run --retry-errors" if plan.retry is not None else "run",
                        take_over=continues_output(config, retry_errors=plan.retry is not None),
                        on_lost=lambda _: _thread.interrupt_main(), file_name=plan.output.lease_name)
    try:
        with lease:
            if lease.taken_over is not None:
                log(f"lease:   took over the output's lease from a run that stopped "
                    f"({lease.taken_over.describe(time.time())})")
            plan = recheck_output(plan)
            idle = nothing_to_do(plan)
            if idle is not None:
                log(idle)
                return _finish(plan, start, rows_done=plan.rows_in, rows_run=0, stats="")
            if plan.retry is not None:
                return _retry_errors(plan, resources, start, log, verbose, progress_interval)
            return _write_results(plan, resources, start, log, verbose, progress_interval)
    except LeaseHeld as e:
        raise ConfigError([f"output.path: {e}"]) from None
    except KeyboardInterrupt:
        if lease.lost is None:
            raise
        raise JobFailed(f"the job stopped: {lease.lost}. What it wrote is kept; that run continues the "
                        "output") from None


def recheck_output(plan: JobPlan) -> JobPlan:
    """The plan, with what the output holds checked again under the lease: another run may
    have written into it between the plan's checks and the lease. ConfigError when the run
    can no longer go ahead."""
    config, output = plan.config, plan.output
    problems = check_shard_layout(output, config, plan.fingerprint)  # a shard of another N started meanwhile
    if problems:
        raise ConfigError(problems)
    if plan.retry is not None or config.output.mode == "overwrite":
        return plan  # a pass over the output as it is / the job's own files go anyway
    if config.output.mode == "resume":
        resume, problems = check_resume(config, output, plan.fingerprint)
        if problems:
            raise ConfigError(problems)
        return dataclasses.replace(plan, resume=resume)
    if output.shard is None:
        written = [name for name in output.location.names() if name != LEASE_FILE]
    else:  # the other shards write beside it
        written = [basename(path) for path in output.job_files() if basename(path) != output.lease_name]
    if written:
        raise ConfigError([f"output.path: another run wrote into {output.url} after this run's checks "
                           f"({some(written)}); it was not empty when the lease was taken: output.mode: resume "
                           "continues that run's output"])
    return plan


def _write_results(plan: JobPlan, resources: Resources, start: float, log: Log, verbose: bool,
                   progress_interval: float) -> JobSummary:
    """The job's rows (all, or those a resumed run has not written yet) into the output."""
    config, output = plan.config, plan.output
    if config.output.mode == "overwrite":  # only the job's (the shard's) own files go (checked in the plan)
        output.remove_job_files()
    if config.output.mode != "resume" or output.read_description() is None:
        output.write_description(JobDescription(config, plan.scan.num_rows, plan.fingerprint, shard=plan.shard))
    if plan.resume.rows_done:
        log(f"resume:  {plan.resume.rows_done} of {plan.rows_in} rows already written; the rest is processed "
            "(Ray Data filters the input against the checkpoint)")
    remaining = plan.rows_in - plan.resume.rows_done
    try:
        stats = _run_stages(plan, resources, output.location, remaining, log, verbose, progress_interval)
    except JobFailed as e:
        worded = _unreadable_input_failure(plan, e)
        if worded is None:
            raise
        raise worded from e.__cause__
    return _finish(plan, start, plan.resume.rows_done, remaining, stats)


def _unreadable_input_failure(plan: JobPlan, failure: JobFailed) -> Optional[JobFailed]:
    """The failure worded for an input file that could not be read, if that stopped the run;
    under input.on_bad_file: skip, the file is recorded as left out for the resumed run."""
    entry = unreadable_input(failure, plan.scan)
    if entry is None:
        return None
    config = plan.config
    reason = f"cannot be read during the run ({root_cause(failure.__cause__ or failure)})"
    if config.input.on_bad_file != "skip":
        return JobFailed(f"the job stopped: input file {entry.url} {reason}. The result files written so far at "
                         f"{config.output.path} are kept; replace the file with a readable copy and run again with "
                         "output.mode: resume, or start over with input.on_bad_file: skip to leave such files out")
    written = skip_unreadable(plan.output, plan.scan, entry, reason, config.input.id_column)
    return JobFailed(f"the job stopped: input file {entry.url} {reason}. Under input.on_bad_file: skip it is left out "
                     f"from now on ({plural(entry.num_rows - written, 'row')} of it not processed, {written} written "
                     "before it failed kept): run again with output.mode: resume (--set output.mode=resume) to process "
                     "the rest; leave the file where it is")


def _run_stages(plan: JobPlan, resources: Resources, destination: Location, rows: int, log: Log, verbose: bool,
                progress_interval: float, only_ids: Optional[List[Any]] = None) -> str:
    """Run the job's dataset (over the rows of `only_ids` alone, when given) into result files
    at `destination`, with progress lines; returns Ray Data's stats. JobFailed when it stops."""
    config, output = plan.config, plan.output
    # Ray's stubs type .remote() of an actor class as "handle or class"; it is the handle.
    counter = cast("ray.actor.ActorHandle", ray.remote(num_cpus=0)(RowCounter).remote())
    guard = CrashGuard(config.input.id_column, config.compute.max_worker_crashes)
    cpus = cpu_reservations(plan, resources, only_ids)
    dataset = build_dataset(plan, resources, cpus, counter, log, verbose, only_ids, guard)
    out_fs, out_path = destination.arrow()
    # Without a floor, each batch the model hands on (batch_size rows) would be a file of its
    # own and a checkpoint entry: millions of tiny files on a large job.
    rows_per_file = rows_per_block(plan.scan.num_rows, block_count(plan))
    try:
        with ProgressReporter(counter, rows, progress_interval, log):
            names = ResultFilenames() if output.shard is None else ShardResultFilenames(output.shard)
            dataset.write_parquet(out_path, filesystem=out_fs, filename_provider=names,
                                  min_rows_per_file=rows_per_file, ray_remote_args={"num_cpus": cpus.per_write})
    except Exception as e:  # Ray raises its own wrappers of whatever stopped a task
        if only_ids is not None:
            raise JobFailed(f"the --retry-errors pass stopped: {root_cause(e)}. The output at {config.output.path} "
                            "is as it was; run the pass again once the cause is fixed") from e
        try:
            written = plural(len(output.result_files().files), "result file")
        except Exception:  # noqa: BLE001 - the store that stopped the job may still be down
            written = "result files"
        raise JobFailed(f"the job stopped: {root_cause(e)}. The {written} written so far at "
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
    retry, output = plan.retry, plan.output
    assert retry is not None
    done = RetryPass(rows=len(retry.ids))
    log(f"retry:   {plural(done.rows, 'row')} with transient errors in {plural(len(retry.files), 'result file')} "
        f"run again (e.g. {retry.examples[0]})")
    staging = output.retry_staging
    staging.remove()  # the new rows of a pass that died, no longer needed
    stats = _run_stages(plan, resources, staging, done.rows, log, verbose, progress_interval, only_ids=retry.ids)
    new_rows = pa.concat_tables([table for _, table in staging.read_tables(staging.parquet_files())])
    done.fixed = new_rows.column(ERROR).null_count
    for path in retry.files:
        done.files += bool(output.replace_rows(path, new_rows, plan.config.input.id_column))
    staging.remove()
    return _finish(plan, start, 0, done.rows, stats, done)


def _finish(plan: JobPlan, start: float, rows_done: int, rows_run: int, stats: str,
            retried: Optional[RetryPass] = None) -> JobSummary:
    """The summary and closing check of what the output holds; the manifest when it passed."""
    config, output = plan.config, plan.output
    files = output.result_files().files
    summary = run_off_driver(summarize_output, config, output, files, plan.rows_in)
    summary.stats, summary.rows_in, summary.rows_already_done = stats, plan.rows_in, rows_done
    summary.rows_run, summary.retried = rows_run, retried
    summary.skipped_files = [f"{s.url}: {s.reason}" for s in plan.scan.skipped]
    assert summary.closing is not None
    if summary.closing.passed:
        write_manifest(plan, summary, files)
        if not config.output.keep_checkpoint:
            output.checkpoint.remove()
    summary.seconds = time.perf_counter() - start
    return summary


def write_manifest(plan: JobPlan, summary: JobSummary, files: List[str]) -> None:
    """The `_SUCCESS` manifest; a --retry-errors pass adds its record to the earlier ones."""
    config, output = plan.config, plan.output
    retries: List[Any] = []
    if summary.retried is not None:
        earlier = output.read_manifest()
        retries = earlier.retries if earlier is not None else []
        if summary.retried.rows:
            retries.append(summary.retried.record())
    output.write_manifest(Manifest(
        config_digest=config_digest(config),
        rows_in=summary.rows_in,
        rows_out=summary.rows_out,
        files=sorted(basename(path) for path in files),
        skipped_input_files=[{"url": s.url, "reason": s.reason} for s in plan.scan.skipped],
        checkpoint={"path": output.checkpoint.url, "kept": config.output.keep_checkpoint},
        retries=retries,
        shard=plan.shard.to_json() if plan.shard is not None else None,
    ))
