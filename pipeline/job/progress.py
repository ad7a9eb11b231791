"""Progress lines while a job runs: the stages count the rows each batch finishes on a counter
actor (`pipeline.stages.contract`), and a driver thread reads it every interval."""

import collections
import threading
import time
from typing import Any, Callable, Dict, Mapping

import ray

from ..text import duration

Log = Callable[[str], None]


class RowCounter:
    """Rows each stage has finished, by stage name ("decode", "model", "encode")."""

    def __init__(self) -> None:
        self.rows: Dict[str, int] = collections.Counter()

    def add(self, stage: str, rows: int) -> None:
        self.rows[stage] += rows

    def value(self) -> Dict[str, int]:
        return dict(self.rows)


class ProgressReporter:
    """A driver thread that logs the rows each stage has done of `total`, images/s and the time
    left, every `interval` seconds, whether or not stdout is a terminal."""

    def __init__(self, counter: "ray.actor.ActorHandle", total: int, interval: float, log: Log) -> None:
        self.counter, self.total, self.interval, self.log = counter, total, interval, log
        self.start = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def __enter__(self) -> "ProgressReporter":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        # One question to the counter at a time, waited on across intervals: a reply dropped at
        # each timeout and asked again would never arrive while the counter starts on a busy
        # node, and the job could end without one progress line.
        reply: Any = None
        while not self._stop.wait(self.interval):
            if reply is None:
                reply = self.counter.value.remote()
            try:
                done = ray.get(reply, timeout=self.interval)
            except ray.exceptions.GetTimeoutError:
                continue
            except ray.exceptions.RayError:
                reply = None  # a restarting counter; ask again next interval
                continue
            reply = None
            self.log(progress_line(done, self.total, time.perf_counter() - self.start))


def progress_line(done: Mapping[str, int], total: int, seconds: float) -> str:
    """Rows decoded, through the model (the rate and time left follow it) and encoded for
    writing: Ray Data may decode and run the model well ahead of the writes."""
    decoded, modelled, encoded = (done.get(stage, 0) for stage in ("decode", "model", "encode"))
    rate = modelled / seconds if seconds > 0 else 0.0
    share = f" ({modelled / total:.0%})" if total else ""
    eta = f", about {duration((total - modelled) / rate)} left" if rate > 0 and total > modelled else ""
    return (f"progress: {decoded} / {total} rows decoded, {modelled} through the model{share}, {encoded} encoded for "
            f"writing, after {duration(seconds)}, {rate:.2f} images/s{eta}")
