"""The job as a Ray Data dataset: read Parquet, then its stages (decode → model → encode), cut
into blocks that bound what a crash costs, with Ray Data's checkpoint of the ids written."""

import dataclasses
import math
import os
import warnings
from typing import Any, List, Optional

import ray
from ray.data._internal.planner.checkpoint.plan_read_op import CHECKPOINT_MEMORY_SAFETY_FACTOR
from ray.data.checkpoint import CheckpointConfig
from ray.data.datasource import FilenameProvider
from ray.data.expressions import col

from samhq_core import SamHQConfig

from ..checks.resources import Resources, check_resources, num_cpus_per_actor, num_gpus_per_actor
from ..config import JobConfig
from ..inputs.boxes import per_box_columns
from ..inputs.images import input_directory
from ..output import JobOutput, result_file_name
from ..stages import DecodeUDF, EncodeUDF, ModelUDF, Stage, check_column_flow, decode_task_memory
from ..stages.crash_guard import CrashGuard
from ..storage import TRANSIENT_ERRORS
from ..text import byte_size, plural
from .checkpoint_restore import JobCheckpointManager
from .plan import JobPlan, read_columns
from .progress import Log

# Ray Data's checkpoint filter actor (resumed runs) holds the sorted ids written so far; its
# default reservation (1 GiB, up to 10 actors) would starve a small cluster of the CPUs and
# memory its read and write tasks need. One actor does a searchsorted per block.
_CHECKPOINT_FILTER_MEMORY = 256 << 20
# Default block bounds (input.num_blocks unset): a 10M-image job becomes about 10k result files.
_ROWS_PER_BLOCK = 1000
_BLOCK_BYTES = 256 << 20


# Ray Data's Parquet reader reads the input's footers again, on a pool of actors (32 by
# default) placed without CPUs, each a Python process of its own: 1,000 small files on 2 CPUs
# would start 30 of them. It takes the pool's size from this variable in the driver.
_FOOTER_READERS_VARIABLE = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"
_CPUS_PER_FOOTER_READER, _MAX_FOOTER_READERS = 4, 32


def footer_readers(resources: Resources) -> int:
    """How many footer-reading actors Ray Data may start: one per 4 of the cluster's CPUs, 1 to 32."""
    return max(1, min(_MAX_FOOTER_READERS, int(resources.cpus) // _CPUS_PER_FOOTER_READER))


class ResultFilenames(FilenameProvider):
    """Ray Data's names for the result files (`pipeline.output.layout.result_file_name`)."""

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        return result_file_name(write_uuid, task_index)


def model_name(config: SamHQConfig) -> str:
    """"vit_b SAM-HQ at 1024 px"; an encoder of no official variant by its widths and depth."""
    v = config.vision_config
    if config.variant is not None:
        encoder = config.variant
    elif v.encoder_type == "tiny_vit":
        encoder = f"TinyViT {'/'.join(map(str, v.tiny_embed_dims))}"
    else:
        encoder = f"ViT {v.hidden_size}x{v.num_hidden_layers}"
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


def job_stages(plan: JobPlan, resources: Resources, num_cpus: float, counter: Optional["ray.actor.ActorHandle"] = None,
               crash_guard: Optional[CrashGuard] = None) -> List[Stage]:
    """decode (CPU tasks) → SAM-HQ (actor pool, each actor reserving `num_cpus`: see
    `num_cpus_per_actor`) → RLE encode (CPU tasks), each counting its rows on `counter` and
    its worker deaths on `crash_guard` when given."""
    config = plan.config
    keep = output_columns(config)
    stages = [
        DecodeUDF.stage(config.input, config.storage, plan.image_size, config.compute.decode_batch_size,
                        keep_image=config.input.image_column in keep, per_box=per_box_columns(config),
                        directory=input_directory(plan.scan.location), everything=config.everything),
        ModelUDF.stage(config.model, config.storage, config.compute, num_cpus, num_gpus_per_actor(config, resources),
                       plan.image_size, model_name(plan.model_config), config.everything),
        EncodeUDF.stage(keep, config.output.path, config.compute.encode_cpus),
    ]
    return [dataclasses.replace(stage, row_counter=counter, crash_guard=crash_guard) for stage in stages]


def build_dataset(plan: JobPlan, resources: Resources, counter: Optional["ray.actor.ActorHandle"] = None,
                  log: Log = print, verbose: bool = False, only_ids: Optional[List[Any]] = None,
                  crash_guard: Optional[CrashGuard] = None) -> ray.data.Dataset:
    """read Parquet (the rows of `only_ids` alone, when given: a --retry-errors pass, which
    has no checkpoint), then the job's stages in turn."""
    config = plan.config
    # Ray Data's checkpoint filter actor runs beside the stages in a resumed run.
    filtered = plan.resume.filters_rows and only_ids is None
    reserved = num_cpus_per_actor(config, resources, checkpoint_filter=filtered)
    stages = job_stages(plan, resources, reserved, counter, crash_guard)
    columns = read_columns(config)
    check_column_flow(stages, columns)
    read_fs, _ = plan.scan.location.arrow()
    os.environ.setdefault(_FOOTER_READERS_VARIABLE, str(footer_readers(resources)))
    ds = ray.data.read_parquet([f.path for f in plan.scan.files], filesystem=read_fs).select_columns(columns)
    if only_ids is not None:
        ds = ds.filter(expr=col(config.input.id_column).is_in(only_ids))
    num_blocks = block_count(plan)
    _size_blocks(ds, plan, num_blocks)
    ds.context.checkpoint_config = job_checkpoint(plan.output, config.input.id_column) if only_ids is None else None
    # Reads, writes and checkpoint entries retry (10 tries, backoff up to 32 s: about 2.5 min
    # in all) on the store's transient errors as our clients word them too. Ray warns on any
    # change to the list that its substring matching is deprecated; ours are regexes.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.context.retried_io_errors = list(dict.fromkeys([*ds.context.retried_io_errors, *TRANSIENT_ERRORS]))
    ds.context.enable_progress_bars = verbose
    if reserved < config.compute.num_cpus_per_actor:
        log(f"resume:  the model actors reserve {reserved:g} CPUs each instead of "
            f"{config.compute.num_cpus_per_actor:g}, leaving one for Ray Data's checkpoint filter (their threads, "
            "compute.torch_threads, are unchanged)")
    log(f"input:   {plural(len(plan.scan.files), 'Parquet file')}, {plural(plan.scan.num_rows, 'row')}, "
        f"{byte_size(plan.scan.read_bytes)} to read, in about {num_blocks} blocks (input.num_blocks)")
    for stage in stages:
        log(f"{stage.name + ':':<8} {stage.description}")
        ds = stage.apply(ds)
    log(f"cluster: {resources.describe()}")
    if writes_wait_for_decoding(config, resources, reserved, filtered):
        log(f"note:    on this cluster ({resources.cpus:g} CPUs, {config.compute.num_actors * reserved:g} of them for "
            "the model actors) Ray Data runs the encode-and-write tasks only after every image is decoded: no "
            "result file or checkpoint entry before then. compute.encode_cpus: 0 writes as the job goes")
    return ds


def writes_wait_for_decoding(config: JobConfig, resources: Resources, cpus_per_actor: float,
                             checkpoint_filter: bool) -> bool:
    """Whether Ray Data would start no write before the decoding ends: it reserves a task's CPU
    for the read and the decode first, and a write that reserves CPU gets one only from what
    is left beside the model actors (and a resumed run's checkpoint filter)."""
    spare = resources.cpus - config.compute.num_actors * cpus_per_actor - (1 if checkpoint_filter else 0)
    return config.compute.encode_cpus > 0 and spare < 3


def filter_reservation(restored_bytes: float) -> int:
    """Bytes Ray Data reserves for the checkpoint filter actor holding ids of `restored_bytes`
    (as it counts them): the job's floor, or its safety factor times their size
    (ray/data/_internal/planner/checkpoint/plan_read_op.py)."""
    return max(_CHECKPOINT_FILTER_MEMORY, int(CHECKPOINT_MEMORY_SAFETY_FACTOR * restored_bytes))


def resource_problems(plan: JobPlan, resources: Resources) -> List[str]:
    """`check_resources` for the planned job: its decode tasks' memory, and in a resumed run
    the checkpoint filter actor with its reservation."""
    config, resumed = plan.config, plan.resume.filters_rows
    memory = decode_task_memory(config.input, config.everything, config.compute.decode_batch_size, plan.image_size)
    return check_resources(config, resources, memory, checkpoint_filter=resumed,
                           filter_memory=filter_reservation(plan.resume.restored_bytes) if resumed else 0)


def job_checkpoint(output: JobOutput, id_column: str) -> CheckpointConfig:
    """Ray Data's checkpointing for the job: every written result file's ids are recorded (a
    pending entry before the file is written, committed after), and a rerun over the same
    checkpoint filters out the ids already written and deletes the files of interrupted
    writes. The job removes the checkpoint itself, only after its closing check and manifest,
    so that a driver that dies in between still leaves a resumable output."""
    fs, path = output.checkpoint.arrow()
    checkpoint = CheckpointConfig(id_column, path, override_filesystem=fs, delete_checkpoint_on_success=False,
                                  checkpoint_manager_cls=JobCheckpointManager)
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
