"""Processes a test starts and ends itself, by id: each runs in a session of its own, and
stopping it ends exactly the processes of that session (what it started, and what those
started), never another Ray cluster or server on the machine."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import IO, Dict, Iterator, List, Optional, Sequence, Tuple


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_port_flags(head: bool, dashboard_port: Optional[int] = None) -> List[str]:
    """`ray start` flags that put every port a node binds on a free one, none of Ray's defaults
    (8265, 10001, 52365, ...), which another user's cluster on the machine may hold. A head
    gets its dashboard (`dashboard_port`, or a free one) and client-server ports too; the
    GCS port is the caller's `--port`."""
    flags = [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
             f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]
    if head:
        flags += [f"--dashboard-port={dashboard_port or free_port()}", f"--ray-client-server-port={free_port()}"]
    return flags


def wait_for_port(port: int, timeout: float = 60.0, process: Optional["OwnedProcess"] = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process is not None and process.process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.process.returncode} before listening on "
                               f"{port}:\n{process.output_tail()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def session_members(session_id: int) -> List[int]:
    """Ids of the live processes in a session (zombies excluded)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, sid = fields[0], int(fields[3])
        if sid == session_id and state != "Z":
            members.append(int(entry))
    return members


class OwnedProcess:
    """A subprocess in a new session; `stop()` ends every live process of that session."""

    def __init__(self, args: Sequence[str], env: Optional[Dict[str, str]] = None, stdout: Optional[IO[bytes]] = None,
                 **kwargs) -> None:
        self.args = list(args)
        self.log = tempfile.TemporaryFile()  # stderr (and stdout, unless given), for the message when it fails
        self.process = subprocess.Popen(self.args, env=env, start_new_session=True,
                                        stdout=self.log if stdout is None else stdout,
                                        stderr=subprocess.STDOUT if stdout is None else self.log, **kwargs)
        self.session_id = self.process.pid

    def output_tail(self, limit: int = 3000) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-limit:]

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the session's processes, SIGKILL to those left after `grace` seconds;
        returns once none is alive."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30.0)):
            for pid in session_members(self.session_id):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + wait
            while time.time() < deadline:
                if self.process.poll() is None:
                    time.sleep(0.2)
                    continue
                if not session_members(self.session_id):
                    return
                time.sleep(0.2)
        left = session_members(self.session_id)
        self.log.close()
        if left:
            raise RuntimeError(f"{self.args[0]}: processes {left} of session {self.session_id} survived SIGKILL")

    def __enter__(self) -> "OwnedProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def start_ray_head(num_cpus: int, env: Dict[str, str], prefix: str) -> Iterator[Tuple[str, int]]:
    """A one-node Ray cluster of `num_cpus` CPUs on free ports, without a dashboard, its state
    in a short temporary directory named with `prefix` (Ray's socket paths must stay short);
    yields (its GCS address, the session id that holds every process of the cluster) and ends
    exactly those processes afterwards."""
    port = free_port()
    ray_temp = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    head = OwnedProcess(["ray", "start", "--head", "--block", f"--port={port}", f"--num-cpus={num_cpus}",
                         "--include-dashboard=false", "--node-ip-address=127.0.0.1", f"--temp-dir={ray_temp}",
                         "--disable-usage-stats", *ray_port_flags(head=True)], env=env)
    try:
        wait_for_port(port, timeout=120, process=head)
        yield f"127.0.0.1:{port}", head.session_id
    finally:
        head.stop()
        shutil.rmtree(ray_temp, ignore_errors=True)
