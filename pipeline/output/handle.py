"""`JobOutput`: the one handle on a job's output location (`output.path`, and the checkpoint
that goes with it), its filesystem opened once: what the job writes there (`layout`), its
description and manifest (`description`), which result files a reader reads (every shard's, for
a job run in shards), the checkpoint's entries, and the `--retry-errors` pass's in-place
replacement of rows."""

import json
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import JobConfig, StorageConfig
from ..storage import Location, basename, join
from .description import JobDescription, Manifest
from .layout import (
    CHECKPOINT_DIR,
    JOB_FILE,
    PENDING_SUFFIX,
    RETRY_DIR,
    is_job_file,
    is_result_file,
    job_file,
    lease_file,
    shard_of,
    success_file,
)
from .shards import Shard


@dataclass
class ResultListing:
    files: List[str]  # paths within the output's filesystem
    warning: Optional[str]  # why the listing may not be a finished job's whole output


@dataclass
class _OwnListing:
    """One job's (or one shard's) result files, and what its state says about them."""

    files: List[str]
    left_out: int  # result files of interrupted writes, not listed
    started: bool  # its description is there
    complete: bool  # its manifest is there


class JobOutput:
    """A job's output at `url`. `checkpoint_url`: where its checkpoint is; by default what the
    job's description says (`output.checkpoint_path`), else `<url>/_checkpoint`. With `shard`,
    the handle is that shard's (`--shard I/N`): its own description, manifest, checkpoint
    (`<checkpoint>/<shard label>`), result files and lease, never another shard's. Without it,
    on an output written in shards, the readers' methods (`read_description`, `result_files`)
    read the whole job: every shard's results."""

    def __init__(self, url: str, storage: Optional[StorageConfig] = None, checkpoint_url: Optional[str] = None,
                 shard: Optional[Shard] = None) -> None:
        self.location = Location(url, storage)
        self._checkpoint_url = checkpoint_url
        self.shard = shard

    @classmethod
    def of(cls, config: JobConfig, shard: Optional[Shard] = None) -> "JobOutput":
        """The output a job config names (the part of it that `shard` writes, when given)."""
        return cls(config.output.path, config.storage,
                   _shard_checkpoint(config.output.checkpoint_path or join(config.output.path, CHECKPOINT_DIR), shard),
                   shard)

    def for_shard(self, shard: Shard) -> "JobOutput":
        """The handle of one shard of this output."""
        return JobOutput(self.url, self.location.storage, shard=shard)

    @property
    def url(self) -> str:
        return self.location.url

    @property
    def checkpoint(self) -> Location:
        if self._checkpoint_url is None:
            description = self.read_description()
            configured = description.config.output.checkpoint_path if description is not None else None
            self._checkpoint_url = _shard_checkpoint(configured or join(self.url, CHECKPOINT_DIR), self.shard)
        return Location(self._checkpoint_url, self.location.storage)

    @property
    def retry_staging(self) -> Location:
        """Where a --retry-errors pass writes its new rows before they replace the failed ones."""
        staging = self.location.join(RETRY_DIR)
        return staging if self.shard is None else staging.join(self.shard.label)

    @property
    def lease_name(self) -> str:
        """The name of the lease file of a run writing this job (or shard)."""
        return lease_file(self.shard)

    def url_of(self, path: str) -> str:
        return self.location.url_of(path)

    # --- the job's own files ----------------------------------------------------------------

    def job_files(self) -> List[str]:
        """Paths of the files and directories here that a run of the job (of this shard, with a
        shard; of the unsharded job, without) wrote."""
        if self.shard is None:
            return [entry for entry in self.location.entries()
                    if is_job_file(basename(entry)) and shard_of(basename(entry)) is None]
        own = [entry for entry in self.location.entries() if shard_of(basename(entry)) == self.shard]
        for directory in (CHECKPOINT_DIR, RETRY_DIR):
            place = self.location.join(directory).join(self.shard.label)
            if place.exists():
                own.append(place.path)
        return own

    def remove_job_files(self) -> None:
        """Remove what a run wrote here (a shard's handle: what that shard's runs wrote), but
        the lease (the run that removes them holds it)."""
        for path in self.job_files():
            if basename(path) != self.lease_name:
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

    @property
    def description_name(self) -> str:
        """The name of the description `read_description` reads (for messages)."""
        if self.shard is None and not self.location.join(JOB_FILE).exists():
            written = sorted(self.written_shards())
            if written:
                return job_file(written[0])
        return job_file(self.shard)

    def read_description(self) -> Optional[JobDescription]:
        """The description a job wrote here, or None when there is none (an output written by
        something else, or a single file); ValueError when it is not one this version reads.
        A shard's handle reads its shard's; the whole output's handle on an output written in
        shards reads the lowest shard's (the shards share their config)."""
        if not self.location.isdir():
            return None
        found = self._read_json(self.description_name)
        return None if found is None else JobDescription.from_json(*found)

    def write_description(self, description: JobDescription) -> None:
        self._write_json(job_file(self.shard), description.to_json())

    def read_manifest(self) -> Optional[Manifest]:
        """The `_SUCCESS` manifest of a completed job (or shard) here, or None."""
        found = self._read_json(success_file(self.shard))
        return None if found is None else Manifest.from_json(*found)

    def write_manifest(self, manifest: Manifest) -> None:
        self._write_json(success_file(self.shard), manifest.to_json())

    # --- shards -------------------------------------------------------------------------------

    def written_shards(self) -> Set[Shard]:
        """The shards that wrote files here (none for an unsharded job's output)."""
        found = (shard_of(name) for name in self.location.names()) if self.location.isdir() else iter(())
        return {shard for shard in found if shard is not None}

    def shard_count(self) -> Optional[int]:
        """N of an output written in shards (the largest, where files of several N are there:
        which runs refuse), or None for an unsharded one."""
        counts = {shard.count for shard in self.written_shards()}
        return max(counts) if counts else None

    # --- results ----------------------------------------------------------------------------

    def result_files(self) -> ResultListing:
        """The result files a reader should read. A completed job's are those its manifest
        lists. An output without a manifest (a job still running, or one that died) gives its
        result files minus those of interrupted writes, with a warning; anything that is not a
        job's directory (a single file, a glob, files from elsewhere) is listed as it is. An
        output written in shards gives every shard's files (each as above), with a warning
        while a shard is not complete."""
        count = self.shard_count() if self.shard is None else None
        if count is not None:
            return self._sharded_result_files(count)
        if self.shard is None and self.read_description() is None:
            return ResultListing(self.location.parquet_files(), None)
        own = self._own_listing()
        if own.complete:
            return ResultListing(own.files, None)
        return ResultListing(own.files, (
            f"{self.url} has no {success_file(self.shard)}: the job that wrote it has not finished (it may still be "
            f"running, or it died; `output.mode: resume` completes it); reading the {len(own.files)} result files "
            "written so far" + (f", leaving out {own.left_out} of interrupted writes" if own.left_out else "")))

    def _own_listing(self) -> _OwnListing:
        """This job's (or shard's) result files: those its manifest lists, else those written
        minus those of interrupted writes."""
        path = self.location.path
        manifest = self.read_manifest()
        if manifest is not None:
            return _OwnListing([join(path, name) for name in manifest.files], 0, True, True)
        names = sorted(n for n in self.location.names() if is_result_file(n, self.shard))
        pending = self._pending_prefixes() if names else []
        done = [n for n in names if not any(n.startswith(p) for p in pending)]
        started = self.location.join(job_file(self.shard)).exists()
        return _OwnListing([join(path, n) for n in done], len(names) - len(done), started, False)

    def _sharded_result_files(self, count: int) -> ResultListing:
        """Every shard's result files, and a warning naming the shards not complete."""
        files: List[str] = []
        left_out = 0
        unfinished = []
        for index in range(count):
            shard = Shard(index, count)
            own = self.for_shard(shard)._own_listing()
            files += own.files
            left_out += own.left_out
            if not own.complete:
                unfinished.append(f"shard {shard} {'running or stopped' if own.started else 'not started'}")
        if not unfinished:
            return ResultListing(files, None)
        return ResultListing(files, (
            f"{self.url} holds a job in {count} shards of which {len(unfinished)} are not complete "
            f"({', '.join(unfinished[:5])}{', ...' if len(unfinished) > 5 else ''}); reading the {len(files)} result "
            "files written so far" + (f", leaving out {left_out} of interrupted writes" if left_out else "")
            + f"; `python -m pipeline status {self.url}` says what is missing"))

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


def _shard_checkpoint(root: str, shard: Optional[Shard]) -> str:
    """A shard's checkpoint: a directory of its own in the job's checkpoint."""
    return root if shard is None else join(root, shard.label)
