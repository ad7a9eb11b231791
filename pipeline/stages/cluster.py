"""Joining or starting the Ray cluster a command runs on (a job, a Ray Train fine-tuning run),
with a quiet console.

Ray and Ray Data log a lot at INFO to the driver's console; a job prints its own stage lines,
progress and summary instead (`--verbose` brings Ray's back). What is kept: Ray's warnings
and errors, except the few known to be harmless here, each named below with the reason.
"""

import logging
import os
import re
import socket
import sys
import threading
from typing import IO, List, Optional, Pattern

import ray

# Ray Data passes its actors their constructor arguments as object references, which makes
# Ray's C++ core log this at error level for every actor it starts
# (https://github.com/ray-project/ray/issues/53727); the job's actors are recreated with their
# arguments intact, so it is no error here.
_HARMLESS_STDERR = [re.compile(r"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the "
                               r"object store and max_restarts > 0")]
# Ray Data warns when it starts while actors hold every CPU; the job's own resource check
# (pipeline.checks.resources.check_resources) already guarantees a CPU for its tasks.
# And it warns that its progress bars are off, which the job does on purpose: it prints its own
# progress lines, under `ray job submit` too.
_HARMLESS_LOGS = [re.compile(r"The Ray cluster currently does not have any available CPUs"),
                  re.compile(r"^Progress bars disabled\.")]
_RAY_LOGGERS = ("ray", "ray.data")


class _DropHarmless(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.search(message) for p in _HARMLESS_LOGS)


_DROP_HARMLESS = _DropHarmless()


class StderrFilter:
    """Forwards this process's file descriptor 2 to the real stderr, line by line, without
    the lines matching `patterns` (C++ logging writes there directly, past Python's logging).

    Start it after Ray's local processes are up, so that they keep the real stderr."""

    def __init__(self, patterns: List[Pattern[str]]) -> None:
        self.patterns = patterns
        self._saved: Optional[int] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        sys.stderr.flush()
        read_end, write_end = os.pipe()
        self._saved = os.dup(2)
        os.dup2(write_end, 2)
        os.close(write_end)
        out = os.fdopen(os.dup(self._saved), "wb", buffering=0)
        self._thread = threading.Thread(target=self._forward, args=(os.fdopen(read_end, "rb"), out),
                                        name="stderr-filter", daemon=True)
        self._thread.start()

    def _forward(self, source: IO[bytes], out: IO[bytes]) -> None:
        with source, out:
            for line in source:
                text = line.decode(errors="replace")
                if not any(p.search(text) for p in self.patterns):
                    out.write(line)

    def stop(self) -> None:
        if self._saved is None:
            return
        sys.stderr.flush()
        os.dup2(self._saved, 2)  # closes the pipe's last write end: the forwarder drains it and ends
        os.close(self._saved)
        self._saved = None
        if self._thread is not None:
            self._thread.join(timeout=5)


def quiet_ray_logging(verbose: bool) -> None:
    """Ray's console logs at WARNING and above (all of them with `verbose`), without the
    harmless ones. Ray's records reach the console through the handlers of these loggers,
    from their child loggers too, so the filter sits on the handlers."""
    for name in _RAY_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO if verbose else logging.WARNING)
        for handler in logger.handlers:
            if _DROP_HARMLESS not in handler.filters:
                handler.addFilter(_DROP_HARMLESS)


def _free_local_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def connect(verbose: bool = False, local_cpus: Optional[int] = None) -> StderrFilter:
    """Join the cluster in RAY_ADDRESS (as under `ray job submit`), else start a new local
    one (never another cluster that happens to run on this machine); returns the started
    stderr filter, for the caller to stop when the work is done. `local_cpus`: the logical
    CPUs a new local cluster needs at least, beyond the machine's cores if need be (its tasks
    then share the cores), so that work which fits any cluster of that size also runs on a
    small machine."""
    quiet_ray_logging(verbose)
    if not ray.is_initialized():
        local = not os.environ.get("RAY_ADDRESS")
        cpus = max(os.cpu_count() or 1, local_cpus) if local and local_cpus else None
        # A new local cluster's dashboard on a free port: Ray's default (8265) may be another
        # cluster's on a shared machine. Every other port of such a cluster Ray already picks free.
        ray.init(address="local" if local else None, num_cpus=cpus,
                 logging_level=logging.INFO if verbose else logging.WARNING,
                 dashboard_port=_free_local_port() if local else None)
    quiet_ray_logging(verbose)  # ray.init configures its loggers anew
    stderr = StderrFilter([] if verbose else _HARMLESS_STDERR)
    stderr.start()
    return stderr
