"""Rows that kill the worker processing them. Ray retries a task whose worker died, and
restarts an actor and retries its call, without end; a row that crashes its worker every
time (a native crash in a decoder, an out-of-memory kill) would be retried for ever.

Before a stage processes a batch, its worker leaves a marker file for the batch's rows in a
job's directory on the node's local disk, and removes it when done. A marker found at the
start of a batch is a batch whose worker died: the batch then runs one row at a time, each
with a marker of its own, so the next death is the row's own; a row that was in flight at
`compute.max_worker_crashes` deaths is written with a "stage" error instead of run again.
Local files, not a shared actor: a worker blocked on a remote call would make Ray start
more workers. A retry that lands on another node counts there afresh, so a row is tried at
most that many times per node; a lost node counts as a death where it is retried.
"""

import hashlib
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Any, List


def _marker_name(ids: List[Any]) -> str:
    return hashlib.sha256(repr(ids).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CrashGuard:
    """Counts, on each node, the worker deaths of a job's rows (see the module docstring)."""

    id_column: str
    max_crashes: int
    directory: str = field(default_factory=lambda: os.path.join(tempfile.gettempdir(),
                                                                f"samhq-worker-deaths-{uuid.uuid4().hex}"))

    def begin(self, stage: str, ids: List[Any]) -> int:
        """Mark the rows `ids` in flight; returns how often a worker died with exactly these
        rows in flight (on this node)."""
        path = os.path.join(self.directory, stage, _marker_name(ids))
        deaths = 0
        try:
            with open(path) as f:
                deaths = int(f.read() or 0) + 1
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        except ValueError:  # a marker cut short by the death itself
            deaths = 1
        with open(path, "w") as f:
            f.write(str(deaths))
        return deaths

    def end(self, stage: str, ids: List[Any]) -> None:
        try:
            os.remove(os.path.join(self.directory, stage, _marker_name(ids)))
        except FileNotFoundError:
            pass

    def close(self) -> None:
        """Remove this node's markers (other nodes keep only those of rows that crashed)."""
        shutil.rmtree(self.directory, ignore_errors=True)
