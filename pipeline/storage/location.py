"""`Location`: one file or directory in a store, a local path or any fsspec URL, with its
filesystem opened once, and everything the package does there: list, read, write, replace
whole, remove, and hand Ray Data a pyarrow filesystem."""

import collections
import concurrent.futures
import os
import shutil
from typing import IO, Any, Dict, Iterator, List, Optional, Sequence, Tuple

import fsspec
import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from samhq_core.checkpoint_sources import version_stamp

from ..config import StorageConfig
from .urls import basename, join

# Parquet files read at once: a store's latency, not its bandwidth, bounds small reads.
_READ_THREADS = 32


def s3_options(storage: StorageConfig) -> Dict[str, Any]:
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


class Location:
    """A place in a store, named by `url`. Object stores are listed without fsspec's listings
    cache: a driver lists an output before a job and again after it, and what the cluster
    wrote in between must be seen. Local paths are removed through the os module: fsspec's
    local rm asks for the working directory, which under `ray job submit` may be gone."""

    def __init__(self, url: str, storage: Optional[StorageConfig] = None,
                 opened: Optional[Tuple[fsspec.AbstractFileSystem, str]] = None) -> None:
        """`opened`: the filesystem and path, when a location of the same store has them."""
        self.url = url
        self.storage = storage or StorageConfig()
        if opened is None:
            protocol = fsspec.utils.get_protocol(url)
            options = s3_options(self.storage) if protocol in ("s3", "s3a") else {}
            if protocol not in ("file", "local"):
                options["use_listings_cache"] = False
            opened = fsspec.core.url_to_fs(url, **options)
        self.fs: fsspec.AbstractFileSystem = opened[0]
        self.path: str = opened[1]

    def __repr__(self) -> str:
        return f"Location({self.url!r})"

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    @property
    def protocol(self) -> str:
        return self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]

    def join(self, name: str) -> "Location":
        """The entry `name` of this directory, in the same filesystem."""
        return Location(join(self.url, name), self.storage, (self.fs, join(self.path, name)))

    def at(self, path: str) -> "Location":
        """Another path of this location's filesystem (e.g. one it listed)."""
        return Location(self.url_of(path), self.storage, (self.fs, path))

    def url_of(self, path: str) -> str:
        """A path of this filesystem as a URL (a plain path when local), for messages."""
        return path if self.is_local else self.fs.unstrip_protocol(path)

    def exists(self) -> bool:
        return bool(self.fs.exists(self.path))

    def isdir(self) -> bool:
        return bool(self.fs.isdir(self.path))

    def entries(self) -> List[str]:
        """Paths of what this directory holds ([] when it does not exist)."""
        if not self.fs.exists(self.path):
            return []
        return list(self.fs.ls(self.path, detail=False))

    def names(self) -> List[str]:
        """Names of what this directory holds ([] when it does not exist)."""
        return [basename(entry) for entry in self.entries()]

    def open(self, mode: str = "rb", **kwargs: Any) -> IO[Any]:
        return self.fs.open(self.path, mode, **kwargs)

    def open_for_write(self) -> IO[bytes]:
        """For writing bytes; local parent directories are created."""
        if self.is_local:
            parent = os.path.dirname(self.path)
            if parent:
                os.makedirs(parent, exist_ok=True)
        return self.fs.open(self.path, "wb")

    def makedirs(self) -> None:
        self.fs.makedirs(self.path, exist_ok=True)

    def remove(self) -> None:
        """Delete this file or directory tree, if it exists."""
        if self.is_local:
            if os.path.isdir(self.path) and not os.path.islink(self.path):
                shutil.rmtree(self.path)
            elif os.path.lexists(self.path):
                os.remove(self.path)
        elif self.fs.exists(self.path):
            self.fs.rm(self.path, recursive=True)

    def replace(self, data: bytes, temporary: "Location") -> None:
        """Replace this file with `data` at once: locally by renaming the finished file
        `temporary` (on the same filesystem) over it; in an object store by one upload (an
        object appears whole when its upload completes)."""
        if self.is_local:
            os.makedirs(os.path.dirname(temporary.path), exist_ok=True)
            with open(temporary.path, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary.path, self.path)
        else:
            self.fs.pipe_file(self.path, data)

    def arrow(self) -> Tuple[pyarrow.fs.FileSystem, str]:
        """A pyarrow filesystem backed by this fsspec one, and the path: for Ray Data's Parquet
        reader and writer."""
        return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(self.fs)), self.path

    def parquet_files(self) -> List[str]:
        """Parquet files of this file, directory (recursive) or glob, as paths within the
        filesystem, sorted; FileNotFoundError when there are none."""
        return list(self.parquet_file_versions())

    def parquet_file_versions(self) -> Dict[str, str]:
        """The Parquet files of `parquet_files`, each with its version (`version_stamp`: size
        and ETag or modification time), in path order."""
        fs, path = self.fs, self.path
        # Listings with details: the entry types and versions come with them (an info per file
        # is a request per file on an object store).
        if any(ch in path for ch in "*?["):
            entries = fs.glob(path, detail=True)
        elif fs.isdir(path):
            entries = fs.find(path, detail=True)
        elif fs.exists(path):
            entries = {path: fs.info(path)}
        else:
            raise FileNotFoundError(f"not found: {self.url}")
        files = {name: version_stamp(info) for name, info in sorted(entries.items())
                 if name.endswith(".parquet") and info.get("type") != "directory"}
        if not files:
            raise FileNotFoundError(f"no .parquet files in {self.url}")
        return files

    def read_tables(self, paths: Sequence[str], columns: Optional[Sequence[str]] = None,
                    optional: Sequence[str] = ()) -> Iterator[Tuple[str, pa.Table]]:
        """(path, table of its `columns`, all when None, and of those of `optional` the file
        has) for each Parquet file of `paths` in this filesystem, in order; up to _READ_THREADS
        files are read at a time, and at most twice that many tables wait to be taken."""

        def read(path: str) -> pa.Table:
            with self.fs.open(path, "rb") as f:
                wanted = list(columns) if columns is not None else None
                if wanted is not None and optional:
                    names = pq.read_schema(f).names
                    wanted += [c for c in optional if c in names and c not in wanted]
                    f.seek(0)
                return pq.read_table(f, columns=wanted)

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
