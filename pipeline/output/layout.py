"""What a job writes into `output.path`, by name:

- `masks-<write id>-<task>-<n>.parquet`: the result rows (`pipeline.schema`), named by
  `result_file_name`;
- `_samhq_job.json`: the job's description (`description.JobDescription`), written before the
  first result: its config (which never holds credentials) and the number of input rows, so
  that the exports, the review page and a resumed run know the job without being told;
- `_checkpoint/`: Ray Data's checkpoint of the ids already written (by default; removed when
  the job completes unless `output.keep_checkpoint`). A result file whose checkpoint entry is
  still `<file>.pending.parquet` belongs to a write that was interrupted: it never counts;
- `_SUCCESS`: written last, only when the closing check passed: a small JSON manifest
  (`description.Manifest`);
- `_retry/`: a `--retry-errors` pass's new rows, while it replaces the failed ones in the
  result files (each file is replaced whole, at once); removed when the pass ends;
- `_samhq_lease.json`: the lease of the run writing the output (`lease.OutputLease`), there
  while it runs.

A job run in shards (`shards.Shard`, `--shard I/N`) writes the same files with the shard's
label (`shard-0003-of-0004`) in their names, so that shards never touch each other's:
`masks-shard-0003-of-0004-<write id>-<task>-<n>.parquet`, `_samhq_job.shard-0003-of-0004.json`,
`_SUCCESS.shard-0003-of-0004.json`, `_samhq_lease.shard-0003-of-0004.json`, and the
directories `_checkpoint/shard-0003-of-0004/` and `_retry/shard-0003-of-0004/`.

These are the only files `output.mode: overwrite` removes (a shard's run: only its own);
anything else in the directory makes the job refuse to start.
"""

import re
from typing import Optional

from .shards import Shard

RESULT_FILE = re.compile(r"^masks-(?:shard-(\d{4})-of-(\d{4})-)?[0-9a-f]+-\d{6}(-\d+)?\.parquet$")
JOB_FILE = "_samhq_job.json"
JOB_FILE_FORMAT = 1
SUCCESS_FILE = "_SUCCESS"
CHECKPOINT_DIR = "_checkpoint"
RETRY_DIR = "_retry"
LEASE_FILE = "_samhq_lease.json"
# Ray Data names a checkpoint entry after the data file it covers (ray.data.checkpoint).
PENDING_SUFFIX = ".pending.parquet"
_SHARD_FILE = re.compile(r"^(?:_samhq_job|_SUCCESS|_samhq_lease)\.shard-(\d{4})-of-(\d{4})\.json$")


def result_file_name(write_uuid: str, task_index: int, shard: Optional[Shard] = None) -> str:
    """masks-[<shard label>-]<write id>-<task index>.parquet (Ray Data appends -<n> per file of
    a task). The name depends only on the shard, the write and the task, so that Ray Data's
    checkpoint can name a pending write's file before it exists."""
    owner = f"{shard.label}-" if shard is not None else ""
    return f"masks-{owner}{write_uuid}-{task_index:06}.parquet"


def job_file(shard: Optional[Shard]) -> str:
    """The name of the job's (or the shard's) description."""
    return JOB_FILE if shard is None else f"_samhq_job.{shard.label}.json"


def success_file(shard: Optional[Shard]) -> str:
    """The name of the job's (or the shard's) `_SUCCESS` manifest."""
    return SUCCESS_FILE if shard is None else f"{SUCCESS_FILE}.{shard.label}.json"


def lease_file(shard: Optional[Shard]) -> str:
    """The name of the lease of the run writing the job (or the shard)."""
    return LEASE_FILE if shard is None else f"_samhq_lease.{shard.label}.json"


def shard_of(name: str) -> Optional[Shard]:
    """The shard whose file (or directory of `_checkpoint/` and `_retry/`) `name` is; None for
    an unsharded job's file and any other name."""
    match = _SHARD_FILE.match(name) or RESULT_FILE.match(name) or re.match(r"^shard-(\d{4})-of-(\d{4})$", name)
    if match is None or match.group(1) is None:
        return None
    return Shard(int(match.group(1)), int(match.group(2)))


def is_result_file(name: str, shard: Optional[Shard]) -> bool:
    """Whether `name` is a result file of the shard (of the unsharded job for None)."""
    return bool(RESULT_FILE.match(name)) and shard_of(name) == shard


def is_job_file(name: str) -> bool:
    """Whether a name (without directory) in an output directory is one the job, or one of its
    shards, writes."""
    return (bool(RESULT_FILE.match(name) or _SHARD_FILE.match(name))
            or name in (JOB_FILE, SUCCESS_FILE, CHECKPOINT_DIR, RETRY_DIR, LEASE_FILE))
