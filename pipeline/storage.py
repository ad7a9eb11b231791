"""fsspec / pyarrow filesystems for the job's object store, and reachability checks.

Credentials are never taken from the config: s3fs/botocore read the standard AWS
environment variables, shared config files and instance roles.
"""

import os
from typing import IO, Any, Dict, Iterator, List, Optional, Tuple

import fsspec
import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from .config import StorageConfig


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
        raise FileNotFoundError(f"not found: {url}")
    files = sorted(f for f in files if f.endswith(".parquet") and not fs.isdir(f))
    if not files:
        raise FileNotFoundError(f"no .parquet files in {url}")
    return files


class ParquetInput:
    """The Parquet files of one input (file, directory or glob; local or fsspec URL), read
    record batch by record batch over the needed columns."""

    def __init__(self, url: str, storage: StorageConfig, what: str) -> None:
        self.url, self.what = url, what
        self.fs, _ = filesystem(url, storage)
        try:
            self.files = list_parquet_files(url, storage)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{what}: {e}") from None

    def first_schema(self) -> pa.Schema:
        with self.fs.open(self.files[0], "rb") as f:
            return pq.ParquetFile(f).schema_arrow

    def batches(self, columns: List[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Record batches of `columns`, file by file; a file missing one raises ValueError naming it."""
        for path in self.files:
            url = self.fs.unstrip_protocol(path)
            with self.fs.open(path, "rb") as f:
                parquet = pq.ParquetFile(f)
                missing = [c for c in columns if c not in parquet.schema_arrow.names]
                if missing:
                    raise ValueError(f"{self.what} {url}: missing column(s) {', '.join(map(repr, missing))} "
                                     f"(columns present: {', '.join(parquet.schema_arrow.names)})")
                yield from parquet.iter_batches(batch_size=batch_rows, columns=list(dict.fromkeys(columns)))

    def rows(self, id_column: str, columns: List[str], category_column: Optional[str],
             batch_rows: int) -> Iterator[Tuple[Any, ...]]:
        """Tuples (id, *columns, categories or None)."""
        wanted = [id_column, *columns] + ([category_column] if category_column is not None else [])
        for batch in self.batches(wanted, batch_rows):
            data = [batch.column(name).to_pylist() for name in wanted]
            if category_column is None:
                data.append([None] * batch.num_rows)
            yield from zip(*data, strict=True)
