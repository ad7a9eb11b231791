"""A job cut into shards: `--shard I/N` runs the I-th of N parts of the input (0-based) into the
same output as the other parts, each with files of its own (`layout`), so that N drivers (N
RayJobs) can share one job.

Which part a file belongs to (`assign_files`): the input's files, ordered by row count (most
first, the footers' counts; then by URL), go one by one to the shard with the fewest rows so
far (the lowest index on a tie). Every driver lists the same files with the same footers, so
each computes the same parts; shards differ by at most one file's rows. A driver whose input
listing differs from an earlier shard's is refused (`pipeline.job.shard_checks`), as the parts
would no longer agree."""

import heapq
import re
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

MAX_SHARDS = 9999  # four digits in the names
_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True, order=True)
class Shard:
    """The `index`-th (0-based) of `count` parts of a job."""

    index: int
    count: int

    @property
    def label(self) -> str:
        """"shard-0003-of-0004": the part of the shard's file names that says whose they are."""
        return f"shard-{self.index:04}-of-{self.count:04}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """`I/N` (0 <= I < N <= MAX_SHARDS) as a Shard; ValueError saying what is wrong."""
    match = _SPEC.match(text)
    if match is None:
        raise ValueError(f"{text!r}: expected I/N, this run's part I (0-based) of N, e.g. --shard 0/4")
    index, count = int(match.group(1)), int(match.group(2))
    if not 1 <= count <= MAX_SHARDS:
        raise ValueError(f"{text!r}: N must be between 1 and {MAX_SHARDS}, got {count}")
    if index >= count:
        raise ValueError(f"{text!r}: I must be below N (parts are numbered 0 to {count - 1})")
    return Shard(index, count)


def assign_files(files: Sequence[Tuple[str, int]], count: int) -> Dict[str, int]:
    """The shard index of each input file, given as (URL, rows): the most rows first, each to
    the shard with the fewest rows so far (ties: the lower index), so that the shards' rows
    stay within one file's rows of each other. The same files give the same parts everywhere."""
    loads: List[Tuple[int, int]] = [(0, index) for index in range(count)]
    assigned: Dict[str, int] = {}
    for url, rows in sorted(files, key=lambda entry: (-entry[1], entry[0])):
        load, index = heapq.heappop(loads)
        assigned[url] = index
        heapq.heappush(loads, (load + rows, index))
    return assigned


def rows_per_shard(files: Sequence[Tuple[str, int]], assigned: Dict[str, int], count: int) -> List[int]:
    """Each shard's rows under an assignment (`assign_files`)."""
    rows = [0] * count
    for url, n in files:
        rows[assigned[url]] += n
    return rows
