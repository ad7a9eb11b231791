"""Sampling while a bench runs: a thread that calls `sample()` every `interval` seconds between
entering and leaving a `with` block, and once more on leaving (so a short run still has one
sample)."""

import threading
from typing import TypeVar

SamplerType = TypeVar("SamplerType", bound="PeriodicSampler")


class PeriodicSampler:
    interval = 1.0

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self: SamplerType) -> SamplerType:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
