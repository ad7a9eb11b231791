"""A job's output location: what the job writes there (`layout`), its description and manifest
(`description`), the handle every command opens it through (`handle.JobOutput`), the lease
that keeps it to one writer (`lease`), the parts of a job run in shards (`shards`), and the one
reader of its results for the exports and the review page (`results`)."""

from .description import (
    Fingerprint,
    JobDescription,
    Manifest,
    ShardRecord,
    changed_settings,
    config_digest,
    decisive_settings,
)
from .handle import JobOutput, ResultListing
from .layout import (
    CHECKPOINT_DIR,
    JOB_FILE,
    LEASE_FILE,
    RETRY_DIR,
    SUCCESS_FILE,
    is_job_file,
    is_result_file,
    job_file,
    lease_file,
    result_file_name,
    shard_of,
    success_file,
)
from .lease import LeaseHeld, OutputLease
from .shards import Shard, assign_files, parse_shard, rows_per_shard

__all__ = ["CHECKPOINT_DIR", "JOB_FILE", "LEASE_FILE", "RETRY_DIR", "SUCCESS_FILE", "Fingerprint", "JobDescription",
           "JobOutput", "LeaseHeld", "Manifest", "OutputLease", "ResultListing", "Shard", "ShardRecord",
           "assign_files", "changed_settings", "config_digest", "decisive_settings", "is_job_file", "is_result_file",
           "job_file", "lease_file", "parse_shard", "result_file_name", "rows_per_shard", "shard_of", "success_file"]
