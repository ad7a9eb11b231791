"""What a job writes into `output.path`, and how readers of an output find out about its job.

- `masks-<write id>-<task>-<n>.parquet`: the result rows (`pipeline.schema`), named by
  `ResultFilenames`;
- `_samhq_job.json`: the job's description, written before the first result: its config
  (which never holds credentials) and the number of input rows, so that `export-coco` knows
  the id, category and image columns without being told.

These are the only files `output.overwrite` removes; anything else in the directory makes
the job refuse to start.
"""

import json
import re
from typing import Any, Dict, List, Optional

from ray.data.datasource import FilenameProvider

from .config import StorageConfig
from .storage import filesystem

RESULT_FILE = re.compile(r"^masks-[0-9a-f]+-\d{6}(-\d+)?\.parquet$")
JOB_FILE = "_samhq_job.json"
JOB_FILE_FORMAT = 1


class ResultFilenames(FilenameProvider):
    """masks-<write id>-<task index>.parquet (Ray Data appends -<n> per file of a task)."""

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        return f"masks-{write_uuid}-{task_index:06}.parquet"


def is_job_file(name: str) -> bool:
    """Whether a file name (without directory) is one the job writes."""
    return bool(RESULT_FILE.match(name)) or name == JOB_FILE


def job_files(output: str, storage: StorageConfig) -> List[str]:
    """Paths of the files at `output` that a run of the job wrote."""
    fs, path = filesystem(output, storage)
    if not fs.exists(path):
        return []
    return [entry for entry in fs.ls(path, detail=False) if is_job_file(entry.rstrip("/").rsplit("/", 1)[-1])]


def write_job_description(output: str, storage: StorageConfig, config: Dict[str, Any], rows_in: int) -> None:
    fs, path = filesystem(output, storage)
    fs.makedirs(path, exist_ok=True)
    with fs.open(f"{path.rstrip('/')}/{JOB_FILE}", "w") as f:
        json.dump({"format": JOB_FILE_FORMAT, "config": config, "rows_in": rows_in}, f, indent=2, sort_keys=True)


def read_job_description(output: str, storage: StorageConfig) -> Optional[Dict[str, Any]]:
    """The description a job wrote at `output` (a directory), or None when there is none
    (an output written by something else, or a single file given)."""
    fs, path = filesystem(output, storage)
    description = f"{path.rstrip('/')}/{JOB_FILE}"
    if not fs.exists(description):
        return None
    with fs.open(description, "r") as f:
        data = json.load(f)
    if not isinstance(data, dict) or data.get("format") != JOB_FILE_FORMAT or not isinstance(data.get("config"), dict):
        raise ValueError(f"{fs.unstrip_protocol(description)} is not a job description this version can read")
    return data
