"""Time, the device and the budget: progress lines, CUDA-event timing of repeated calls, and
measurements that give way to the budget instead of overrunning it."""

import dataclasses
import math
import time
from contextlib import nullcontext
from statistics import median
from typing import Any, Callable, ContextManager, List, Optional

import torch

from bench.gpu_check.settings import Settings


class Clock:
    """Elapsed time for the progress lines, and the budget that measurements ask before they start."""

    def __init__(self, budget_s: float) -> None:
        self.start, self.budget_s = time.perf_counter(), budget_s
        self.skipped: List[str] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def log(self, message: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {message}", flush=True)

    def allows(self, what: str, estimate_s: float) -> bool:
        """Whether `what`, expected to take `estimate_s`, ends within the budget; if not it is recorded as skipped."""
        left = self.budget_s - self.elapsed()
        if estimate_s <= left:
            return True
        self.skipped.append(f"{what}: needs about {estimate_s:.0f} s, {max(left, 0):.0f} s of the budget left")
        self.log(f"skipped (budget): {what}")
        return False


class Device:
    def __init__(self, device: torch.device) -> None:
        self.device, self.cuda = device, device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def autocast(self, bf16: bool) -> ContextManager[Any]:
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    def reset_peak_memory(self) -> None:
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_memory_gib(self) -> Optional[float]:
        return torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None

    def time_calls(self, fn: Callable[[], object], warmup: int, repeats: int, call_seconds: float) -> List[float]:
        """Seconds of each timed call after `warmup` untimed ones: CUDA events around the call
        on a GPU (the host's launch gaps count, the queue before it does not), perf_counter on
        the CPU. At most `repeats` calls, fewer (at least 3, or `repeats`) when a warm-up call
        took more than `call_seconds` / `repeats`."""
        warm = 0.0
        for _ in range(warmup):
            start = time.perf_counter()
            fn()
            self.sync()
            warm = time.perf_counter() - start
        calls = repeats if warm <= 0 else min(repeats, max(min(3, repeats), math.ceil(call_seconds / warm)))
        times = []
        for _ in range(calls):
            if self.cuda:
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                begin.record()
                fn()
                end.record()
                end.synchronize()
                times.append(begin.elapsed_time(end) / 1e3)
            else:
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
        return times


@dataclasses.dataclass
class Timing:
    """One measurement: its timed calls' seconds, or why there are none ("skipped (budget)", "OOM", "error: ...")."""

    times: List[float] = dataclasses.field(default_factory=list)
    status: str = "not run"
    peak_gib: Optional[float] = None
    extra_s: Optional[float] = None  # compile + first call, for compiled encoders

    @property
    def ok(self) -> bool:
        return bool(self.times)

    @property
    def seconds(self) -> float:
        return median(self.times)

    def span(self, scale: float = 1e3, digits: int = 2) -> str:
        if not self.ok:
            return self.status
        return (f"{self.seconds * scale:.{digits}f} ({min(self.times) * scale:.{digits}f}–"
                f"{max(self.times) * scale:.{digits}f})")


def measure(clock: Clock, dev: Device, label: str, estimate_s: float, fn: Callable[[], object], settings: Settings,
            setup: Optional[Callable[[], Optional[float]]] = None) -> Timing:
    """Time `fn` if the budget allows; an OOM or an error becomes the measurement's status
    instead of ending the run. `setup` (e.g. compiling) runs first and may return seconds to report."""
    if not clock.allows(label, estimate_s):
        return Timing(status="skipped (budget)")
    dev.reset_peak_memory()
    try:
        extra = setup() if setup is not None else None
        timing = Timing(dev.time_calls(fn, settings.warmup, settings.repeats, settings.call_seconds), "ok",
                        extra_s=extra)
    except torch.cuda.OutOfMemoryError:
        timing = Timing(status="OOM")
    except Exception as e:  # noqa: BLE001 - one failed measurement is reported, the others still run
        timing = Timing(status=f"error: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
    timing.peak_gib = dev.peak_memory_gib()
    clock.log(f"{label}: {timing.span()} ms" if timing.ok else f"{label}: {timing.status}")
    return timing


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
