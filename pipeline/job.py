"""Build and run the annotation job on Ray Data, then summarise what it wrote."""

import collections
import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import pyarrow.parquet as pq
import ray

from .config import ConfigError, JobConfig
from .schema import ERROR_KINDS
from .stages import DecodeStage, EncodeStage, SamHQStage
from .storage import arrow_filesystem, filesystem, list_parquet_files


@dataclass
class JobSummary:
    rows_in: int = 0
    rows_out: int = 0
    boxes: int = 0
    masks: int = 0
    unusable_boxes: int = 0
    errors: Dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    stats: str = ""  # Ray Data's per-stage execution stats

    @property
    def images_per_second(self) -> float:
        return self.rows_out / self.seconds if self.seconds else 0.0

    def render(self) -> str:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items())) or "none"
        return (
            f"rows in: {self.rows_in}, rows out: {self.rows_out}, boxes: {self.boxes} "
            f"(masks: {self.masks}, unusable: {self.unusable_boxes}), rows with errors: {errors}, "
            f"{self.seconds:.1f} s, {self.images_per_second:.2f} images/s"
        )


def resolve_num_gpus(config: JobConfig) -> float:
    """GPUs per model actor: as configured, else 1 when the cluster has GPUs, else 0.

    Raises ConfigError when the actors would take every CPU of the cluster: the read, decode
    and encode tasks would then wait forever.
    """
    resources = ray.cluster_resources()
    compute = config.compute
    num_gpus = compute.num_gpus_per_actor
    if num_gpus is None:
        num_gpus = 1.0 if resources.get("GPU", 0) > 0 else 0.0
    actor_cpus = compute.num_actors * compute.num_cpus_per_actor
    if actor_cpus > resources.get("CPU", 0) - 1:
        raise ConfigError([
            f"compute: {compute.num_actors} actors x {compute.num_cpus_per_actor} CPUs leave less than one of the "
            f"cluster's {resources.get('CPU', 0):g} CPUs for reading, decoding and encoding; lower compute.num_actors "
            "or compute.num_cpus_per_actor (on CPU, compute.torch_threads sets an actor's threads independently)"
        ])
    return num_gpus


def build_dataset(config: JobConfig, image_size: int) -> Tuple[ray.data.Dataset, int]:
    """read Parquet → decode (CPU tasks) → SAM-HQ (actor pool) → RLE encode (CPU tasks);
    returns the dataset and the number of input rows."""
    inp = config.input
    files = list_parquet_files(inp.path, config.storage)
    read_fs, _ = arrow_filesystem(inp.path, config.storage)
    keep = [inp.id_column, *inp.passthrough_columns]
    if inp.category_column and inp.category_column not in keep:
        keep.append(inp.category_column)
    image_source = inp.image_column or inp.image_uri_column
    if config.output.include_image_bytes and inp.image_column:
        keep.append(inp.image_column)
    read_columns = list(dict.fromkeys([*keep, image_source, inp.boxes_column]))
    rows = _size_blocks(config, files, read_columns)
    ds = ray.data.read_parquet(files, filesystem=read_fs, columns=read_columns)

    decode = DecodeStage(inp, config.storage, image_size, config.compute.decode_batch_size,
                         keep_image=inp.image_column in keep)
    ds = ds.map_batches(decode, **decode.map_batches_kwargs())
    ds = ds.map_batches(
        SamHQStage,
        **SamHQStage.map_batches_kwargs(config.model, config.storage, config.compute, resolve_num_gpus(config)),
    )
    encode = EncodeStage(keep)
    return ds.map_batches(encode, **encode.map_batches_kwargs()), rows


def _size_blocks(config: JobConfig, files: List[str], columns: List[str]) -> int:
    """Make Ray Data cut the input into about `input.num_blocks` blocks (default 4 per
    actor). Its Parquet reader ignores override_num_blocks and packs small files into one
    block, which one actor then processes alone; blocks are cut by size, so the target
    block size is set from the rows' average size in the Parquet footers (halved: a block
    is cut once it exceeds the target, so blocks come out between 1 and 2 targets big).
    Returns the number of input rows."""
    fs, _ = filesystem(config.input.path, config.storage)
    rows, size = 0, 0
    for name in files:
        metadata = pq.ParquetFile(fs.open(name, "rb")).metadata
        rows += metadata.num_rows
        for g in range(metadata.num_row_groups):
            group = metadata.row_group(g)
            for c in range(group.num_columns):
                if group.column(c).path_in_schema.split(".")[0] in columns:
                    size += group.column(c).total_uncompressed_size
    num_blocks = config.input.num_blocks or 4 * config.compute.num_actors
    rows_per_block = max(1, math.ceil(rows / num_blocks))
    row_bytes = max(1, size // max(rows, 1))
    ray.data.DataContext.get_current().target_max_block_size = max(1024, row_bytes * rows_per_block // 2)
    return rows


def run_job(config: JobConfig, image_size: int) -> JobSummary:
    """Run the job to completion and return its summary (read back from the output)."""
    start = time.perf_counter()
    out_fs, out_path = arrow_filesystem(config.output.path, config.storage)
    fs, path = filesystem(config.output.path, config.storage)
    if fs.exists(path) and fs.find(path):
        if not config.output.overwrite:
            raise FileExistsError(f"output.path {config.output.path} is not empty; set output.overwrite: true to replace it")
        fs.rm(path, recursive=True)
    dataset, rows_in = build_dataset(config, image_size)
    dataset.write_parquet(out_path, filesystem=out_fs)
    summary = summarize_output(config)
    summary.stats = dataset.stats()
    summary.rows_in = rows_in
    summary.seconds = time.perf_counter() - start
    return summary


def summarize_output(config: JobConfig) -> JobSummary:
    """Counts over the written result columns (reads only the small columns)."""
    summary = JobSummary()
    errors: Dict[str, int] = collections.Counter()
    fs, _ = filesystem(config.output.path, config.storage)
    for name in list_parquet_files(config.output.path, config.storage):
        table = pq.read_table(fs.open(name, "rb"), columns=["error", "box_errors"])
        summary.rows_out += table.num_rows
        for error in table.column("error").to_pylist():
            if error is not None:
                kind = error.split(":", 1)[0]
                errors[kind if kind in ERROR_KINDS else "other"] += 1
        for reasons in table.column("box_errors").to_pylist():
            reasons = reasons or []
            summary.boxes += len(reasons)
            unusable = sum(r is not None for r in reasons)
            summary.unusable_boxes += unusable
            summary.masks += len(reasons) - unusable
    summary.errors = dict(errors)
    return summary

