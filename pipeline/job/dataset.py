"""The job as a Ray Data dataset: read Parquet, then its stages (decode → model → encode), cut
into blocks that bound what a crash costs, with Ray Data's checkpoint of the ids written."""

import contextlib
import dataclasses
import math
import os
import warnings
from typing import Any, Iterator, List, Optional

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
# Below this many CPUs beside the model actors, Ray Data's reservations for the read and the
# decode leave a write that reserves a CPU none until every image is decoded
# (ReservationOpResourceAllocator; bench/results/scale_encode_cpus.md).
_SPARE_CPUS_FOR_WRITES = 3


# Ray Data's Parquet reader reads the input's footers again, on a pool of actors (32 by
# default) placed without CPUs, each a Python process of its own: 1,000 small files on 2 CPUs
# would start 30 of them. It takes the pool's size from this variable in the driver.
_FOOTER_READERS_VARIABLE = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"
_CPUS_PER_FOOTER_READER, _MAX_FOOTER_READERS = 4, 32
_READ_TASK_BYTES_VARIABLE = "RAY_DATA_PARQUET_BIN_PACKING_BYTES"


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


@dataclasses.dataclass(frozen=True)
class CpuReservations:
    """What a run's model actors and encode-and-write tasks each reserve on its cluster."""

    per_actor: float  # `num_cpus_per_actor`
    per_write: float  # `write_cpus`
    checkpoint_filter: bool  # a resumed run's filter actor runs beside them


def cpu_reservations(plan: JobPlan, resources: Resources, only_ids: Optional[List[Any]] = None) -> CpuReservations:
    """The reservations of the run `build_dataset` makes (a --retry-errors pass, `only_ids`,
    has no checkpoint filter)."""
    config = plan.config
    filtered = plan.resume.filters_rows and only_ids is None
    per_actor = num_cpus_per_actor(config, resources, checkpoint_filter=filtered)
    return CpuReservations(per_actor, write_cpus(config, resources, per_actor, filtered), filtered)


def job_stages(plan: JobPlan, resources: Resources, cpus: CpuReservations,
               counter: Optional["ray.actor.ActorHandle"] = None, crash_guard: Optional[CrashGuard] = None) -> List[Stage]:
    """decode (CPU tasks) → SAM-HQ (actor pool) → RLE encode (CPU tasks), reserving `cpus`,
    each counting its rows on `counter` and its worker deaths on `crash_guard` when given."""
    config = plan.config
    keep = output_columns(config)
    stages = [
        DecodeUDF.stage(config.input, config.storage, plan.image_size, config.compute.decode_batch_size,
                        keep_image=config.input.image_column in keep, per_box=per_box_columns(config),
                        directory=input_directory(plan.scan.location), everything=config.everything),
        ModelUDF.stage(config.model, config.storage, config.compute, cpus.per_actor,
                       num_gpus_per_actor(config, resources), plan.image_size, model_name(plan.model_config),
                       config.everything),
        EncodeUDF.stage(keep, config.output.path, cpus.per_write),
    ]
    return [dataclasses.replace(stage, row_counter=counter, crash_guard=crash_guard) for stage in stages]


def build_dataset(plan: JobPlan, resources: Resources, cpus: CpuReservations,
                  counter: Optional["ray.actor.ActorHandle"] = None, log: Log = print, verbose: bool = False,
                  only_ids: Optional[List[Any]] = None, crash_guard: Optional[CrashGuard] = None) -> ray.data.Dataset:
    """read Parquet (the rows of `only_ids` alone, when given: a --retry-errors pass, which
    has no checkpoint), then the job's stages in turn, reserving `cpus` (`cpu_reservations`
    of the same run)."""
    config = plan.config
    stages = job_stages(plan, resources, cpus, counter, crash_guard)
    columns = read_columns(config)
    check_column_flow(stages, columns)
    os.environ.setdefault(_FOOTER_READERS_VARIABLE, str(footer_readers(resources)))
    num_blocks = block_count(plan)
    ds = read_input(plan, columns, num_blocks)
    if only_ids is not None:
        ds = ds.filter(expr=col(config.input.id_column).is_in(only_ids))
    ds.context.checkpoint_config = job_checkpoint(plan.output, config.input.id_column) if only_ids is None else None
    # Reads, writes and checkpoint entries retry (10 tries, backoff up to 32 s: about 2.5 min
    # in all) on the store's transient errors as our clients word them too. Ray warns on any
    # change to the list that its substring matching is deprecated; ours are regexes.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.context.retried_io_errors = list(dict.fromkeys([*ds.context.retried_io_errors, *TRANSIENT_ERRORS]))
    ds.context.enable_progress_bars = verbose
    if cpus.per_actor < config.compute.num_cpus_per_actor:
        log(f"resume:  the model actors reserve {cpus.per_actor:g} CPUs each instead of "
            f"{config.compute.num_cpus_per_actor:g}, leaving one for Ray Data's checkpoint filter (their threads, "
            "compute.torch_threads, are unchanged)")
    log(f"input:   {plural(len(plan.scan.files), 'Parquet file')}, {plural(plan.scan.num_rows, 'row')}, "
        f"{byte_size(plan.scan.read_bytes)} to read, in about {num_blocks} blocks (input.num_blocks)")
    for stage in stages:
        log(f"{stage.name + ':':<8} {stage.description}")
        ds = stage.apply(ds)
    log(f"cluster: {resources.describe()}")
    on_this_cluster = (f"on this cluster ({resources.cpus:g} CPUs, {config.compute.num_actors * cpus.per_actor:g} of "
                       "them for the model actors)")
    if writes_wait_for_decoding(config, resources, cpus.per_actor, cpus.checkpoint_filter):
        log(f"note:    {on_this_cluster} Ray Data runs the encode-and-write tasks only after every image is decoded: "
            "no result file or checkpoint entry before then. compute.encode_cpus: 0 writes as the job goes")
    elif config.compute.encode_cpus is None and cpus.per_write == 0:
        log(f"note:    {on_this_cluster} the encode-and-write tasks reserve no CPU (compute.encode_cpus unset), so "
            "that results and checkpoint entries come as the job goes; compute.encode_cpus: 1 is faster here but "
            "writes nothing before every image is decoded")
    return ds


def _spare_cpus(resources: Resources, config: JobConfig, cpus_per_actor: float, checkpoint_filter: bool) -> float:
    return resources.cpus - config.compute.num_actors * cpus_per_actor - (1 if checkpoint_filter else 0)


def write_cpus(config: JobConfig, resources: Resources, cpus_per_actor: float, checkpoint_filter: bool) -> float:
    """CPUs each encode-and-write task reserves: compute.encode_cpus; unset, 1, or 0 on a
    cluster where 1-CPU writes would wait for the decoding (`writes_wait_for_decoding`)."""
    if config.compute.encode_cpus is not None:
        return config.compute.encode_cpus
    return 0.0 if _spare_cpus(resources, config, cpus_per_actor, checkpoint_filter) < _SPARE_CPUS_FOR_WRITES else 1.0


def writes_wait_for_decoding(config: JobConfig, resources: Resources, cpus_per_actor: float,
                             checkpoint_filter: bool) -> bool:
    """Whether Ray Data would start no write before the decoding ends: it reserves a task's CPU
    for the read and the decode first, and a write that reserves CPU gets one only from what
    is left beside the model actors (and a resumed run's checkpoint filter)."""
    return (write_cpus(config, resources, cpus_per_actor, checkpoint_filter) > 0
            and _spare_cpus(resources, config, cpus_per_actor, checkpoint_filter) < _SPARE_CPUS_FOR_WRITES)


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


def read_input(plan: JobPlan, columns: List[str], num_blocks: int) -> ray.data.Dataset:
    """The input's `columns`, read by Ray Data's Parquet reader in read tasks of about a block
    each, in about `num_blocks` blocks of at most `rows_per_block` rows.

    The reader packs files into read tasks of up to RAY_DATA_PARQUET_BIN_PACKING_BYTES (128 MiB
    by default) and reads each of a task's files in a thread of its own: 10,000 files of small
    rows (a 1M-row job) made tasks of thousands of threads that never finished
    (bench/results/scale_cluster.md). It takes the variable when the read is planned; one the
    user set is kept.

    A read task of files smaller than a block puts out one block. A file of more rows than a
    block is cut by rows after the read (the reader ignores override_num_blocks), in a stage of
    CPU tasks of its own. Not by a small target block size: that target holds for every stage,
    and a decoded image is tens of times its encoded size, so the decode and model stages would
    cut each block into many. Ray Data keeps statistics of every block each stage puts out on
    the driver until the job ends (ray-project/ray#66016): the driver's memory grows with the
    blocks of a job."""
    block_bytes = max(2048, math.ceil(plan.scan.read_bytes / max(1, num_blocks)))
    read_fs, _ = plan.scan.location.arrow()
    with _environment(_READ_TASK_BYTES_VARIABLE, str(block_bytes)):
        ds = ray.data.read_parquet([f.path for f in plan.scan.files], filesystem=read_fs).select_columns(columns)
    rows = rows_per_block(plan.scan.num_rows, num_blocks)
    if max(f.num_rows for f in plan.scan.files) <= rows:
        return ds
    return ds.repartition(target_num_rows_per_block=rows)


def rows_per_block(num_rows: int, num_blocks: int) -> int:
    """Rows of a block (and of a result file) when `num_rows` are cut into `num_blocks`."""
    return max(1, math.ceil(num_rows / max(1, num_blocks)))


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """`name` set to `value` within, unless it is set already."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)
