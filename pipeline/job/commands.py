"""`run` and `validate`: their arguments, and what each does with them. Imports of the job
itself wait for the command to run, so that `--help` stays quick."""

import argparse
import contextlib
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Iterator

from ..checks.samples import FORCE_BOX_FORMAT

if TYPE_CHECKING:
    from ..output.shards import Shard
    from .plan import JobPlan


def add_parsers(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    for name, fn, help_text in (("run", cmd_run, "run a job"), ("validate", cmd_validate, "check a config, run nothing")):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--config", required=True, help="job YAML (see configs/)")
        cmd.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a config key, e.g. --set compute.num_actors=4 (repeatable)")
        cmd.add_argument("--relative-to", default=None, metavar="DIR",
                         help="resolve the config's relative local paths against DIR (default: the working "
                              "directory); under `ray job submit` on this machine: --relative-to \"$PWD\"")
        cmd.add_argument(FORCE_BOX_FORMAT, action="store_true",
                         help="run even when the input's first boxes look like another box format than "
                              "input.box_format says (most inverted under xyxy, or all within [0, 1])")
        cmd.add_argument("--shard", type=_shard, default=None, metavar="I/N",
                         help="run part I (0-based) of N of the input into the same output.path as the other parts, "
                              "each with its own checkpoint, lease and _SUCCESS.shard-*.json; `python -m pipeline "
                              "status OUTPUT` checks the whole job")
        cmd.add_argument("--retry-errors", action="store_true",
                         help="a second pass over the completed output at output.path: run again only the rows "
                              "whose error is transient (image reads that timed out, 5xx replies, lost connections; "
                              "not corrupt images or bad boxes) and put the new rows in place of the failed ones")
        cmd.set_defaults(fn=fn)
    run_cmd = sub.choices["run"]
    run_cmd.add_argument("--verbose", action="store_true",
                         help="Ray's own logs and progress bars, and Ray Data's per-stage stats at the end")
    run_cmd.add_argument("--progress-interval", type=float, default=10.0, metavar="SECONDS",
                         help="seconds between progress lines (default: 10)")


def _shard(text: str) -> "Shard":
    from ..output.shards import parse_shard

    try:
        return parse_shard(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _plan(args: argparse.Namespace) -> "JobPlan":
    from ..config import load_config
    from .plan import plan_job

    return plan_job(load_config(args.config, args.set), relative_to=args.relative_to, retry_errors=args.retry_errors,
                    force_box_format=args.force_box_format, shard=args.shard)


def cmd_validate(args: argparse.Namespace) -> int:
    from ..checks.resources import cluster_resources, local_resources
    from ..config import ConfigError
    from ..text import plural
    from .dataset import model_name, resource_problems

    plan = _plan(args)
    for note in plan.notes:
        print(note)
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if os.environ.get("RAY_ADDRESS"):
        import ray

        from ..stages.cluster import quiet_ray_logging

        quiet_ray_logging(verbose=False)
        ray.init(logging_level=logging.WARNING)  # the cluster in RAY_ADDRESS
        resources = cluster_resources()
    else:
        resources = local_resources()
    problems = resource_problems(plan, resources)
    if problems:
        raise ConfigError(problems)
    retry = (f"; --retry-errors: {plural(len(plan.retry.ids), 'row')} with transient errors to run again"
             if plan.retry is not None else "")
    part = f" (shard {args.shard})" if args.shard is not None else ""
    print(f"config OK: {args.config}{part}: {plural(plan.scan.num_rows, 'row')} in "
          f"{plural(len(plan.scan.files), 'file')}, model "
          f"{model_name(plan.model_config)}, output {plan.config.output.path}; fits {resources.describe()}{retry}")
    return 0


# `run`'s exit status when a signal stopped it: the shell's 128 + SIGTERM.
EXIT_STOPPED = 128 + signal.SIGTERM


class RunStopped(BaseException):
    """SIGTERM asked the run to stop (a node's preemption notice, `kill`, Kubernetes). A
    BaseException, so that no `except Exception` on the way takes it for the job's error."""


def _stop(signum: int, frame: object) -> None:
    raise RunStopped(signal.Signals(signum).name)


@contextlib.contextmanager
def stopped_by_sigterm() -> Iterator[None]:
    """SIGTERM raises RunStopped in the main thread for the duration, in place of the handler
    `ray.init` sets (which exits mid-call and leaves a stack dump): set again after it."""
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_run(args: argparse.Namespace) -> int:
    from .run import JobFailed, nothing_to_do, run_job

    plan = _plan(args)
    stderr = None
    try:
        with stopped_by_sigterm():
            if nothing_to_do(plan) is None:  # else the answer needs no cluster
                from ..stages.cluster import connect

                stderr = connect(verbose=args.verbose)
                signal.signal(signal.SIGTERM, _stop)
            summary = run_job(plan.config, plan, verbose=args.verbose, progress_interval=args.progress_interval)
    except JobFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except RunStopped as e:
        same_shard = f" and the same --shard {args.shard}" if args.shard is not None else ""
        again = ("run the --retry-errors pass again" if plan.retry is not None else
                 f"run it again with output.mode: resume (--set output.mode=resume){same_shard} to process only the "
                 "rows not written yet")
        print(f"error: the run was stopped by {e} before it finished; what it wrote at {plan.config.output.path} is "
              f"kept: {again}", file=sys.stderr)
        return EXIT_STOPPED
    finally:
        if stderr is not None:
            stderr.stop()
    if args.verbose:
        print(summary.stats)
    print(f"job summary: {summary.render()}")
    print(f"results: {plan.config.output.path}")
    if summary.closing is not None and not summary.closing.passed:
        print(f"error: the results at {plan.config.output.path} failed the closing check (see above); no "
              "_SUCCESS manifest was written", file=sys.stderr)
        return 1
    return 0
