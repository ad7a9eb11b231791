"""A shard's run (`--shard I/N`, `pipeline.output.shards`) before work starts: its part of the
input, and whether it may share the output: no run without --shard and no shard of another N
there (nor, for a run without --shard, any shard), the same config and input as the shards
already there, and, in `output.mode: error`, none of its own files yet."""

from typing import List, Optional, Tuple

from ..checks.input_files import InputScan
from ..config import JobConfig
from ..output import (
    CHECKPOINT_DIR,
    RETRY_DIR,
    Fingerprint,
    JobOutput,
    Shard,
    ShardRecord,
    assign_files,
    changed_settings,
    is_job_file,
    rows_per_shard,
    shard_of,
)
from ..storage import basename
from ..text import some


def select_shard(scan: InputScan, shard: Shard) -> Tuple[InputScan, ShardRecord, List[str]]:
    """The shard's part of the input's scan (its files by `assign_files`, those whose footer
    could not be read included, with no rows), its record (without skipped files yet), and the
    problem when the input has fewer files than shards."""
    entries = [(f.url, f.num_rows) for f in scan.files] + [(s.url, 0) for s in scan.skipped]
    if len(entries) < shard.count:
        return scan, ShardRecord(shard, []), [
            f"--shard {shard}: the input has {len(entries)} files, fewer than the {shard.count} shards: a shard is a "
            f"set of whole files, so use at most {len(entries)} shards"]
    assigned = assign_files(entries, shard.count)
    mine = {url for url, index in assigned.items() if index == shard.index}
    part = InputScan(scan.location, [f for f in scan.files if f.url in mine], [s for s in scan.skipped if s.url in mine])
    record = ShardRecord(shard, sorted(mine), rows_per_shard=rows_per_shard(entries, assigned, shard.count))
    return part, record, []


def check_shard_layout(output: JobOutput, config: JobConfig, fingerprint: Optional[Fingerprint]) -> List[str]:
    """Why this run (`output.shard`, or a run without --shard) may not share the output with
    what is there: a run without --shard and shards, shards of different N, or a shard whose
    config or input differs from another shard's (one is read: each was checked against the
    others when it started)."""
    try:
        names = output.location.names() if output.location.isdir() else []
    except Exception:  # noqa: BLE001 - a store that cannot be listed is check_output's to report
        return []
    shards = sorted({shard for shard in (shard_of(name) for name in names) if shard is not None})
    unsharded = [name for name in names if is_job_file(name) and shard_of(name) is None
                 and name not in (CHECKPOINT_DIR, RETRY_DIR)]
    shard, url = output.shard, output.url
    if shard is None:
        if not shards:
            return []
        count = shards[0].count
        return [f"output.path: {url} holds a job run in {count} shards ({some([s.label for s in shards])}); a run "
                f"without --shard would mix with it: run each shard with --shard I/{count} (`python -m pipeline status "
                f"{url}` says which are done), or choose another output.path"]
    if unsharded:
        return [f"output.path: {url} holds the files of a run without --shard ({some(unsharded)}); a run of --shard "
                f"{shard} would mix with it: run without --shard, or choose another output.path"]
    others = sorted({s.count for s in shards} - {shard.count})
    if others:
        return [f"output.path: {url} holds a job run in {others[0]} shards ({some([s.label for s in shards])}); this "
                f"run is --shard {shard}, of {shard.count}: the shards of one job share N: run --shard I/{others[0]}, "
                "or choose another output.path"]
    return _differences_from_another_shard(output, [s for s in shards if s != shard], config, fingerprint)


def _differences_from_another_shard(output: JobOutput, others: List[Shard], config: JobConfig,
                                    fingerprint: Optional[Fingerprint]) -> List[str]:
    for other in others:
        try:
            description = output.for_shard(other).read_description()
        except ValueError as e:
            return [f"output.path: {e}"]
        if description is None:
            continue  # only its lease so far
        changed = changed_settings(description.config, config)
        if changed:
            return [f"output.path: the config differs from that of shard {other} at {output.url} "
                    f"({', '.join(changed)}): the shards of one job share their input, model and output settings"]
        if fingerprint is not None and description.fingerprint is not None:
            changes = fingerprint.changes_since(description.fingerprint)
            if changes:
                return [f"output.path: the input or weights changed since shard {other} started at {output.url} "
                        f"({'; '.join(changes)}): the shards would split different inputs; restore them as they "
                        "were, or start the whole job over in another output.path"]
        return []
    return []


def check_shard_output(output: JobOutput, continues: bool) -> List[str]:
    """A shard's own files already at the output, which only a run that continues it
    (output.mode resume or overwrite) may work on (the other shards' files are theirs)."""
    if output.shard is None or continues:
        return []
    own = [basename(path) for path in output.job_files() if basename(path) != output.lease_name]
    if not own:
        return []
    return [f"output.path: {output.url} already holds files of shard {output.shard} ({some(own)}); set output.mode: "
            "resume to continue that shard's run, output.mode: overwrite to replace its results (only its own files), "
            "or choose another path"]
