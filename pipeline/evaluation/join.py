"""The streaming join of predictions and ground truth by id (a grace hash join): each side is
spooled, record batch by record batch, into `num_partitions` temporary files by a stable hash
of its id, then joined partition by partition (one ground-truth partition in memory)."""

import os
import pickle
from typing import Any, Iterator, List, Tuple

from ..ids import stable_hash


class Spool:
    """`num_partitions` temporary pickle files of rows, by a stable hash of the row id."""

    def __init__(self, directory: str, name: str, num_partitions: int) -> None:
        self.paths = [os.path.join(directory, f"{name}-{i:04d}.pkl") for i in range(num_partitions)]
        self.files: List[Any] = []

    def __enter__(self) -> "Spool":
        self.files = [open(p, "wb") for p in self.paths]  # closed in __exit__
        return self

    def __exit__(self, *exc: Any) -> None:
        for f in self.files:
            f.close()
        self.files = []

    def write(self, row: Tuple[Any, ...]) -> None:
        pickle.dump(row, self.files[stable_hash(row[0]) % len(self.files)], pickle.HIGHEST_PROTOCOL)

    def read(self, part: int) -> Iterator[Tuple[Any, ...]]:
        with open(self.paths[part], "rb") as f:
            while True:
                try:
                    yield pickle.load(f)  # our own spool files, written above
                except EOFError:
                    return
