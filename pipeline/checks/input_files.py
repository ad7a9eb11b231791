"""The input's Parquet files and what their footers say (row counts, schemas, the bytes of the
columns read), read in parallel before any work starts; files that are no readable Parquet
are refused, or left out and listed under `input.on_bad_file: skip`."""

import concurrent.futures
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.parquet as pq

from ..config import ConfigError
from ..ids import InputIdKeys
from ..storage import Location, store_problem

_FOOTER_THREADS = 32
_FOOTER_TAIL_BYTES = 64 << 10  # a file's last bytes, fetched in one request: its footer, most often
_SAMPLE_ROWS = 1000


@dataclass(frozen=True)
class InputFile:
    """One input Parquet file, from its footer."""

    path: str  # within the input's filesystem
    url: str  # for messages: the local path, or the URL with its protocol
    num_rows: int
    read_bytes: int  # uncompressed bytes of the columns the job reads
    schema: pa.Schema
    version: str  # as the listing had it: size and ETag or modification time (`Location.parquet_file_versions`)


@dataclass(frozen=True)
class SkippedFile:
    """An input file left out under `input.on_bad_file: skip`, and why."""

    url: str
    reason: str


@dataclass
class InputScan:
    location: Location
    files: List[InputFile]
    skipped: List[SkippedFile] = field(default_factory=list)

    @property
    def num_rows(self) -> int:
        return sum(f.num_rows for f in self.files)

    @property
    def read_bytes(self) -> int:
        return sum(f.read_bytes for f in self.files)

    def leaving_out(self, reasons: Dict[str, str]) -> "InputScan":
        """This scan with the files whose URLs `reasons` names listed as skipped, for those reasons."""
        left = [SkippedFile(f.url, reasons[f.url]) for f in self.files if f.url in reasons]
        return InputScan(self.location, [f for f in self.files if f.url not in reasons], self.skipped + left)

    def first_rows(self, *columns: str) -> Optional[Tuple[InputFile, List[List[Any]]]]:
        """The first file with rows, and per column the values in its first rows (the sample
        the checks of `samples` look at); None when no file has rows."""
        first = next((f for f in self.files if f.num_rows), None)
        if first is None:
            return None
        with self.location.fs.open(first.path, "rb") as f:
            batch = next(pq.ParquetFile(f).iter_batches(batch_size=_SAMPLE_ROWS, columns=list(columns)), None)
        if batch is None:
            return first, [[] for _ in columns]
        return first, [batch.column(name).to_pylist() for name in columns]


def scan_input(location: Location, key: str, columns: Sequence[str], skip_bad: bool = False) -> InputScan:
    """The input's files with their footers, read in parallel; ConfigError (under `key`)
    when nothing is there or a file is not readable Parquet (with `skip_bad`, such files are
    listed in the scan's `skipped` instead)."""
    try:
        versions = location.parquet_file_versions()
    except FileNotFoundError as e:
        raise ConfigError([f"{key}: {e}"]) from None
    except Exception as e:  # noqa: BLE001 - permissions, endpoints, credentials: report what the store said
        raise ConfigError([f"{key}: cannot list {location.url}: {store_problem(e, location.url)}"]) from None
    fs, paths = location.fs, list(versions)
    wanted = set(columns)

    def described(path: str, parquet: pq.ParquetFile) -> InputFile:
        metadata = parquet.metadata
        size = sum(group.column(c).total_uncompressed_size
                   for group in (metadata.row_group(g) for g in range(metadata.num_row_groups))
                   for c in range(group.num_columns)
                   if group.column(c).path_in_schema.split(".")[0] in wanted)
        return InputFile(path, location.url_of(path), metadata.num_rows, size, parquet.schema_arrow, versions[path])

    def footer(path: str) -> Tuple[Optional[InputFile], Optional[SkippedFile]]:
        try:
            with fs.open(path, "rb") as f:
                return described(path, pq.ParquetFile(f)), None
        except Exception as e:  # noqa: BLE001 - a corrupt, truncated or empty file
            return None, SkippedFile(location.url_of(path), f"not a readable Parquet file: {type(e).__name__}: {e}")

    results: List[Tuple[Optional[InputFile], Optional[SkippedFile]]] = [(None, None)] * len(paths)
    if not location.is_local:
        # One request per file for its last bytes, all in flight together on fsspec's event
        # loop (threads would queue on that one loop); a footer larger than that, or a file
        # that fails here, is read again below, alone.
        tails = fs.cat_ranges(paths, [-_FOOTER_TAIL_BYTES] * len(paths), [None] * len(paths), on_error="return")
        for i, (path, tail) in enumerate(zip(paths, tails, strict=True)):
            if isinstance(tail, bytes) and tail[-4:] == b"PAR1" and int.from_bytes(tail[-8:-4], "little") + 8 <= len(tail):
                try:
                    results[i] = described(path, pq.ParquetFile(pa.BufferReader(tail))), None
                except Exception:  # noqa: BLE001 - read whole below, where the error is reported
                    pass
    again = [i for i, (found, _) in enumerate(results) if found is None]
    if again:
        with concurrent.futures.ThreadPoolExecutor(min(_FOOTER_THREADS, len(again))) as pool:
            for i, result in zip(again, pool.map(footer, [paths[i] for i in again]), strict=True):
                results[i] = result
    skipped = [bad for _, bad in results if bad is not None]
    if skipped and not skip_bad:
        raise ConfigError([f"{key}: {bad.url} is {bad.reason} (input.on_bad_file: skip leaves such files out)"
                           for bad in skipped])
    return InputScan(location, [f for f, _ in results if f is not None], skipped)


def read_pages(scan: InputScan, key: str, id_column: str, sample_columns: Sequence[str], skip_bad: bool
               ) -> Tuple[InputScan, InputIdKeys]:
    """Pages beyond the footers, before any work: each file's whole id column (the job tells
    rows apart by id) and its first row group of `sample_columns` (the other columns the job
    reads, but the images: cheap), read in parallel. Returns the scan (without the files that
    failed, listed as skipped, under `skip_bad`) and the keys of the ids of the files kept (8
    bytes an id: each file's ids are let go once keyed); ConfigError naming each file that
    failed otherwise."""
    sample = [c for c in dict.fromkeys(sample_columns) if c != id_column]

    def read(entry: InputFile) -> Tuple[Optional[InputIdKeys], Optional[str]]:
        try:
            with scan.location.fs.open(entry.path, "rb") as f:
                parquet = pq.ParquetFile(f)
                keys = InputIdKeys.of([parquet.read(columns=[id_column]).column(0)])
                if sample and parquet.metadata.num_row_groups:
                    parquet.read_row_group(0, columns=sample)
            return keys, None
        except Exception as e:  # noqa: BLE001 - corrupt pages behind an intact footer
            return None, f"not a readable Parquet file (its pages): {type(e).__name__}: {e}"[:500]

    with concurrent.futures.ThreadPoolExecutor(min(_FOOTER_THREADS, max(1, len(scan.files)))) as pool:
        results = list(pool.map(read, scan.files))
    bad = [SkippedFile(entry.url, problem) for entry, (_, problem) in zip(scan.files, results, strict=True)
           if problem is not None]
    if bad and not skip_bad:
        raise ConfigError([f"{key}: {b.url} is {b.reason} (input.on_bad_file: skip leaves such files out)" for b in bad])
    kept = [entry for entry, (_, problem) in zip(scan.files, results, strict=True) if problem is None]
    return InputScan(scan.location, kept, scan.skipped + bad), InputIdKeys.joined([k for k, _ in results if k is not None])


def read_ids(scan: InputScan, id_column: str) -> pa.ChunkedArray:
    """Every id of the scan's files (read in parallel, `Location.read_tables`), for an exact
    look at ids whose keys repeat."""
    chunks = [chunk for _, table in scan.location.read_tables([f.path for f in scan.files], [id_column])
              for chunk in table.column(0).chunks]
    return pa.chunked_array(chunks, type=chunks[0].type if chunks else pa.string())
