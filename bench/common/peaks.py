"""The device's matmul peak, the reference that MFU and GFLOP/s figures are read against."""

import time
from typing import Callable, List, Optional

import torch

TimeCalls = Callable[[Callable[[], object]], List[float]]


def matmul_peak(size: int, dtype: torch.dtype, device: Optional[torch.device] = None,
                time_calls: Optional[TimeCalls] = None, tries: int = 3) -> float:
    """FLOP/s (2 per multiply-add) of the best of a few `size` x `size` @ `size` x `size` matmuls
    on `device` (default: the CPU). `time_calls` times repeated calls of a function, warm-up included (a GPU's CUDA
    events); by default one warm-up call, then `tries` calls timed with perf_counter."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))

    def call() -> object:
        return torch.mm(a, b)

    if time_calls is not None:
        times = time_calls(call)
    else:
        call()
        times = []
        for _ in range(tries):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times)
