"""Where results may go: never the input's place, and into a non-empty directory only when
everything there is a job's own (`pipeline.output.layout`): nothing else is ever deleted."""

import os
from typing import List, Tuple

from ..output import CHECKPOINT_DIR, JOB_FILE, SUCCESS_FILE, is_job_file
from ..storage import Location, glob_root, store_problem, within


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


def some(names: List[str], limit: int = 3) -> str:
    """A few of `names`, for a message: "3 entries: a, b, c, ..." (or the one name)."""
    shown = ", ".join(sorted(names)[:limit])
    return f"{len(names)} entries: {shown}{', ...' if len(names) > limit else ''}" if len(names) > 1 else shown
