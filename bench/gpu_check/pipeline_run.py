"""4. The whole pipeline on a local Ray cluster of this node."""

import dataclasses
import logging
import os
import re
import signal
from typing import List

import ray

from bench.gpu_check.clock import Clock, Device, interrupt
from bench.gpu_check.inputs import job_config
from bench.gpu_check.settings import Settings
from pipeline.job.run import run_job


@dataclasses.dataclass
class PipelineRow:
    actors: int
    gpus: float
    concurrent: int  # compute.concurrent_batches_per_actor
    status: str = "not run"
    seconds: float = 0.0
    rows_out: int = 0
    masks: int = 0
    summary: str = ""
    stats: List[str] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.actors} actor(s) x {self.gpus:g} GPU each, {self.concurrent} batch(es) at once"


def planned_pipeline_rows(settings: Settings, cuda: bool) -> List[PipelineRow]:
    """The pipeline runs, not run yet. Without a GPU the same runs go with CPU actors, so that
    the smoke run takes this code path."""
    return [PipelineRow(actors, gpus if cuda else 0.0, concurrent) for actors, gpus, concurrent in settings.pipeline_runs]


def bench_pipeline(settings: Settings, dev: Device, clock: Clock, work: str, checkpoint: str,
                   input_path: str) -> List[PipelineRow]:
    rows = planned_pipeline_rows(settings, dev.cuda)
    try:
        for row in rows:
            label = f"pipeline {row.label}"
            if not clock.allows(label, 25.0 if settings.smoke else 60.0):
                row.status = "skipped (budget)"
                continue
            if not ray.is_initialized():
                # A local cluster of its own: never one that happens to run on this machine (RAY_ADDRESS is ignored).
                ray.init(address="local", num_cpus=os.cpu_count(), num_gpus=1 if dev.cuda else 0,
                         include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
                # Ray's core worker installs a SIGTERM handler that ends the process at once: take it back, so
                # that the wrapper's `timeout` still gets a report and a shut-down cluster.
                signal.signal(signal.SIGTERM, interrupt)
            config = job_config(work, checkpoint, input_path, settings, row.actors, row.gpus, row.concurrent)
            clock.log(f"{label}: start")
            try:
                summary = run_job(config, log=lambda line: clock.log(f"  job: {line}"), progress_interval=15.0)
            except Exception as e:  # noqa: BLE001 - reported; the other runs still go
                row.status = f"error: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                clock.log(f"{label}: {row.status}")
                continue
            row.seconds, row.rows_out, row.masks = summary.seconds, summary.rows_out, summary.masks
            row.summary = summary.render().replace("\n", " ")
            row.stats = [line.strip() for line in summary.stats.splitlines()
                         if re.match(r"\s*(Operator \d+ |\* .*throughput: )", line)]
            closing_ok = summary.closing is not None and summary.closing.passed
            row.status = "ok" if closing_ok and not summary.errors else f"failed: errors {summary.errors}"
            clock.log(f"{label}: {row.rows_out / row.seconds:.2f} images/s ({row.status})")
    finally:
        if ray.is_initialized():
            ray.shutdown()
    return rows
