"""Where results may go: never the input's place, and into a non-empty directory only when
everything there is a job's own (`pipeline.output.layout`): nothing else is ever deleted."""

import os
from typing import List, Optional, Tuple

from ..output import CHECKPOINT_DIR, JOB_FILE, LEASE_FILE, SUCCESS_FILE, OutputLease, is_job_file
from ..storage import Location, glob_root, store_problem, within
from ..text import some


def place(location: Location) -> Tuple[str, str]:
    """(filesystem, normalised path) of a location, so that two spellings of one place compare equal."""
    if location.is_local:
        return "file", os.path.realpath(location.path)
    return location.protocol, location.path.rstrip("/")


def check_output(output: Location, input_location: Location, mode: str, output_key: str = "output.path",
                 input_key: str = "input.path") -> List[str]:
    """Problems with where results go: the input's place (equal, inside or around it), and a
    non-empty directory, which only modes `overwrite` and `resume` may write into and only
    when everything in it is the job's own."""
    out_place, in_place = place(output), place(input_location)
    in_root = (in_place[0], glob_root(in_place[1]))
    if out_place[0] == in_root[0] and (within(out_place[1], in_root[1]) or within(in_root[1], out_place[1])):
        relation = ("is" if out_place[1] == in_root[1] else
                    "is inside" if within(out_place[1], in_root[1]) else "contains")
        return [f"{output_key}: {output.url} {relation} {input_key} {input_location.url}; the job would read its own "
                "results or replace its input: write the results elsewhere"]
    missing = missing_bucket(output)
    if missing is not None:
        return [f"{output_key}: the bucket {missing} does not exist; create it first (the job never creates buckets), "
                "or check the name"]
    entries, problems = directory_entries(output, output_key, "the results go into a directory")
    if problems or not entries:
        return problems
    if mode not in ("overwrite", "resume"):
        return [f"{output_key}: {output.url} is not empty ({some(entries)}); set output.mode: resume to continue an "
                "interrupted run there, output.mode: overwrite to replace its results, or choose another path"]
    foreign = [e for e in entries if not is_job_file(e)]
    if foreign:
        return [f"{output_key}: {output.url} holds {len(foreign)} entries this pipeline did not write "
                f"({some(foreign)}); output.mode: {mode} only works on the pipeline's own files (masks-*.parquet, "
                f"{JOB_FILE}, {SUCCESS_FILE}, {CHECKPOINT_DIR}/): move them away or choose another path"]
    return []


def missing_bucket(location: Location) -> Optional[str]:
    """The bucket of an object-store location when it does not exist (its writes would create
    it, on a store that lets them), else None; a bucket that cannot be looked at is not
    reported here: listing it reports why."""
    if location.protocol not in ("s3", "s3a", "gs", "gcs"):
        return None
    bucket = location.path.split("/", 1)[0]
    try:
        return None if location.fs.exists(bucket) else f"{location.protocol}://{bucket}"
    except Exception:  # noqa: BLE001 - permissions, endpoints: the listing that follows names them
        return None


def check_lease(output: Location, take_over: bool, output_key: str = "output.path",
                file_name: str = LEASE_FILE) -> List[str]:
    """Another run holding the output's lease (`file_name`: a shard's own) (a run now would be
    refused), or a stopped run's lease that only a run continuing the output (`take_over`) may take."""
    lease = OutputLease(output, "check", take_over, file_name=file_name)
    try:
        found = lease.current()
    except ValueError as e:
        return [f"{output_key}: {e}"]
    except Exception:  # noqa: BLE001 - a store that cannot be read is check_output's to report
        return []
    refused = lease.refusal(found[0]) if found is not None else None
    return [] if refused is None else [f"{output_key}: {refused}"]


def directory_entries(location: Location, key: str, why_directory: str) -> Tuple[List[str], List[str]]:
    """The names in the directory a command writes to ([] when it does not exist yet), or the
    problem: it is a file, or it cannot be listed."""
    try:
        if not location.exists():
            return [], []
        if not location.isdir():
            return [], [f"{key}: {location.url} is a file; {why_directory}"]
        return location.names(), []
    except Exception as e:  # noqa: BLE001 - permissions, endpoints, network
        return [], [f"{key}: cannot list {location.url}: {store_problem(e, location.url)}"]
