"""What a job writes into `output.path`, and how readers of an output find out about its job.

- `masks-<write id>-<task>-<n>.parquet`: the result rows (`pipeline.schema`), named by
  `ResultFilenames`;
- `_samhq_job.json`: the job's description, written before the first result: its config
  (which never holds credentials) and the number of input rows, so that `export-coco` knows
  the id, category and image columns without being told;
- `_checkpoint/`: Ray Data's checkpoint of the ids already written (by default; removed when
  the job completes unless `output.keep_checkpoint`). A result file whose checkpoint entry is
  still `<file>.pending.parquet` belongs to a write that was interrupted: it never counts;
- `_SUCCESS`: written last, only when the closing check passed: a small JSON manifest (config
  digest, rows in and out, the result files, skipped input files, the checkpoint, and each
  `--retry-errors` pass);
- `_retry/`: a `--retry-errors` pass's new rows, while it replaces the failed ones in the
  result files (each file is replaced whole, at once); removed when the pass ends.

These are the only files `output.mode: overwrite` removes; anything else in the directory
makes the job refuse to start.
"""

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data.datasource import FilenameProvider

from .config import JobConfig, StorageConfig
from .storage import basename, filesystem, list_parquet_files, remove, replace_file

RESULT_FILE = re.compile(r"^masks-[0-9a-f]+-\d{6}(-\d+)?\.parquet$")
JOB_FILE = "_samhq_job.json"
JOB_FILE_FORMAT = 1
SUCCESS_FILE = "_SUCCESS"
CHECKPOINT_DIR = "_checkpoint"
RETRY_DIR = "_retry"
# Ray Data names a checkpoint entry after the data file it covers (ray.data.checkpoint).
_PENDING_SUFFIX = ".pending.parquet"


class ResultFilenames(FilenameProvider):
    """masks-<write id>-<task index>.parquet (Ray Data appends -<n> per file of a task). The
    name depends only on the write and the task, so that Ray Data's checkpoint can name a
    pending write's file before it exists."""

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        return f"masks-{write_uuid}-{task_index:06}.parquet"


def is_job_file(name: str) -> bool:
    """Whether a name (without directory) in an output directory is one the job writes."""
    return bool(RESULT_FILE.match(name)) or name in (JOB_FILE, SUCCESS_FILE, CHECKPOINT_DIR, RETRY_DIR)


def _join(path: str, name: str) -> str:
    return f"{path.rstrip('/')}/{name}"


def checkpoint_path(config: JobConfig) -> str:
    """Where the job's checkpoint lives (a URL or local path)."""
    return config.output.checkpoint_path or _join(config.output.path, CHECKPOINT_DIR)


def retry_path(config: JobConfig) -> str:
    """Where a --retry-errors pass writes its new rows before they replace the failed ones."""
    return _join(config.output.path, RETRY_DIR)


def replace_rows(path: str, config: JobConfig, replacements: pa.Table) -> int:
    """Rewrite the result file at `path` (in the output's filesystem) with each row whose id
    is in `replacements` replaced by that row, in its place; returns how many were. The file
    is replaced whole and at once (`storage.replace_file`, by way of `_retry/`), so a reader
    or a crash sees either the old rows or the new ones."""
    output, storage, id_column = config.output.path, config.storage, config.input.id_column
    fs, _ = filesystem(output, storage)
    with fs.open(path, "rb") as f:
        table = pq.read_table(f)
    position = pc.index_in(table.column(id_column), value_set=replacements.column(id_column))
    if position.null_count == len(position):
        return 0
    own = pa.array(np.arange(table.num_rows, dtype=np.int64))
    taken = pc.if_else(position.is_null(), own, pc.add(position.cast(pa.int64()), table.num_rows))
    combined = pa.concat_tables([table, replacements.select(table.column_names).cast(table.schema)])
    sink = pa.BufferOutputStream()
    pq.write_table(combined.take(taken), sink)
    replace_file(fs.unstrip_protocol(path), storage, sink.getvalue().to_pybytes(),
                 temporary=_join(retry_path(config), basename(path) + ".partial"))
    return len(position) - position.null_count


def job_files(output: str, storage: StorageConfig) -> List[str]:
    """Paths of the files and directories at `output` that a run of the job wrote."""
    fs, path = filesystem(output, storage)
    if not fs.exists(path):
        return []
    return [entry for entry in fs.ls(path, detail=False) if is_job_file(basename(entry))]


def remove_job_files(output: str, storage: StorageConfig) -> None:
    fs, _ = filesystem(output, storage)
    for path in job_files(output, storage):
        remove(fs.unstrip_protocol(path), storage)


def decisive_settings(config: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The sections of a config (as a dict) that decide the results: input, model and the
    output's columns; not the mode, checkpoint, compute or `model.compile` settings, which a
    resumed run may change (compiled and eager masks agree, tests/pipeline/test_model_stage.py)."""
    output = {k: v for k, v in config.get("output", {}).items() if k == "include_image_bytes"}
    model = {k: v for k, v in (config.get("model") or {}).items() if k != "compile"}
    return {"input": config.get("input") or {}, "model": model, "output": output}


def config_digest(config: Dict[str, Any]) -> str:
    """sha256 of the config's `decisive_settings`."""
    return hashlib.sha256(json.dumps(decisive_settings(config), sort_keys=True).encode()).hexdigest()


def write_job_description(output: str, storage: StorageConfig, config: Dict[str, Any], rows_in: int) -> None:
    write_json(output, storage, JOB_FILE, {"format": JOB_FILE_FORMAT, "config": config, "rows_in": rows_in,
                                           "config_digest": config_digest(config)})


def write_json(output: str, storage: StorageConfig, name: str, data: Dict[str, Any]) -> None:
    fs, path = filesystem(output, storage)
    fs.makedirs(path, exist_ok=True)
    with fs.open(_join(path, name), "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)


def read_json(output: str, storage: StorageConfig, name: str) -> Optional[Dict[str, Any]]:
    fs, path = filesystem(output, storage)
    target = _join(path, name)
    if not fs.exists(target) or fs.isdir(target):
        return None
    with fs.open(target, "r") as f:
        data = json.load(f)
    if not isinstance(data, dict) or data.get("format") != JOB_FILE_FORMAT:
        raise ValueError(f"{fs.unstrip_protocol(target)} is not a file this version can read")
    return data


def read_job_description(output: str, storage: StorageConfig) -> Optional[Dict[str, Any]]:
    """The description a job wrote at `output` (a directory), or None when there is none
    (an output written by something else, or a single file given)."""
    data = read_json(output, storage, JOB_FILE)
    if data is not None and not isinstance(data.get("config"), dict):
        raise ValueError(f"{output}: {JOB_FILE} has no config")
    return data


def read_manifest(output: str, storage: StorageConfig) -> Optional[Dict[str, Any]]:
    """The `_SUCCESS` manifest of a completed job at `output`, or None."""
    return read_json(output, storage, SUCCESS_FILE)


@dataclass
class ResultListing:
    files: List[str]  # paths within the output's filesystem
    warning: Optional[str]  # why the listing may not be a finished job's whole output


def result_files(output: str, storage: StorageConfig) -> ResultListing:
    """The result files a reader of `output` should read. A completed job's are those its
    manifest lists. An output without a manifest (a job still running, or one that died)
    gives its result files minus those of interrupted writes, with a warning; anything that is
    not a job's directory (a single file, a glob, files from elsewhere) is listed as it is."""
    fs, path = filesystem(output, storage)
    description = read_job_description(output, storage) if fs.isdir(path) else None
    if description is None:
        return ResultListing(list_parquet_files(output, storage), None)
    manifest = read_manifest(output, storage)
    if manifest is not None:
        return ResultListing([_join(path, name) for name in manifest["files"]], None)
    names = sorted(n for n in map(basename, fs.ls(path, detail=False)) if RESULT_FILE.match(n))
    checkpoint = description["config"].get("output", {}).get("checkpoint_path") or _join(output, CHECKPOINT_DIR)
    pending = _pending_prefixes(checkpoint, storage)
    done = [n for n in names if not any(n.startswith(p) for p in pending)]
    left_out = len(names) - len(done)
    return ResultListing([_join(path, n) for n in done], (
        f"{output} has no {SUCCESS_FILE}: the job that wrote it has not finished (it may still be running, or it "
        f"died; `output.mode: resume` completes it); reading the {len(done)} result files written so far"
        + (f", leaving out {left_out} of interrupted writes" if left_out else "")))


def _pending_prefixes(checkpoint: str, storage: StorageConfig) -> List[str]:
    """The result-file names (without extension) whose writes the checkpoint holds as pending."""
    fs, path = filesystem(checkpoint, storage)
    if not fs.exists(path):
        return []
    return [name[: -len(_PENDING_SUFFIX)] for name in map(basename, fs.ls(path, detail=False))
            if name.endswith(_PENDING_SUFFIX)]


def committed_checkpoint_files(config: JobConfig) -> List[str]:
    """The checkpoint's committed entries (each lists the ids of one result file written)."""
    fs, path = filesystem(checkpoint_path(config), config.storage)
    if not fs.exists(path):
        return []
    return [e for e in fs.ls(path, detail=False) if e.endswith(".parquet") and not e.endswith(_PENDING_SUFFIX)]
