"""fsspec / pyarrow filesystems for the job's object store, and reachability checks.

Credentials are never taken from the config: s3fs/botocore read the standard AWS
environment variables, shared config files and instance roles.
"""

import os
from typing import IO, Any, Dict, List, Tuple

import fsspec
import pyarrow.fs
from fsspec.implementations.local import LocalFileSystem

from .config import JobConfig, StorageConfig


def storage_options(storage: StorageConfig) -> Dict[str, Any]:
    """fsspec options for s3:// URLs under these settings (ignored by other protocols)."""
    options: Dict[str, Any] = {}
    if storage.anonymous:
        options["anon"] = True
    client_kwargs = {}
    if storage.endpoint_url:
        client_kwargs["endpoint_url"] = storage.endpoint_url
        # Non-AWS S3 servers reject botocore's default CRC checksums on every request.
        options["config_kwargs"] = {
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
        }
    if storage.region:
        client_kwargs["region_name"] = storage.region
    if client_kwargs:
        options["client_kwargs"] = client_kwargs
    return options


def filesystem(url: str, storage: StorageConfig) -> Tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of `url` and the path within it."""
    protocol = fsspec.utils.get_protocol(url)
    options = storage_options(storage) if protocol in ("s3", "s3a") else {}
    return fsspec.core.url_to_fs(url, **options)


def open_for_write(url: str, storage: StorageConfig) -> IO[bytes]:
    """Open `url` (local or fsspec) for writing bytes, creating local parent directories."""
    fs, path = filesystem(url, storage)
    if isinstance(fs, LocalFileSystem):
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
    return fs.open(path, "wb")


def arrow_filesystem(url: str, storage: StorageConfig) -> Tuple[pyarrow.fs.FileSystem, str]:
    """A pyarrow filesystem for Ray Data's Parquet reader/writer, backed by fsspec."""
    fs, path = filesystem(url, storage)
    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)), path


def list_parquet_files(url: str, storage: StorageConfig) -> List[str]:
    """Parquet files of a file, directory (recursive) or glob, as paths within the filesystem."""
    fs, path = filesystem(url, storage)
    if any(ch in path for ch in "*?["):
        files = fs.glob(path)
    elif fs.isdir(path):
        files = fs.find(path)
    elif fs.exists(path):
        files = [path]
    else:
        raise FileNotFoundError(f"input.path not found: {url}")
    files = sorted(f for f in files if f.endswith(".parquet") and not fs.isdir(f))
    if not files:
        raise FileNotFoundError(f"input.path has no .parquet files: {url}")
    return files


def check_reachable(config: JobConfig) -> List[str]:
    """Problems reaching the input files and the checkpoint (empty when all is well)."""
    problems = []
    try:
        list_parquet_files(config.input.path, config.storage)
    except Exception as e:  # noqa: BLE001 - any failure to list is a reachability problem to report
        problems.append(f"input.path: {e}")
    checkpoint = config.model.checkpoint
    if "://" not in checkpoint:
        if not os.path.exists(checkpoint):
            problems.append(f"model.checkpoint: not found: {checkpoint}")
    else:
        try:
            fs, path = filesystem(checkpoint, config.storage)
            if not fs.exists(path):
                problems.append(f"model.checkpoint: not found: {checkpoint}")
        except Exception as e:  # noqa: BLE001
            problems.append(f"model.checkpoint: {checkpoint}: {e}")
    return problems
