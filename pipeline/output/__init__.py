"""A job's output location: what the job writes there (`layout`), its description and manifest
(`description`), the handle every command opens it through (`handle.JobOutput`), and the one
reader of its results for the exports and the review page (`results`)."""

from .description import JobDescription, Manifest, changed_settings, config_digest, decisive_settings
from .handle import JobOutput, ResultListing
from .layout import CHECKPOINT_DIR, JOB_FILE, SUCCESS_FILE, is_job_file, result_file_name

__all__ = ["CHECKPOINT_DIR", "JOB_FILE", "SUCCESS_FILE", "JobDescription", "JobOutput", "Manifest", "ResultListing",
           "changed_settings", "config_digest", "decisive_settings", "is_job_file", "result_file_name"]
