"""Rows that kill the worker processing them. Ray retries a task whose worker died, and
restarts an actor and retries its call, without end; a row that crashes its worker every
time (a native crash in a decoder, an out-of-memory kill) would be retried for ever.

The `CrashLedger`, one small actor per job, holds the ids each stage has begun and not yet
ended. A row begun again while still in flight was in a batch whose worker died: its count
goes up. A batch holding such a row runs one row at a time (so the next death is the row's
own), and a row that reached `compute.max_worker_crashes` is written with a "stage" error
instead of run again. A lost node counts as a death too; the limit is small but not 1.
"""

import collections
from dataclasses import dataclass
from typing import Any, Dict, List, Set, cast

import ray


class CrashLedger:
    """Per stage: the ids in flight, and how often each id's worker died (a Ray actor)."""

    def __init__(self) -> None:
        self.in_flight: Dict[str, Set[Any]] = collections.defaultdict(set)
        self.deaths: Dict[str, Dict[Any, int]] = collections.defaultdict(collections.Counter)

    def begin(self, stage: str, ids: List[Any]) -> List[int]:
        """Mark `ids` in flight; returns how often each one's worker has died."""
        flight, deaths = self.in_flight[stage], self.deaths[stage]
        for row_id in ids:
            if row_id in flight:
                deaths[row_id] += 1
            flight.add(row_id)
        return [deaths.get(row_id, 0) for row_id in ids]

    def end(self, stage: str, ids: List[Any]) -> None:
        self.in_flight[stage].difference_update(ids)


@dataclass(frozen=True)
class CrashGuard:
    """What a stage's UDF needs to count its workers' deaths per row."""

    ledger: "ray.actor.ActorHandle"
    id_column: str
    max_crashes: int

    @classmethod
    def for_job(cls, id_column: str, max_crashes: int) -> "CrashGuard":
        # Ray's stubs type .remote() of an actor class as "handle or class"; it is the handle.
        ledger = cast("ray.actor.ActorHandle", ray.remote(num_cpus=0, max_restarts=-1)(CrashLedger).remote())
        return cls(ledger, id_column, max_crashes)

    def begin(self, stage: str, ids: List[Any]) -> List[int]:
        """Deaths per id (0 for a null id, which is not tracked); all 0 when the ledger cannot
        be reached: losing the count must not fail rows."""
        tracked = [row_id for row_id in ids if row_id is not None]
        try:
            counts = dict(zip(tracked, ray.get(self.ledger.begin.remote(stage, tracked), timeout=60), strict=True))
        except (ray.exceptions.RayError, TimeoutError):
            return [0] * len(ids)
        return [counts.get(row_id, 0) if row_id is not None else 0 for row_id in ids]

    def end(self, stage: str, ids: List[Any]) -> None:
        self.ledger.end.remote(stage, [row_id for row_id in ids if row_id is not None])

    def close(self) -> None:
        ray.kill(self.ledger)
