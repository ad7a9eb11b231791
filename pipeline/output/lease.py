"""`OutputLease`: one writer per output (per shard of a job run in shards). A run takes the
lease (`_samhq_lease.json` in the output directory) before it writes anything, refreshes it
while it runs and removes it when it ends; a second run meanwhile is refused with a line
naming the holder.

The lease file is written with `pipeline.storage.conditional.ConditionalFile`: atomically on a
local filesystem and on S3-compatible stores with conditional writes, best effort elsewhere
(see there). A holder that stopped refreshing for `ttl_s` is dead (as is, at once, one on this
host whose process is gone); a run that continues the output (`output.mode: resume` or
`overwrite`, `--retry-errors`) takes its lease over, another run is refused. A holder's clock
decides its refresh times: clocks more than `ttl_s` apart would make a live holder look dead.
"""

import dataclasses
import datetime
import json
import os
import socket
import threading
import time
import uuid
from typing import Callable, Optional, Tuple

from ..storage import Location
from ..storage.conditional import ConditionalFile, ConditionFailed
from .layout import LEASE_FILE

LEASE_TTL_S = 60.0
LEASE_REFRESH_S = 10.0


@dataclasses.dataclass(frozen=True)
class LeaseHolder:
    """Who holds an output's lease."""

    run: str  # a random id of the run
    host: str
    pid: int
    started: float  # seconds since the epoch, on the holder's clock
    refreshed: float
    command: str

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "LeaseHolder":
        try:
            fields = json.loads(data)
            return cls(str(fields["run"]), str(fields["host"]), int(fields["pid"]), float(fields["started"]),
                       float(fields["refreshed"]), str(fields.get("command", "")))
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{where} is not a lease this version wrote: remove it if no run of this pipeline "
                             "is writing the output") from None

    def describe(self, now: float) -> str:
        started = datetime.datetime.fromtimestamp(self.started).isoformat(timespec="seconds")
        return (f"`{self.command}` on host {self.host}, pid {self.pid}, started {started}, last refreshed "
                f"{max(0.0, now - self.refreshed):.0f} s ago")

    def dead(self, now: float, ttl_s: float) -> bool:
        """Whether the holder has stopped: no refresh for `ttl_s`, or its process on this host is gone."""
        if now - self.refreshed > ttl_s:
            return True
        if self.host == socket.gethostname():
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:  # another user's live process
                return False
        return False


class LeaseHeld(RuntimeError):
    """Another run holds the output's lease."""


class OutputLease:
    """The lease on the output directory `output`: `with OutputLease(...) as lease:` holds it
    for the block (a background thread refreshes it) and removes it at the end.

    `take_over`: whether a dead holder's lease may be taken (a run that continues the output).
    `on_lost`: called (from the refresh thread) if another run took the lease meanwhile, so
    that the run stops writing; `lost` then says why. `file_name`: the lease's file in `output`;
    each shard of a job has its own (`layout.lease_file`), so that its shards run at once while
    two runs of one shard cannot.
    """

    def __init__(self, output: Location, command: str, take_over: bool, ttl_s: float = LEASE_TTL_S,
                 refresh_s: float = LEASE_REFRESH_S, on_lost: Optional[Callable[[str], None]] = None,
                 file_name: str = LEASE_FILE) -> None:
        self.file = ConditionalFile(output.join(file_name))
        self.command, self.take_over, self.ttl_s, self.refresh_s = command, take_over, ttl_s, refresh_s
        self.on_lost = on_lost
        self.lost: Optional[str] = None
        self.taken_over: Optional[LeaseHolder] = None  # the dead holder this run replaced
        now = time.time()
        self.holder = LeaseHolder(uuid.uuid4().hex, socket.gethostname(), os.getpid(), now, now, command)
        self._tag: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def kind(self) -> str:
        """How the lease is kept on this store (`pipeline.storage.conditional`)."""
        return self.file.kind

    def current(self) -> Optional[Tuple[LeaseHolder, str]]:
        """The holder of the lease now and its tag, or None."""
        found = self.file.read()
        return None if found is None else (LeaseHolder.from_json(found[0], self.file.location.url), found[1])

    def refusal(self, holder: LeaseHolder) -> Optional[str]:
        """Why this run may not take the lease `holder` has, or None when it may."""
        now = time.time()
        if not holder.dead(now, self.ttl_s):
            return (f"{self.file.location.url}: another run is writing this output ({holder.describe(now)}); wait "
                    "for it to end or stop it, or choose another output.path")
        if not self.take_over:
            return (f"{self.file.location.url}: the lease of a run that stopped is still there "
                    f"({holder.describe(now)}); output.mode: resume continues that run's output")
        return None

    def acquire(self) -> None:
        """Take the lease; LeaseHeld naming the holder when another run has it."""
        for _ in range(5):  # each round loses only to a writer that changed the file meanwhile
            found = self.current()
            try:
                if found is None:
                    self._tag = self.file.create(self.holder.to_json())
                    return
                holder, tag = found
                refused = self.refusal(holder)
                if refused is not None:
                    raise LeaseHeld(refused)
                self._tag = self.file.replace(self.holder.to_json(), tag)
                self.taken_over = holder
                return
            except (FileExistsError, ConditionFailed):
                continue
        raise LeaseHeld(f"{self.file.location.url}: the lease kept changing hands; another run is starting on this "
                        "output")

    def refresh(self) -> None:
        """Write a new refresh time, if the lease is still this run's; else it is lost."""
        assert self._tag is not None
        self.holder = dataclasses.replace(self.holder, refreshed=time.time())
        try:
            self._tag = self.file.replace(self.holder.to_json(), self._tag)
        except ConditionFailed:
            found = self.current()
            by = found[0].describe(time.time()) if found is not None else "nobody: it was removed"
            self.lost = (f"this run's lease on the output was taken by another run ({by}) after it went "
                         f"{self.ttl_s:.0f} s without a refresh")
            self._stop.set()
            if self.on_lost is not None:
                self.on_lost(self.lost)

    def release(self) -> None:
        """Remove the lease, if it is still this run's."""
        if self._tag is None or self.lost is not None:
            return
        try:
            self.file.delete(self._tag)
        except (ConditionFailed, FileNotFoundError):
            pass  # taken by another run meanwhile: it is theirs now
        self._tag = None

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - a store briefly unreachable: the next tick tries again
                continue

    def __enter__(self) -> "OutputLease":
        self.acquire()
        self._thread = threading.Thread(target=self._refresh_loop, name="output-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.release()


__all__ = ["LEASE_REFRESH_S", "LEASE_TTL_S", "LeaseHeld", "LeaseHolder", "OutputLease"]
