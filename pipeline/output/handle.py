"""`JobOutput`: the one handle on a job's output location (`output.path`, and the checkpoint
that goes with it), its filesystem opened once: what the job writes there (`layout`), its
description and manifest (`description`), which result files a reader reads, the checkpoint's
entries, and the `--retry-errors` pass's in-place replacement of rows."""

import json
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import JobConfig, StorageConfig
from ..storage import Location, basename, join
from .description import JobDescription, Manifest
from .layout import CHECKPOINT_DIR, JOB_FILE, LEASE_FILE, PENDING_SUFFIX, RESULT_FILE, RETRY_DIR, SUCCESS_FILE, is_job_file


@dataclass
class ResultListing:
    files: List[str]  # paths within the output's filesystem
    warning: Optional[str]  # why the listing may not be a finished job's whole output


class JobOutput:
    """A job's output at `url`. `checkpoint_url`: where its checkpoint is; by default what the
    job's description says (`output.checkpoint_path`), else `<url>/_checkpoint`."""

    def __init__(self, url: str, storage: Optional[StorageConfig] = None, checkpoint_url: Optional[str] = None) -> None:
        self.location = Location(url, storage)
        self._checkpoint_url = checkpoint_url

    @classmethod
    def of(cls, config: JobConfig) -> "JobOutput":
        """The output a job config names."""
        return cls(config.output.path, config.storage,
                   config.output.checkpoint_path or join(config.output.path, CHECKPOINT_DIR))

    @property
    def url(self) -> str:
        return self.location.url

    @property
    def checkpoint(self) -> Location:
        if self._checkpoint_url is None:
            description = self.read_description()
            configured = description.config.output.checkpoint_path if description is not None else None
            self._checkpoint_url = configured or join(self.url, CHECKPOINT_DIR)
        return Location(self._checkpoint_url, self.location.storage)

    @property
    def retry_staging(self) -> Location:
        """Where a --retry-errors pass writes its new rows before they replace the failed ones."""
        return self.location.join(RETRY_DIR)

    def url_of(self, path: str) -> str:
        return self.location.url_of(path)

    # --- the job's own files ----------------------------------------------------------------

    def job_files(self) -> List[str]:
        """Paths of the files and directories here that a run of the job wrote."""
        return [entry for entry in self.location.entries() if is_job_file(basename(entry))]

    def remove_job_files(self) -> None:
        """Remove what a run wrote here, but the lease (the run that removes them holds it)."""
        for path in self.job_files():
            if basename(path) != LEASE_FILE:
                self.location.at(path).remove()

    def _read_json(self, name: str) -> Optional[Tuple[Any, str]]:
        target = self.location.join(name)
        if not target.exists() or target.isdir():
            return None
        with target.open("r") as f:
            return json.load(f), target.url

    def _write_json(self, name: str, data: Dict[str, Any]) -> None:
        self.location.makedirs()
        with self.location.join(name).open("w") as f:
            json.dump(data, f, indent=2, sort_keys=True)

    def read_description(self) -> Optional[JobDescription]:
        """The description a job wrote here, or None when there is none (an output written by
        something else, or a single file); ValueError when it is not one this version reads."""
        found = self._read_json(JOB_FILE) if self.location.isdir() else None
        return None if found is None else JobDescription.from_json(*found)

    def write_description(self, description: JobDescription) -> None:
        self._write_json(JOB_FILE, description.to_json())

    def read_manifest(self) -> Optional[Manifest]:
        """The `_SUCCESS` manifest of a completed job here, or None."""
        found = self._read_json(SUCCESS_FILE)
        return None if found is None else Manifest.from_json(*found)

    def write_manifest(self, manifest: Manifest) -> None:
        self._write_json(SUCCESS_FILE, manifest.to_json())

    # --- results ----------------------------------------------------------------------------

    def result_files(self) -> ResultListing:
        """The result files a reader should read. A completed job's are those its manifest
        lists. An output without a manifest (a job still running, or one that died) gives its
        result files minus those of interrupted writes, with a warning; anything that is not a
        job's directory (a single file, a glob, files from elsewhere) is listed as it is."""
        if self.read_description() is None:
            return ResultListing(self.location.parquet_files(), None)
        path = self.location.path
        manifest = self.read_manifest()
        if manifest is not None:
            return ResultListing([join(path, name) for name in manifest.files], None)
        names = sorted(n for n in self.location.names() if RESULT_FILE.match(n))
        pending = self._pending_prefixes()
        done = [n for n in names if not any(n.startswith(p) for p in pending)]
        left_out = len(names) - len(done)
        return ResultListing([join(path, n) for n in done], (
            f"{self.url} has no {SUCCESS_FILE}: the job that wrote it has not finished (it may still be running, or "
            f"it died; `output.mode: resume` completes it); reading the {len(done)} result files written so far"
            + (f", leaving out {left_out} of interrupted writes" if left_out else "")))

    def read_tables(self, files: Sequence[str], columns: Optional[Sequence[str]] = None
                    ) -> Iterator[Tuple[str, pa.Table]]:
        """(path, table) of each result file, `columns` only (all when None); see Location.read_tables."""
        return self.location.read_tables(files, columns)

    def replace_rows(self, path: str, replacements: pa.Table, id_column: str) -> int:
        """Rewrite the result file at `path` with each row whose id is in `replacements`
        replaced by that row, in its place; returns how many were. The file is replaced whole
        and at once (`Location.replace`, by way of `_retry/`), so a reader or a crash sees
        either the old rows or the new ones."""
        target = self.location.at(path)
        with target.open("rb") as f:
            table = pq.read_table(f)
        position = pc.index_in(table.column(id_column), value_set=replacements.column(id_column))
        if position.null_count == len(position):
            return 0
        own = pa.array(np.arange(table.num_rows, dtype=np.int64))
        taken = pc.if_else(position.is_null(), own, pc.add(position.cast(pa.int64()), table.num_rows))
        combined = pa.concat_tables([table, replacements.select(table.column_names).cast(table.schema)])
        sink = pa.BufferOutputStream()
        pq.write_table(combined.take(taken), sink)
        target.replace(sink.getvalue().to_pybytes(), temporary=self.retry_staging.join(basename(path) + ".partial"))
        return len(position) - position.null_count

    # --- the checkpoint -----------------------------------------------------------------------

    def committed_checkpoint_entries(self) -> List[str]:
        """The checkpoint's committed entries (each lists the ids of one result file written)."""
        return [e for e in self.checkpoint.entries() if e.endswith(".parquet") and not e.endswith(PENDING_SUFFIX)]

    def checkpoint_entry_ids(self, path: str) -> pa.ChunkedArray:
        """The ids a committed checkpoint entry (`committed_checkpoint_entries`) lists."""
        with self.checkpoint.fs.open(path, "rb") as f:
            return pq.read_table(f).column(0)

    def _pending_prefixes(self) -> List[str]:
        """The result-file names (without extension) whose writes the checkpoint holds as pending."""
        return [name[: -len(PENDING_SUFFIX)] for name in self.checkpoint.names() if name.endswith(PENDING_SUFFIX)]
