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

These are the only files `output.mode: overwrite` removes; anything else in the directory
makes the job refuse to start.
"""

import re

RESULT_FILE = re.compile(r"^masks-[0-9a-f]+-\d{6}(-\d+)?\.parquet$")
JOB_FILE = "_samhq_job.json"
JOB_FILE_FORMAT = 1
SUCCESS_FILE = "_SUCCESS"
CHECKPOINT_DIR = "_checkpoint"
RETRY_DIR = "_retry"
LEASE_FILE = "_samhq_lease.json"
# Ray Data names a checkpoint entry after the data file it covers (ray.data.checkpoint).
PENDING_SUFFIX = ".pending.parquet"


def result_file_name(write_uuid: str, task_index: int) -> str:
    """masks-<write id>-<task index>.parquet (Ray Data appends -<n> per file of a task). The
    name depends only on the write and the task, so that Ray Data's checkpoint can name a
    pending write's file before it exists."""
    return f"masks-{write_uuid}-{task_index:06}.parquet"


def is_job_file(name: str) -> bool:
    """Whether a name (without directory) in an output directory is one the job writes."""
    return bool(RESULT_FILE.match(name)) or name in (JOB_FILE, SUCCESS_FILE, CHECKPOINT_DIR, RETRY_DIR, LEASE_FILE)
