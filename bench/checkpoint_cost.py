"""What resuming costs at scale: Ray Data's checkpoint restore at 1M and 10M ids, integer ids
and string ids ("img-00001234"-like, 12 to 16 characters).

A resumed run (`output.mode: resume`) plans Ray Data's checkpoint filter: while planning, the
driver calls `IdColumnCheckpointManager.load_checkpoint()`, which reads every checkpoint file
(one per result file written), gathers the ids into one block, sorts them in one Ray task
and leaves the sorted array in the object store; then one filter actor (the job sets
`checkpoint_actor_pool_max_size = 1`) fetches the array and filters each input block with a
binary search. This bench pays each of those steps with the job's own `CheckpointConfig`
(`pipeline.job.dataset.job_checkpoint`) over a synthetic checkpoint:

1. a format check first: a small job-shaped write through Ray Data (`write_parquet` with the
   job's checkpoint config and result file names) next to the synthetic writer's files for
   the same ids; the file names, the Parquet schema and what Ray's loader makes of them must
   agree, or the bench stops (Ray's checkpoint format changed: fix `write_checkpoint`);
2. per (kind, ids): a synthetic checkpoint of one file per 1,000-id block (the job's default
   block, `_ROWS_PER_BLOCK`), ids shuffled across and within files (a job's blocks finish in
   any order; the sort sees no presorted runs); then, in a fresh process with a local 2-CPU
   Ray cluster of its own (`ray.init(address="local")`: free ports, never 6379/8265/10001):
   the restore time, the size Ray reports for the ids (what it sizes the filter actor's
   memory reservation from), the driver's and the largest Ray worker's peak RSS during the
   restore (psutil, sampled every 50 ms), the filter actor (Ray's
   `NumpyArrayBasedCheckpointFilter` built inside an actor) process's RSS before and after it
   holds the ids, and the time to filter a 1,000-row block (half of it already written).

    python -m bench.checkpoint_cost [--ids 1000000 10000000] [--kinds int string] \\
        [--out bench/results/checkpoint_cost.md]

About 10 minutes on 2 cores (the stalled v2 restores at 10M ids wait out --deadline, 180 s);
at most about 3 GB of memory (10M string ids). --readers v2 v1: Ray 2.60's default Parquet reader
(Datasource V2) and the V1 one (RAY_DATA_USE_DATASOURCE_V2=0), which restores 10,000 files;
--readers job: the job's own checkpoint manager (`pipeline.job.checkpoint_restore`), which reads
the checkpoint with the V1 reader whatever the input's reader is.
"""

import argparse
import datetime
import gc
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any, Dict, List, Tuple

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from bench.common.machine import cpu_model, memory_gib
from bench.common.sampling import PeriodicSampler
from pipeline.job.dataset import (
    _CHECKPOINT_FILTER_MEMORY,
    _FOOTER_READERS_VARIABLE,
    _ROWS_PER_BLOCK,
    ResultFilenames,
    filter_reservation,
    job_checkpoint,
)
from pipeline.output import JobOutput, result_file_name

ID_COLUMN = "id"
KINDS = ("int", "string")
CLUSTER_CPUS = 2
# The object store holds the gathered checkpoint block and the sorted ids (about 0.4 GB at 10M
# string ids); 2 GiB leaves room without spilling, and bounds what the bench takes of a
# machine that others share.
OBJECT_STORE_BYTES = 2 << 30
FILTER_BLOCK_ROWS = 1000
FILTER_REPEATS = 200
MIB = 1 << 20
# Ray Data 2.60 reads Parquet (the checkpoint too) with its Datasource V2 reader unless this
# variable is 0 (ray/data/context.py); the V2 reader starts a thread per file in a read task.
READER_VARIABLE = "RAY_DATA_USE_DATASOURCE_V2"
READERS = {"v2": "1", "v1": "0", "job": "1"}  # job: the job's own manager, under the default


def make_ids(kind: str, numbers: np.ndarray) -> pa.Array:
    """The ids of `numbers`: int64 as they are, or strings of 12 to 16 characters
    ("img-" and 8 to 12 digits, the width varying with the number), unique as the numbers are."""
    if kind == "int":
        return pa.array(numbers, pa.int64())
    return pa.array([f"img-{n:0{8 + n % 5}d}" for n in numbers.tolist()], pa.string())


def write_checkpoint(path: str, ids: pa.Array, schema: pa.Schema) -> None:
    """One checkpoint file, as Ray's BatchBasedCheckpointWriter commits it for a file written
    by the job: `pq.write_table` of a table of the id column alone, at
    `<result file's base name>.parquet` (the result file's own name)."""
    pq.write_table(pa.table({ID_COLUMN: ids}).cast(schema), path)


def synthetic_checkpoint(directory: str, kind: str, count: int, rows_per_file: int, schema: pa.Schema) -> int:
    """`count` ids (0 .. count-1, shuffled) in files of `rows_per_file`, named as one write's
    result files; returns the files written."""
    os.makedirs(directory)
    order = np.random.default_rng(0).permutation(count).astype(np.int64)
    write_uuid = uuid.uuid4().hex
    starts = range(0, count, rows_per_file)
    for index, start in enumerate(starts):
        write_checkpoint(os.path.join(directory, result_file_name(write_uuid, index)),
                         make_ids(kind, order[start:start + rows_per_file]), schema)
    return len(starts)


# ---------------------------------------------------------------------------------------------
# The format check: a real checkpoint written through Ray Data against the synthetic writer's.

CHECKPOINT_NAME = re.compile(r"masks-[0-9a-f]+-\d{6}\.parquet")


def quiet_ray() -> None:
    """Ray Data's progress lines and INFO logs, off: the bench prints its own."""
    from ray.data.context import DataContext

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    DataContext.get_current().enable_progress_bars = False


class FormatChanged(SystemExit):
    """Ray's checkpoint no longer looks as this bench writes it: its numbers would not say
    what a resumed job pays."""

    def __init__(self, what: str) -> None:
        super().__init__(f"checkpoint format check FAILED: {what}. Ray Data's checkpoint writer "
                         "(ray/data/checkpoint/checkpoint_writer.py) changed; update write_checkpoint.")


def load_ids(checkpoint_dir: str, data_dir: str, reader: str = "job") -> Tuple[Any, int]:
    """The restore as the planner calls it: (the sorted ids' ObjectRef, their reported size), by
    the job's checkpoint manager (`reader` "job") or by Ray's own (the reader its variable says)."""
    from ray.data.checkpoint.checkpoint_filter import IdColumnCheckpointManager
    from ray.data.context import DataContext

    from pipeline.job.checkpoint_restore import JobCheckpointManager

    config = job_checkpoint(JobOutput(data_dir, checkpoint_url=checkpoint_dir), ID_COLUMN)
    manager_cls = JobCheckpointManager if reader == "job" else IdColumnCheckpointManager
    manager = manager_cls(checkpoint_config=config, data_context=DataContext.get_current())
    ref, size = manager.load_checkpoint(data_dir, config.filesystem)
    if ref is None:
        raise FormatChanged(f"Ray's loader found no ids in {checkpoint_dir}")
    return ref, size


def check_format(kind: str, work: str) -> Tuple[pa.Schema, List[str]]:
    """Write 2,500 ids through Ray Data as the job writes (`write_parquet` with the job's
    checkpoint config, result file names and at least 1,000 rows a file), then the same ids
    with `write_checkpoint`; return the checkpoint's schema, and what was checked. Raises
    FormatChanged on any difference."""
    import ray
    from ray.data.context import DataContext

    rows = 2500
    source, output = os.path.join(work, f"{kind}-input"), os.path.join(work, f"{kind}-output")
    os.makedirs(source)
    numbers = np.arange(rows, dtype=np.int64)
    for i, start in enumerate(range(0, rows, 1000)):
        part = numbers[start:start + 1000]
        pq.write_table(pa.table({ID_COLUMN: make_ids(kind, part), "image": pa.array([b"x" * 100] * len(part))}),
                       os.path.join(source, f"part-{i}.parquet"))
    real = os.path.join(work, f"{kind}-real-checkpoint")
    ds = ray.data.read_parquet(source)
    # Blocks cut as the job cuts them (`_size_blocks`: half the bytes of a 1,000-row block), so
    # that the write runs more than one task, each a result file and a checkpoint file.
    ds.context.target_max_block_size = 110 * 1000 // 2
    ds.context.checkpoint_config = job_checkpoint(JobOutput(output, checkpoint_url=real), ID_COLUMN)
    ds.write_parquet(output, filename_provider=ResultFilenames(), min_rows_per_file=1000)
    DataContext.get_current().checkpoint_config = None

    names = sorted(os.listdir(real))
    results = sorted(os.listdir(output))
    if not names or any(not CHECKPOINT_NAME.fullmatch(n) for n in names):
        raise FormatChanged(f"checkpoint files {names} are not named <result file's base name>.parquet")
    # Ray appends -<n> to each file a write task writes; the checkpoint file keeps the base name.
    if [n.removesuffix(".parquet") for n in names] != sorted({re.sub(r"-\d+\.parquet$", "", n) for n in results}):
        raise FormatChanged(f"checkpoint files {names} do not match the result files {results}")
    schemas = {str(pq.read_schema(os.path.join(real, n))) for n in names}
    schema = pq.read_schema(os.path.join(real, names[0]))
    if len(schemas) != 1 or schema.names != [ID_COLUMN]:
        raise FormatChanged(f"checkpoint files hold {schemas}, not the id column alone")
    real_ids = pa.concat_arrays([pq.read_table(os.path.join(real, n))[ID_COLUMN].combine_chunks() for n in names])
    if sorted(real_ids.to_pylist()) != sorted(make_ids(kind, numbers).to_pylist()):
        raise FormatChanged("the checkpoint's ids are not the ids written")
    meta = pq.read_metadata(os.path.join(real, names[0]))

    synthetic = os.path.join(work, f"{kind}-synthetic-checkpoint")
    synthetic_checkpoint(synthetic, kind, rows, 1000, schema)
    ours = sorted(os.listdir(synthetic))
    if any(not CHECKPOINT_NAME.fullmatch(n) for n in ours):
        raise FormatChanged(f"the synthetic files {ours} are not named as Ray names them")
    our_meta = pq.read_metadata(os.path.join(synthetic, ours[0]))
    for what, theirs, mine in [
        ("Parquet schema", meta.schema.to_arrow_schema(), our_meta.schema.to_arrow_schema()),
        ("Arrow schema metadata", schema.metadata, pq.read_schema(os.path.join(synthetic, ours[0])).metadata),
        ("compression", meta.row_group(0).column(0).compression, our_meta.row_group(0).column(0).compression),
        ("Parquet format version", meta.format_version, our_meta.format_version),
    ]:
        if theirs != mine:
            raise FormatChanged(f"{what}: Ray writes {theirs}, the bench {mine}")
    # What a resume sees: Ray's own loader over both checkpoints gives the same sorted array.
    theirs_ref, theirs_size = load_ids(real, output)
    mine_ref, mine_size = load_ids(synthetic, output)
    theirs_ids, mine_ids = ray.get(theirs_ref), ray.get(mine_ref)
    if theirs_ids.dtype != mine_ids.dtype or not np.array_equal(theirs_ids, mine_ids) or theirs_size != mine_size:
        raise FormatChanged(f"Ray's loader restores {theirs_ids.dtype} ({theirs_size} B) from its own checkpoint "
                            f"but {mine_ids.dtype} ({mine_size} B) from the bench's")
    checked = [f"{kind}: Ray wrote {len(names)} checkpoint files for {rows} ids in {len(results)} result files, "
               f"named as them; schema `{schema.field(ID_COLUMN)}`, {meta.row_group(0).column(0).compression}, "
               f"Parquet {meta.format_version}; the bench's files match, and Ray's loader restores the same "
               f"sorted {theirs_ids.dtype} array from both"]
    return schema, checked


# ---------------------------------------------------------------------------------------------
# One measurement, in a process of its own (its driver RSS is the restore's alone).

class PeakSampler(PeriodicSampler):
    """Peak RSS of this process and of the largest of its descendants (Ray's workers), every 50 ms."""

    interval = 0.05

    def __init__(self) -> None:
        super().__init__()
        self.me = psutil.Process()
        self.driver_peak = 0
        self.worker_peak = 0
        self.worker_name = ""
        self.worker_threads = 0

    def sample(self) -> None:
        self.driver_peak = max(self.driver_peak, self.me.memory_info().rss)
        for child in self.me.children(recursive=True):
            try:
                rss, name = child.memory_info().rss, " ".join(child.cmdline()).strip()[:60]
                self.worker_threads = max(self.worker_threads, child.num_threads())
            except psutil.Error:  # a worker that ended between the listing and the read
                continue
            if rss > self.worker_peak:
                self.worker_peak, self.worker_name = rss, name


def memory_of_process() -> Dict[str, int]:
    """This process's RSS, and its parts: anonymous (its own heap) and shared (mapped object
    store pages it touched), from /proc/self/status."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssShmem"):
                fields[key] = int(value.split()[0]) * 1024
    return {"rss": fields["VmRSS"], "anon": fields["RssAnon"], "shmem": fields["RssShmem"]}


class FilterProbe:
    """A Ray actor that builds Ray Data's checkpoint filter as its filter actor does
    (`_CheckpointFilterFn.init_checkpoint_filter`), and reports its own memory around it."""

    def __init__(self) -> None:
        self.filter: Any = None

    def load(self, config: Any, refs: List[Any]) -> Dict[str, Any]:
        from ray.data.checkpoint.checkpoint_filter import NumpyArrayBasedCheckpointFilter

        gc.collect()
        before = memory_of_process()
        start = time.perf_counter()
        # `refs` is a list so that Ray hands the filter the ObjectRef itself, as the job's does.
        self.filter = NumpyArrayBasedCheckpointFilter(config, refs[0])
        seconds = time.perf_counter() - start
        gc.collect()
        return {"before": before, "after": memory_of_process(), "init_s": seconds,
                "dtype": str(self.filter.checkpointed_ids.dtype)}

    def filter_block(self, block: pa.Table, repeats: int) -> Dict[str, Any]:
        times, kept = [], -1
        for _ in range(repeats):
            start = time.perf_counter()
            kept = self.filter.filter_rows_for_block(block).num_rows
            times.append(time.perf_counter() - start)
        gc.collect()
        return {"ms": [t * 1000 for t in times], "kept": kept}


def emit(result: Dict[str, Any]) -> Dict[str, Any]:
    """Print a measurement for run_one, before the cluster is shut down (which a stalled restore may hold up)."""
    print(json.dumps(result), flush=True)
    return result


def measure(kind: str, count: int, checkpoint_dir: str, schema_json: str, deadline_s: float,
            reader: str) -> Dict[str, Any]:
    """Restore the checkpoint at `checkpoint_dir` (`count` ids) as a resumed job does, and probe
    its filter; a restore still running after `deadline_s` is reported as stalled."""
    import ray

    # What the job sets for its Parquet reads on a 2-CPU cluster (footer_readers: one reader per
    # 4 CPUs, at least one); the checkpoint's read_parquet takes it from the driver too.
    os.environ[_FOOTER_READERS_VARIABLE] = "1"
    ray.init(address="local", num_cpus=CLUSTER_CPUS, include_dashboard=False, log_to_driver=False,
             object_store_memory=OBJECT_STORE_BYTES, logging_level=logging.ERROR)
    quiet_ray()
    data_dir = tempfile.mkdtemp(prefix="checkpoint-cost-output-")
    try:
        schema = pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(schema_json)))
        gc.collect()
        driver_before = psutil.Process().memory_info().rss
        loaded_ids: List[Tuple[Any, int]] = []
        # In a thread, so that a restore that stalls (Ray Data's V2 Parquet reader starts a thread
        # per checkpoint file in one read task) is seen and reported, not waited on for ever.
        loader = threading.Thread(target=lambda: loaded_ids.append(load_ids(checkpoint_dir, data_dir, reader)), daemon=True)
        with PeakSampler() as peaks:
            start = time.perf_counter()
            loader.start()
            loader.join(deadline_s)
            restore_s = time.perf_counter() - start
        common = {"restore_s": restore_s, "driver_before": driver_before, "driver_peak": peaks.driver_peak,
                  "worker_peak": peaks.worker_peak, "worker_name": peaks.worker_name,
                  "worker_threads": peaks.worker_threads}
        if not loaded_ids:
            return emit({**common, "stalled": True})
        ref, size = loaded_ids[0]
        object_bytes = ray.experimental.get_object_locations([ref])[ref]["object_size"]
        config = job_checkpoint(JobOutput(data_dir, checkpoint_url=checkpoint_dir), ID_COLUMN)
        reservation = filter_reservation(size)
        # Reserved as Ray Data reserves its filter actor; Any: Ray's stubs type the handle as "handle or class".
        probe: Any = ray.remote(FilterProbe).options(num_cpus=1, memory=reservation).remote()
        ray.get(probe.__ray_ready__.remote())
        loaded = ray.get(probe.load.remote(config, [ref]))
        # A block of a resumed run: half its ids already written, half new, in no order.
        numbers = np.random.default_rng(1).permutation(np.concatenate([
            np.random.default_rng(2).choice(count, FILTER_BLOCK_ROWS // 2, replace=False),
            np.arange(count, count + FILTER_BLOCK_ROWS // 2)])).astype(np.int64)
        block = pa.table({ID_COLUMN: make_ids(kind, numbers)}).cast(schema)
        filtered = ray.get(probe.filter_block.remote(block, FILTER_REPEATS))
        if filtered["kept"] != FILTER_BLOCK_ROWS // 2:
            raise RuntimeError(f"the filter kept {filtered['kept']} of {FILTER_BLOCK_ROWS} rows, not the "
                               f"{FILTER_BLOCK_ROWS // 2} new ones")
        return emit({**common, "stalled": False, "reported_bytes": size, "object_bytes": object_bytes,
                     "reservation_bytes": reservation, "filter": loaded, "filter_ms": filtered["ms"]})
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
        ray.shutdown()


# ---------------------------------------------------------------------------------------------
# The report.

def run_measurement(args: List[str], env: Dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run the measuring process; past `timeout` (its Ray cluster did not stop), end it and every
    process it started (its Ray cluster), by process id."""
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        tree = [process.pid] + [p.pid for p in psutil.Process(process.pid).children(recursive=True)]
        for pid in tree:
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
        out, err = process.communicate()
    return subprocess.CompletedProcess(args, process.returncode, out, err)


def run_one(kind: str, count: int, work: str, schema: pa.Schema, rows_per_file: int, readers: List[str],
            deadline_s: float) -> List[Dict[str, Any]]:
    """Write the checkpoint of `count` `kind` ids, then restore it once per Parquet reader."""
    directory = os.path.join(work, f"{kind}-{count}")
    start = time.perf_counter()
    files = synthetic_checkpoint(directory, kind, count, rows_per_file, schema)
    write_s = time.perf_counter() - start
    disk = sum(os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory))
    results = []
    try:
        for reader in readers:
            load_before = os.getloadavg()
            # A fresh process: its driver RSS, its Ray workers and its object store are this restore's alone.
            args = [sys.executable, "-m", "bench.checkpoint_cost", "--measure", kind, str(count), directory,
                    schema.serialize().to_pybytes().hex(), str(deadline_s), reader]
            env = {**os.environ, READER_VARIABLE: READERS[reader]}
            done = run_measurement(args, env, deadline_s + 300)
            if done.returncode != 0 or not done.stdout.strip():
                raise RuntimeError(f"the measurement of {count} {kind} ids ({reader}) failed "
                                   f"(exit {done.returncode}):\n{done.stderr[-4000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result.update(kind=kind, ids=count, reader=reader, files=files, write_s=write_s, disk_bytes=disk,
                          load_before=load_before, load_after=os.getloadavg())
            print(f"{kind} {count:,} ({reader}): restore {result['restore_s']:.1f} s"
                  f"{' STALLED' if result['stalled'] else ''}", flush=True)
            results.append(result)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return results


def complete_rows(results: List[Dict[str, Any]], kind: str) -> List[Dict[str, Any]]:
    """The rows of `kind` to extrapolate from: those of the first reader (v2 before v1) whose
    restores all finished."""
    for reader in sorted({r["reader"] for r in results}, reverse=True):
        rows = [r for r in results if r["kind"] == kind and r["reader"] == reader]
        if rows and not any(r["stalled"] for r in rows):
            return sorted(rows, key=lambda r: r["ids"])
    return []


def per_id(rows: List[Dict[str, Any]], key: Any) -> Tuple[float, float]:
    """(bytes or seconds per id, fixed part) of `key`: the slope between the two largest sizes
    measured, or through zero with one size."""
    values = [(r["ids"], key(r)) for r in rows]
    if len(values) == 1:
        return values[0][1] / values[0][0], 0.0
    (n0, v0), (n1, v1) = values[-2], values[-1]
    slope = (v1 - v0) / (n1 - n0)
    if slope <= 0:  # noise at small sizes (a load spike in the smaller run): through zero instead
        return v1 / n1, 0.0
    return slope, v1 - slope * n1


def actor_bytes(r: Dict[str, Any]) -> int:
    """What the filter actor holds for the ids: its own heap's growth, plus the object store pages
    it maps (an int64 array is read in place from the object store; a string array is unpickled
    into the heap)."""
    return r["filter"]["after"]["anon"] - r["filter"]["before"]["anon"] + r["object_bytes"] * (r["filter"]["dtype"] != "object")


def report(results: List[Dict[str, Any]], checks: List[str], load_start: Tuple[float, ...],
           load_end: Tuple[float, ...], rows_per_file: int, total_s: float) -> str:
    import ray

    def load(values: Tuple[float, ...]) -> str:
        return " ".join(f"{v:.2f}" for v in values)

    busiest = max([load_start[0], load_end[0], *(r[key][0] for r in results for key in ("load_before", "load_after"))])

    lines = [
        "# What resuming costs: Ray Data's checkpoint restore at 1M and 10M ids",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {cpu_model()}, {os.cpu_count()} logical cores (`nproc`), {memory_gib():.0f} GiB; "
        f"ray {ray.__version__}, pyarrow {pa.__version__}, numpy {np.__version__}",
        f"- load average (1, 5, 15 min) before the runs: {load(load_start)}; after: {load(load_end)}; each row's "
        "in the second table. " + (
            f"**Measured under a load above the {os.cpu_count()} cores**: the timings are upper bounds for an idle "
            "node" if busiest > (os.cpu_count() or 1) else "No more than the cores' load: the bench's own"),
        f"- cluster: a local Ray cluster per row, started in the measuring process (`ray.init(address=\"local\")`: "
        f"free ports), {CLUSTER_CPUS} CPUs, object store {OBJECT_STORE_BYTES >> 30} GiB; the job's checkpoint config "
        f"(`job_checkpoint`: one filter actor, reservation floor `_CHECKPOINT_FILTER_MEMORY` = "
        f"{_CHECKPOINT_FILTER_MEMORY // MIB} MiB)",
        f"- checkpoint: synthetic, one file per {rows_per_file:,}-id block (the job's default block, "
        "`_ROWS_PER_BLOCK`, hence one result file and one checkpoint file per 1,000 rows), ids 0 .. n-1 shuffled "
        "across and within the files; string ids `img-` and 8 to 12 digits (12 to 16 characters)",
        f"- format check (Ray's own write through `write_parquet` with the job's checkpoint config against "
        f"the bench's writer; the bench stops if they differ): passed. {' '.join(checks)}",
        f"- whole bench: {total_s / 60:.1f} min",
        "",
        "Restore time is the checkpoint manager's `load_checkpoint()` (Ray's `IdColumnCheckpointManager`, or with "
        "reader `job` the job's `JobCheckpointManager`), the call the planner makes for a resumed "
        "job (`create_checkpoint_filter_op`, with the job's output directory for the pending-file cleanup; none "
        "were pending): list and read every checkpoint file, gather them into one block, sort the ids in one "
        "task. The job pays it on the driver before its first block is read, then the filter actor's start "
        "(`init s`: fetching the sorted ids). `ids MiB (Ray)` is the size Ray reports and sizes the actor's "
        "reservation from (`max(256 MiB, 1.5 x size)`); `object store MiB` the ids' copy there, kept for the "
        "whole run. Filter actor MiB: its process's RSS after it holds the ids, and (in brackets) the growth of "
        "its own heap (RssAnon); an int64 array is mapped from the object store, not copied.",
        "",
        "| kind | ids | reader | files | restore s | ids MiB (Ray) | object store MiB | driver peak RSS MiB (start) "
        "| largest worker peak RSS MiB | filter actor RSS MiB (heap growth) | filter init s "
        "| filter ms per 1k-row block (median / p90) | reservation MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["stalled"]:
            lines.append(
                f"| {r['kind']} | {r['ids']:,} | {r['reader']} | {r['files']:,} | **stalled: not done after "
                f"{r['restore_s']:.0f} s**, a read task at {r['worker_threads']:,} threads | — | — "
                f"| {r['driver_peak'] / MIB:.0f} ({r['driver_before'] / MIB:.0f}) | {r['worker_peak'] / MIB:.0f} "
                "| — | — | — | — |")
            continue
        f = r["filter"]
        ms = sorted(r["filter_ms"])
        lines.append(
            f"| {r['kind']} | {r['ids']:,} | {r['reader']} | {r['files']:,} | {r['restore_s']:.1f} "
            f"| {r['reported_bytes'] / MIB:.0f} "
            f"| {r['object_bytes'] / MIB:.0f} | {r['driver_peak'] / MIB:.0f} ({r['driver_before'] / MIB:.0f}) "
            f"| {r['worker_peak'] / MIB:.0f} | {f['after']['rss'] / MIB:.0f} "
            f"({(f['after']['anon'] - f['before']['anon']) / MIB:+.0f}) | {f['init_s']:.2f} "
            f"| {statistics.median(ms):.2f} / {ms[int(len(ms) * 0.9)]:.2f} | {r['reservation_bytes'] / MIB:.0f} |")
    lines += ["", "Per row: the synthetic checkpoint's size and write time (not part of the restore), the "
              "largest Ray worker during the restore (the sorting task, as `ps` names it) and the load average.", "",
              "| kind | ids | reader | checkpoint on disk MiB | written in s | largest worker (most threads) "
              "| load before → after |",
              "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['kind']} | {r['ids']:,} | {r['reader']} | {r['disk_bytes'] / MIB:.1f} | {r['write_s']:.0f} "
                     f"| `{r['worker_name']}` ({r['worker_threads']:,}) "
                     f"| {load(r['load_before'])} → {load(r['load_after'])} |")

    lines += ["", "## Extrapolated to 100M and 1B ids", "",
              "**Extrapolated, not measured**: linear in ids, from the slope between the two largest sizes "
              "measured of each kind (the sort is n log n, so the restore time is if anything under-estimated; "
              "the filter's time per block grows with log n only and stays about as measured). One job, one "
              "checkpoint, one filter actor, as the job is configured today.", "",
              "| kind | from reader | ids | restore min | ids GiB (Ray) | object store GiB | largest worker GiB "
              "| filter actor GiB | reservation GiB |",
              "|---|---|---|---|---|---|---|---|---|"]
    outgrows: Dict[str, float] = {}
    for kind in KINDS:
        rows = complete_rows(results, kind)
        if not rows:
            continue
        fits = {name: per_id(rows, key) for name, key in [
            ("restore", lambda r: r["restore_s"]), ("reported", lambda r: r["reported_bytes"]),
            ("object", lambda r: r["object_bytes"]), ("worker", lambda r: r["worker_peak"]),
            ("actor", actor_bytes)]}
        slope, fixed = fits["actor"]
        outgrows[kind] = (_CHECKPOINT_FILTER_MEMORY - fixed) / slope
        for n in (100_000_000, 1_000_000_000):
            value = {name: slope_ * n + fixed_ for name, (slope_, fixed_) in fits.items()}
            lines.append(
                f"| {kind} | {rows[0]['reader']} | {n:,} | {value['restore'] / 60:.0f} | {value['reported'] / 2**30:.1f} "
                f"| {value['object'] / 2**30:.1f} | {value['worker'] / 2**30:.1f} | {value['actor'] / 2**30:.1f} "
                f"| {filter_reservation(value['reported']) / 2**30:.1f} |")
    lines += ["", "The filter actor outgrows the project's 256 MiB (`_CHECKPOINT_FILTER_MEMORY`) at about "
              + ", ".join(f"**{n / 1e6:.0f}M {kind} ids**" for kind, n in outgrows.items())
              + " (extrapolated from the measured bytes per id)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--rows-per-file", type=int, default=_ROWS_PER_BLOCK,
                        help="ids per checkpoint file (the job's default block: one file per block)")
    parser.add_argument("--out", default="bench/results/checkpoint_cost.md")
    parser.add_argument("--readers", nargs="+", choices=sorted(READERS), default=["v2", "v1"],
                        help="the restore by Ray's own manager with Ray Data's Parquet reader v2 (Ray 2.60's "
                             "default) or v1, or by the job's manager (job: pipeline.job.checkpoint_restore)")
    parser.add_argument("--deadline", type=float, default=180.0,
                        help="seconds after which a restore still running is reported as stalled")
    parser.add_argument("--measure", nargs=6, metavar=("KIND", "IDS", "CHECKPOINT", "SCHEMA", "DEADLINE", "READER"),
                        help=argparse.SUPPRESS)  # one measurement, in the process run_one starts
    args = parser.parse_args()
    if args.measure:
        kind, count, directory, schema_hex, deadline, reader = args.measure
        measure(kind, int(count), directory, schema_hex, float(deadline), reader)
        # Not waiting for a stalled restore's thread (its cluster is shut down).
        os._exit(0)

    import ray

    started, load_start = time.perf_counter(), os.getloadavg()
    work = tempfile.mkdtemp(prefix="checkpoint-cost-")
    try:
        schemas: Dict[str, pa.Schema] = {}
        checks: List[str] = []
        ray.init(address="local", num_cpus=CLUSTER_CPUS, include_dashboard=False, log_to_driver=False,
                 object_store_memory=256 << 20, logging_level=logging.ERROR)
        quiet_ray()
        try:
            for kind in args.kinds:
                schemas[kind], checked = check_format(kind, work)
                checks += checked
        finally:
            ray.shutdown()
        print("format check passed:", *checks, sep="\n  ", flush=True)
        results = [result for kind in args.kinds for count in sorted(args.ids)
                   for result in run_one(kind, count, work, schemas[kind], args.rows_per_file, args.readers,
                                         args.deadline)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    raw = os.path.join(tempfile.gettempdir(), "checkpoint_cost_results.json")
    with open(raw, "w") as f:
        json.dump({"results": results, "checks": checks, "load_start": load_start}, f)
    print(f"raw results: {raw}", flush=True)
    text = report(results, checks, load_start, os.getloadavg(), args.rows_per_file, time.perf_counter() - started)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
