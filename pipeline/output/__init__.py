"""A job's output location: what the job writes there (`layout`), its description and manifest
(`description`), the handle every command opens it through (`handle.JobOutput`), the lease
that keeps it to one writer (`lease`), and the one reader of its results for the exports and
the review page (`results`)."""

from .description import Fingerprint, JobDescription, Manifest, changed_settings, config_digest, decisive_settings
from .handle import JobOutput, ResultListing
from .layout import CHECKPOINT_DIR, JOB_FILE, LEASE_FILE, SUCCESS_FILE, is_job_file, result_file_name
from .lease import LeaseHeld, OutputLease

__all__ = ["CHECKPOINT_DIR", "JOB_FILE", "LEASE_FILE", "SUCCESS_FILE", "Fingerprint", "JobDescription", "JobOutput", "LeaseHeld",
           "Manifest", "OutputLease", "ResultListing",
           "changed_settings", "config_digest", "decisive_settings", "is_job_file", "result_file_name"]
