"""Build and run the annotation job on Ray Data, then summarise what it wrote.

`run_job` first runs every check of `pipeline.preflight` (nothing is read, written or
deleted when one fails), then checks the cluster's resources, says in one line per stage
what will run where, reports progress while the job runs, and ends with a summary read
back from the output.
"""

import collections
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, cast

import pyarrow.parquet as pq
import ray

from samhq_core import SamHQConfig

from .config import ConfigError, JobConfig
from .output_files import ResultFilenames, job_files, write_job_description
from .preflight import JobPlan, Resources, check_resources, cluster_resources, num_gpus_per_actor, plan_job, read_columns
from .schema import BOX_ERRORS, ERROR, NUM_BOXES, error_kind
from .stages import Stage, check_column_flow, decode_memory, decode_stage, encode_stage, model_stage
from .storage import arrow_filesystem, filesystem, list_parquet_files

Log = Callable[[str], None]
# Under xyxy, [x, y, w, h] boxes come out inverted whenever w < x or h < y: a share of inverted
# boxes this large is rarely anything else.
_INVERTED_HINT_SHARE = 0.25


def _print(message: str) -> None:
    print(message, flush=True)


@dataclass
class JobSummary:
    rows_in: int = 0
    rows_out: int = 0
    boxes: int = 0  # every input box, those of failed rows included
    masks: int = 0
    box_reasons: Dict[str, int] = field(default_factory=dict)  # why boxes got no mask, with counts
    errors: Dict[str, int] = field(default_factory=dict)  # rows with an error, by kind
    box_format: str = "xyxy"
    seconds: float = 0.0
    stats: str = ""  # Ray Data's per-stage execution stats

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
        lines = [
            f"rows in: {self.rows_in}, rows out: {self.rows_out}, boxes: {self.boxes} "
            f"(masks: {self.masks}, unusable: {self.unusable_boxes}), rows with errors: {errors}, "
            f"{self.seconds:.1f} s, {self.images_per_second:.2f} images/s"
        ]
        if self.box_reasons:
            lines.append("  boxes without a mask: " + "; ".join(
                f"{reason}: {n}" for reason, n in sorted(self.box_reasons.items(), key=lambda kv: (-kv[1], kv[0]))))
        lines += [f"  warning: {w}" for w in self.warnings()]
        return "\n".join(lines)


class RowCounter:
    """Rows the encode tasks have finished, for progress lines on the driver."""

    def __init__(self) -> None:
        self.rows = 0

    def add(self, rows: int) -> None:
        self.rows += rows

    def value(self) -> int:
        return self.rows


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
        while not self._stop.wait(self.interval):
            try:
                reply: Any = self.counter.value.remote()
                done = int(ray.get(reply, timeout=self.interval))
            except (ray.exceptions.GetTimeoutError, ray.exceptions.RayError):
                continue  # a busy or restarting cluster; the next interval tries again
            self.log(progress_line(done, self.total, time.perf_counter() - self.start))


def progress_line(done: int, total: int, seconds: float) -> str:
    rate = done / seconds if seconds > 0 else 0.0
    share = f" ({done / total:.0%})" if total else ""
    eta = f", about {_duration((total - done) / rate)} left" if rate > 0 and total > done else ""
    return f"progress: {done} / {total} rows{share} after {_duration(seconds)}, {rate:.2f} images/s{eta}"


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


def job_stages(plan: JobPlan, resources: Resources, counter: Optional["ray.actor.ActorHandle"] = None) -> List[Stage]:
    """decode (CPU tasks) → SAM-HQ (actor pool) → RLE encode (CPU tasks)."""
    config = plan.config
    keep = output_columns(config)
    return [
        decode_stage(config.input, config.storage, plan.image_size, config.compute.decode_batch_size,
                     keep_image=config.input.image_column in keep),
        model_stage(config.model, config.storage, config.compute, num_gpus_per_actor(config, resources),
                    plan.image_size, describe_model(plan.model_config)),
        encode_stage(keep, config.output.path, counter),
    ]


def build_dataset(plan: JobPlan, resources: Resources, counter: Optional["ray.actor.ActorHandle"] = None,
                  log: Log = _print, verbose: bool = False) -> ray.data.Dataset:
    """read Parquet, then the job's stages in turn."""
    config = plan.config
    stages = job_stages(plan, resources, counter)
    columns = read_columns(config)
    check_column_flow(stages, columns)
    read_fs, _ = arrow_filesystem(config.input.path, config.storage)
    ds = ray.data.read_parquet([f.path for f in plan.scan.files], filesystem=read_fs).select_columns(columns)
    num_blocks = config.input.num_blocks or 4 * config.compute.num_actors
    _size_blocks(ds, plan, num_blocks)
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
    connected cluster (`ray.init` first, else Ray Data starts a local one)."""
    start = time.perf_counter()
    plan = plan or plan_job(config)
    config = plan.config
    for warning in plan.warnings:
        log(f"warning: {warning}")
    resources = cluster_resources()
    problems = check_resources(config, resources, decode_memory(config.compute.decode_batch_size))
    if problems:
        raise ConfigError(problems)
    fs, _ = filesystem(config.output.path, config.storage)
    for path in job_files(config.output.path, config.storage):  # only with output.overwrite (checked in the plan)
        fs.rm(path)
    write_job_description(config.output.path, config.storage, config.to_dict(), plan.scan.num_rows)
    # Ray's stubs type .remote() of an actor class as "handle or class"; it is the handle.
    counter = cast("ray.actor.ActorHandle", ray.remote(num_cpus=0)(RowCounter).remote())
    dataset = build_dataset(plan, resources, counter, log, verbose)
    out_fs, out_path = arrow_filesystem(config.output.path, config.storage)
    with ProgressReporter(counter, plan.scan.num_rows, progress_interval, log):
        dataset.write_parquet(out_path, filesystem=out_fs, filename_provider=ResultFilenames())
    ray.kill(counter)
    summary = summarize_output(config)
    summary.stats = dataset.stats()
    summary.rows_in = plan.scan.num_rows
    summary.seconds = time.perf_counter() - start
    return summary


def summarize_output(config: JobConfig) -> JobSummary:
    """Counts over the written result columns (reads only the small columns)."""
    summary = JobSummary(box_format=config.input.box_format)
    errors: Dict[str, int] = collections.Counter()
    reasons: Dict[str, int] = collections.Counter()
    fs, _ = filesystem(config.output.path, config.storage)
    for name in list_parquet_files(config.output.path, config.storage):
        table = pq.read_table(fs.open(name, "rb"), columns=[ERROR, BOX_ERRORS, NUM_BOXES])
        summary.rows_out += table.num_rows
        for error, box_errors, num_boxes in zip(*(table.column(c).to_pylist() for c in table.column_names),
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
    return summary
