"""fsspec / pyarrow filesystems for the job's object store, and reachability checks.

Credentials are never taken from the config: s3fs/botocore read the standard AWS
environment variables, shared config files and instance roles.
"""

import collections
import concurrent.futures
import os
import posixpath
import re
import shutil
from typing import IO, Any, Dict, Iterator, List, Optional, Sequence, Tuple

import fsspec
import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from .config import StorageConfig

# How the storage clients (botocore via s3fs, aiohttp, gcsfs, and the image reads' own timeout)
# word a failure that another try may not meet: the store unreachable, overloaded or slow.
# Ray Data's defaults only know pyarrow's native S3 wording ("AWS Error NETWORK_CONNECTION").
# Each is a regular expression, as Ray Data takes them.
TRANSIENT_ERRORS = (
    r"Could not connect to the endpoint URL",
    r"Connect timeout on endpoint URL",
    r"Read timeout on endpoint URL",
    r"Connection was closed before we received a valid response",
    r"ConnectionResetError|Connection reset by peer",
    r"ConnectionRefusedError|Connection refused",
    r"ServerDisconnectedError|ClientConnectorError|ClientOSError",
    r"ServiceUnavailable|SlowDown|RequestTimeout|InternalError",
    r"HTTP status 5\d\d|\b(5\d\d|429), message=",  # botocore's and aiohttp's wording of a status
    r"Service Unavailable|Bad Gateway|Gateway Time-?out|Internal Server Error|Too Many Requests",
    r"took more than input\.read_timeout_s",
)


def is_transient(error: str) -> bool:
    """Whether an error message is one of a store's transient failures (TRANSIENT_ERRORS)."""
    return any(re.search(pattern, error) for pattern in TRANSIENT_ERRORS)


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
    """The fsspec filesystem of `url` and the path within it. Object stores list without
    fsspec's listings cache: the driver lists an output before the job and again after it,
    and what the cluster wrote in between must be seen."""
    protocol = fsspec.utils.get_protocol(url)
    options = storage_options(storage) if protocol in ("s3", "s3a") else {}
    if protocol not in ("file", "local"):
        options["use_listings_cache"] = False
    return fsspec.core.url_to_fs(url, **options)


def open_for_write(url: str, storage: StorageConfig) -> IO[bytes]:
    """Open `url` (local or fsspec) for writing bytes, creating local parent directories."""
    fs, path = filesystem(url, storage)
    if isinstance(fs, LocalFileSystem):
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
    return fs.open(path, "wb")


def remove(url: str, storage: StorageConfig) -> None:
    """Delete a file or a directory tree. Local paths go through the os module: fsspec's
    local rm asks for the working directory, which under `ray job submit` may be gone."""
    fs, path = filesystem(url, storage)
    if isinstance(fs, LocalFileSystem):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
    elif fs.exists(path):
        fs.rm(path, recursive=True)


def replace_file(url: str, storage: StorageConfig, data: bytes, temporary: str) -> None:
    """Replace the file at `url` with `data` at once: locally by renaming the finished file
    `temporary` (a local path on the same filesystem) over it; in an object store by one
    upload (an object appears whole when its upload completes)."""
    fs, path = filesystem(url, storage)
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(temporary), exist_ok=True)
        with open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    else:
        fs.pipe_file(path, data)


def arrow_filesystem(url: str, storage: StorageConfig) -> Tuple[pyarrow.fs.FileSystem, str]:
    """A pyarrow filesystem for Ray Data's Parquet reader/writer, backed by fsspec."""
    fs, path = filesystem(url, storage)
    return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs)), path


def list_parquet_files(url: str, storage: StorageConfig) -> List[str]:
    """Parquet files of a file, directory (recursive) or glob, as paths within the filesystem."""
    fs, path = filesystem(url, storage)
    # Listings with details: the entry types come with them (an isdir per file is a request
    # per file on an object store).
    if any(ch in path for ch in "*?["):
        entries = fs.glob(path, detail=True)
    elif fs.isdir(path):
        entries = fs.find(path, detail=True)
    elif fs.exists(path):
        entries = {path: {"type": "file"}}
    else:
        raise FileNotFoundError(f"not found: {url}")
    files = sorted(name for name, info in entries.items() if name.endswith(".parquet") and info.get("type") != "directory")
    if not files:
        raise FileNotFoundError(f"no .parquet files in {url}")
    return files


# Parquet files read at once: a store's latency, not its bandwidth, bounds small reads.
_READ_THREADS = 32


def read_tables(fs: fsspec.AbstractFileSystem, paths: Sequence[str],
                columns: Optional[Sequence[str]] = None) -> Iterator[Tuple[str, pa.Table]]:
    """(path, table of its `columns`, all when None) for each Parquet file of `paths` in `fs`,
    in order; up to _READ_THREADS files are read at a time, and at most twice that many tables
    wait to be taken."""

    def read(path: str) -> pa.Table:
        with fs.open(path, "rb") as f:
            return pq.read_table(f, columns=list(columns) if columns is not None else None)

    with concurrent.futures.ThreadPoolExecutor(_READ_THREADS) as pool:
        waiting: "collections.deque[Tuple[str, concurrent.futures.Future[pa.Table]]]" = collections.deque()
        for path in paths:
            waiting.append((path, pool.submit(read, path)))
            if len(waiting) >= 2 * _READ_THREADS:
                done, future = waiting.popleft()
                yield done, future.result()
        while waiting:
            done, future = waiting.popleft()
            yield done, future.result()


class ParquetInput:
    """The Parquet files of one input (file, directory or glob; local or fsspec URL), read
    record batch by record batch over the needed columns."""

    def __init__(self, url: str, storage: StorageConfig, what: str, files: Optional[List[str]] = None) -> None:
        """`files`: the paths to read, when the caller has listed them (a job's output)."""
        self.url, self.what = url, what
        self.fs, _ = filesystem(url, storage)
        try:
            self.files = files if files is not None else list_parquet_files(url, storage)
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


# hf:// paths (huggingface_hub's HfFileSystem) begin with the repository: `org/name` for a
# model, `datasets/org/name` or `spaces/org/name`, each optionally `@revision`.
_HUB_REPO_TYPES = ("datasets", "spaces")


def store_root(url: str) -> str:
    """The top of a non-local URL, as `scheme://top/`: the bucket of an object store (the
    host of an HTTP URL), or the Hub repository of an hf:// path (with its @revision)."""
    scheme, rest = url.split("://", 1)
    parts = rest.split("/")
    depth = (3 if parts[0] in _HUB_REPO_TYPES else 2) if scheme == "hf" else 1
    return f"{scheme}://{'/'.join(parts[:depth])}/"


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def basename(path: str) -> str:
    """The last part of a path or URL (a listed directory's too, which fsspec may end in "/")."""
    return path.rstrip("/").rsplit("/", 1)[-1]


def local_path(url: str) -> str:
    """A local URL (`file://...` or a plain path) as a path, symlinks and '..' resolved."""
    return os.path.realpath(url[len("file://"):] if url.startswith("file://") else url)


def within(inner: str, outer: str) -> bool:
    """Whether path `inner` is `outer` or lies under it (at path-segment bounds)."""
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def uri_allowed(uri: str, prefixes: Sequence[str]) -> bool:
    """Whether an image URI lies under one of the prefixes. Local paths are compared after
    resolving symlinks and '..'; URLs after normalising their path, at path-segment bounds."""
    if is_local(uri):
        path = local_path(uri)
        return any(is_local(p) and within(path, local_path(p)) for p in prefixes)
    normal = _normal_url(uri)
    return any(_normal_url(p)[0] == normal[0] and within(normal[1], _normal_url(p)[1])
               for p in prefixes if not is_local(p))


def _normal_url(url: str) -> Tuple[str, str]:
    """(scheme://host, path) with the scheme and host lower-cased and '..' resolved."""
    scheme, rest = url.split("://", 1)
    host, _, path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}", posixpath.normpath("/" + path)
