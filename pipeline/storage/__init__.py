"""Where data lives: local paths and fsspec URLs (S3, GCS, HTTP, the Hugging Face Hub), each
opened once as a `Location`; the rules for comparing them (`urls`); Parquet reading shared by
every reader (`parquet`); and which store errors are worth another try (`transient`).

Credentials are never taken from a config: s3fs/botocore read the standard AWS environment
variables, shared config files and instance roles.
"""

from .errors import store_problem
from .location import Location, s3_options
from .parquet import ParquetInput
from .transient import TRANSIENT_ERRORS, is_transient
from .urls import (
    LABEL_STUDIO_LOCAL_FILES,
    basename,
    glob_root,
    is_local,
    join,
    local_path,
    plain_path,
    resolve_url_dots,
    store_root,
    uri_allowed,
    uri_problem,
    within,
)

__all__ = ["LABEL_STUDIO_LOCAL_FILES", "TRANSIENT_ERRORS", "Location", "ParquetInput", "basename", "glob_root",
           "is_local", "is_transient", "join", "local_path", "plain_path", "resolve_url_dots", "s3_options",
           "store_problem", "store_root", "uri_allowed", "uri_problem", "within"]
