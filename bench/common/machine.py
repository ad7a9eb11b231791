"""The machine a benchmark ran on, for its report: the CPU's name, and how much of the CPU
other processes and the hypervisor took during the run (Linux: /proc/stat)."""

import os
import platform
from typing import Tuple


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                        platform.processor())
    except OSError:
        return platform.processor()


def machine_at_end() -> str:
    """The CPU, its count and the load average now, for a report written when its bench ends."""
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{cpu_model()}, {os.cpu_count()} CPUs, load average {load} (1, 5, 15 min) at the end"


def memory_gib() -> float:
    """The machine's memory (Linux: /proc/meminfo's MemTotal)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    raise OSError("/proc/meminfo has no MemTotal")


def cpu_counters(children: bool = False) -> Tuple[float, float, float]:
    """(CPU seconds busy on the whole machine, stolen by the hypervisor, used by this process) so far;
    with `children`, this process's count includes the child processes it has waited for (a bench
    that measures in subprocesses of its own)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
    tick = os.sysconf("SC_CLK_TCK")
    own = os.times()
    waited = own.children_user + own.children_system if children else 0.0
    return (user + nice + system + irq + softirq) / tick, steal / tick, own.user + own.system + waited


def contention(start: Tuple[float, float, float], runtime: float, children: bool = False) -> str:
    """How much CPU other processes and the hypervisor took during the run, as a share of all cores
    (`start` from `cpu_counters(children)`, with the same `children`)."""
    busy, steal, own = (b - a for a, b in zip(start, cpu_counters(children), strict=True))
    capacity = runtime * (os.cpu_count() or 1)
    return (f"other processes used {busy - own:.0f} CPU-s ({(busy - own) / capacity:.0%} of the machine), "
            f"hypervisor steal {steal:.0f} CPU-s ({steal / capacity:.0%})")
