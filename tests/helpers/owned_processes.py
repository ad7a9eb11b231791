"""Processes a test starts and ends itself, by id: each runs in a session of its own, and
stopping it ends exactly the processes of that session (what it started, and what those
started), never another Ray cluster or server on the machine."""

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import IO, Dict, Iterator, List, Optional, Sequence, Tuple

# Token authentication, Ray 2.60's default for a local cluster, for the clusters a test or bench
# starts and the drivers it runs against them: `ray start` takes a token it is given and, unlike
# `ray.init`, makes none, so on a new machine (no ~/.ray/auth_token yet) a head would refuse to
# start. One token per process, handed down in the environment of what it starts.
RAY_TOKEN_AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.environ.get("RAY_AUTH_TOKEN") or secrets.token_hex(32)}


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

    def members(self) -> List[int]:
        """The live processes of the session."""
        return session_members(self.session_id)

    def signal_all(self, sig: int) -> List[int]:
        """`sig` to every live process of the session; the ids it was sent to."""
        sent = []
        for pid in session_members(self.session_id):
            try:
                os.kill(pid, sig)
                sent.append(pid)
            except ProcessLookupError:
                pass
        return sent

    def kill(self, timeout: float = 30.0) -> List[int]:
        """SIGKILL to every process of the session at once, again to any that appears meanwhile
        (a process a dying parent had just forked), until none is alive; the ids killed."""
        killed: List[int] = []
        deadline = time.time() + timeout
        while True:
            killed += [pid for pid in self.signal_all(signal.SIGKILL) if pid not in killed]
            self.process.poll()  # reaps the session's leader
            if not session_members(self.session_id):
                return killed
            if time.time() > deadline:
                raise RuntimeError(f"{self.args[0]}: processes {session_members(self.session_id)} of session "
                                   f"{self.session_id} survived SIGKILL")
            time.sleep(0.1)

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


def ray_head_args(port: int, num_cpus: int, ray_temp: str) -> List[str]:
    """`ray start` of a head node on GCS port `port` and free ports otherwise, without a
    dashboard, its state under `ray_temp`; in the foreground (`--block`), so that every process
    of the node stays in the session of the process that runs it."""
    return ["ray", "start", "--head", "--block", f"--port={port}", f"--num-cpus={num_cpus}", "--include-dashboard=false",
            "--node-ip-address=127.0.0.1", f"--temp-dir={ray_temp}", "--disable-usage-stats",
            *ray_port_flags(head=True)]


@contextlib.contextmanager
def start_ray_head(num_cpus: int, env: Dict[str, str], prefix: str) -> Iterator[Tuple[str, int]]:
    """A one-node Ray cluster of `num_cpus` CPUs on free ports, without a dashboard, its state
    in a short temporary directory named with `prefix` (Ray's socket paths must stay short);
    yields (its GCS address, the session id that holds every process of the cluster) and ends
    exactly those processes afterwards."""
    port = free_port()
    ray_temp = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    head = OwnedProcess(ray_head_args(port, num_cpus, ray_temp), env=env)
    try:
        wait_for_port(port, timeout=120, process=head)
        yield f"127.0.0.1:{port}", head.session_id
    finally:
        head.stop()
        shutil.rmtree(ray_temp, ignore_errors=True)


class RayNode:
    """One node of a `RayCluster`: its `ray start --block` process, in a session of its own that
    holds every process of the node (its raylet, which runs the node's object store, the
    node's agents and its worker processes, which the raylet starts)."""

    def __init__(self, name: str, num_cpus: int, process: OwnedProcess) -> None:
        self.name, self.num_cpus, self.process = name, num_cpus, process

    def __repr__(self) -> str:
        return f"RayNode({self.name}, {self.num_cpus} CPUs, session {self.process.session_id})"

    def pids(self) -> List[int]:
        """The node's live processes."""
        return self.process.members()

    def process_titled(self, part: str) -> int:
        """The id of the node's Ray worker process whose title (Ray titles a worker `ray::<what it
        runs>`, an actor's after its class) holds `part`; 0 when none does."""
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    title = f.read().decode(errors="replace")
            except OSError:
                continue
            if title.startswith("ray::") and part in title:
                return pid
        return 0

    def wait_started(self, timeout: float = 120.0) -> None:
        """Until `ray start` says the node runs (it has registered with the head by then);
        RuntimeError, with its output, when it exits first."""
        deadline = time.time() + timeout
        while "Ray runtime started" not in self.process.output_tail(100_000):
            if self.process.process.poll() is not None:
                raise RuntimeError(f"{self} exited with {self.process.process.returncode} before it started:\n"
                                   f"{self.process.output_tail()}")
            if time.time() > deadline:
                raise RuntimeError(f"{self} did not start in {timeout} s:\n{self.process.output_tail()}")
            time.sleep(0.2)

    def kill(self) -> List[int]:
        """The node dies at once: SIGKILL to every process of it; returns their ids once none is
        alive."""
        return self.process.kill()

    def preempt(self, grace: float) -> Tuple[List[int], List[int]]:
        """The node goes as a spot node does: SIGTERM to every process of it, SIGKILL to those
        still alive `grace` seconds later. Returns (the ids SIGTERMed, those SIGKILLed) once none
        is alive."""
        terminated = self.process.signal_all(signal.SIGTERM)
        deadline = time.time() + grace
        while time.time() < deadline and self.pids():
            self.process.process.poll()
            time.sleep(0.1)
        return terminated, self.process.kill()


_NODES_PROBE = """
import json, sys
import ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
print(json.dumps([n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]]))
"""


class RayCluster:
    """A local Ray cluster of a head and worker nodes on this machine, each node a `ray start`
    process of its own (`RayNode`): nodes can be added, and killed or preempted one by one."""

    def __init__(self, env: Dict[str, str], prefix: str, object_store_bytes: int = 256 << 20) -> None:
        self.env, self.object_store_bytes = env, object_store_bytes
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Ray's socket paths must stay short (107 bytes): a temp dir of its own under /tmp,
        # which the worker nodes share with the head (Ray's choice on one machine).
        self.temp_dir = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
        self.head: Optional[RayNode] = None
        self.workers: List[RayNode] = []  # those alive
        self.gone: List[RayNode] = []  # those killed or preempted
        self._started = 0

    def start_head(self, num_cpus: int) -> RayNode:
        args = ray_head_args(self.port, num_cpus, self.temp_dir) + [f"--object-store-memory={self.object_store_bytes}"]
        self.head = RayNode("head", num_cpus, OwnedProcess(args, env=self.env))
        self.head.wait_started()
        return self.head

    def add_worker(self, num_cpus: int, wait: bool = True, tries: int = 2) -> RayNode:
        """A worker node of `num_cpus` logical CPUs joined to the head; with `wait`, returns once
        it has registered with the head (`ray start` waits for that, 30 s at most: on a loaded
        machine a node may miss it; it is started again, `tries` times in all)."""
        self._started += 1
        args = ["ray", "start", "--block", f"--address={self.address}", f"--num-cpus={num_cpus}",
                f"--object-store-memory={self.object_store_bytes}", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                *ray_port_flags(head=False)]
        node = RayNode(f"worker-{self._started}", num_cpus, OwnedProcess(args, env=self.env))
        self.workers.append(node)
        if not wait:
            return node
        try:
            node.wait_started()
        except RuntimeError as e:
            self.workers.remove(node)
            self.gone.append(node)
            node.kill()
            if tries <= 1:
                raise
            print(f"{node} failed to start; starting it again: {str(e)[-600:]}")
            return self.add_worker(num_cpus, wait, tries - 1)
        return node

    def alive_cpus(self) -> List[float]:
        """The CPUs of each node the cluster counts as alive (asked by a driver of its own)."""
        proc = subprocess.run([sys.executable, "-c", _NODES_PROBE, self.address], env=self.env,
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"asking {self.address} for its nodes failed:\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def wait_for_nodes(self, timeout: float = 120.0) -> None:
        """Until the cluster counts exactly its live nodes (the head and `workers`), with their
        CPUs: a node that joins registers with the head after its process starts, and one that
        died is marked dead after the head's health checks fail."""
        assert self.head is not None
        expected = sorted(float(n.num_cpus) for n in [self.head, *self.workers])
        deadline = time.time() + timeout
        while True:
            for node in [self.head, *self.workers]:
                if node.process.process.poll() is not None:
                    raise RuntimeError(f"{node} exited with {node.process.process.returncode}:\n"
                                       f"{node.process.output_tail()}")
            found = sorted(self.alive_cpus())
            if found == expected:
                return
            if time.time() > deadline:
                raise TimeoutError(f"the cluster at {self.address} counts nodes of {found} CPUs after {timeout} s, "
                                   f"not {expected}")
            time.sleep(0.5)

    def node_running(self, title_part: str) -> Optional[RayNode]:
        """The live node whose worker process's title holds `title_part` (`RayNode.process_titled`)."""
        for node in [*([self.head] if self.head else []), *self.workers]:
            if node.process_titled(title_part):
                return node
        return None

    def describe_worker(self, pid: int) -> str:
        """What a worker process of this cluster is doing: its state and kernel wait from /proc,
        its threads' stacks (py-spy, Python and native frames) and the tails of Ray's log files
        of that process; for a test's failure message."""
        lines = [f"process {pid}:"]
        try:
            with open(f"/proc/{pid}/status") as f:
                lines += [line.rstrip() for line in f if line.split(":")[0] in ("Name", "State", "Threads", "VmRSS")]
            with open(f"/proc/{pid}/wchan") as f:
                lines.append(f"wchan: {f.read()}")
        except OSError as e:
            lines.append(f"/proc: {e}")
        try:
            py_spy = os.path.join(os.path.dirname(sys.executable), "py-spy")  # installed with ray[default]
            dump = subprocess.run([py_spy, "dump", "--native", "--pid", str(pid)], capture_output=True, text=True,
                                  timeout=30)
            lines.append(dump.stdout[-6000:] + dump.stderr[-1000:])
        except (OSError, subprocess.TimeoutExpired) as e:
            lines.append(f"py-spy: {e}")
        logs = os.path.join(self.temp_dir, "session_latest", "logs")
        for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
            if name.endswith((f"-{pid}.err", f"-{pid}.out", f"_{pid}.log")):
                with open(os.path.join(logs, name), errors="replace") as f:
                    lines.append(f"--- {name}:\n{f.read()[-3000:]}")
        return "\n".join(lines)

    def kill(self, node: RayNode) -> List[int]:
        """`RayNode.kill`, and the node no longer counted among the live ones."""
        self.workers.remove(node)
        self.gone.append(node)
        return node.kill()

    def preempt(self, node: RayNode, grace: float) -> Tuple[List[int], List[int]]:
        """`RayNode.preempt`, and the node no longer counted among the live ones."""
        self.workers.remove(node)
        self.gone.append(node)
        return node.preempt(grace)

    def stop(self, grace: float = 2.0) -> None:
        """Ends every process this cluster started, by id: SIGTERM to every node's processes at
        once (worker nodes first), SIGKILL to those left after `grace` seconds (a raylet takes
        ~10 s to drain on SIGTERM; the cluster holds nothing to keep)."""
        nodes = [*self.workers, *self.gone, *([self.head] if self.head else [])]
        for node in nodes:
            node.process.signal_all(signal.SIGTERM)
        deadline = time.time() + grace
        while time.time() < deadline and any(node.pids() for node in nodes):
            for node in nodes:
                node.process.process.poll()
            time.sleep(0.2)
        left = []
        for node in nodes:
            try:
                node.process.kill()
            except RuntimeError:
                left.append(node)
            node.process.log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        if left:
            raise RuntimeError(f"processes of {left} survived SIGKILL")


@contextlib.contextmanager
def start_ray_cluster(workers: Sequence[int], env: Dict[str, str], prefix: str, head_cpus: int = 0,
                      object_store_bytes: int = 256 << 20) -> Iterator[RayCluster]:
    """A local Ray cluster of a head of `head_cpus` CPUs and one worker node per entry of
    `workers` (its CPUs), each node a `ray start` process in a session of its own, every port on
    a free one (none of Ray's defaults), each node's object store `object_store_bytes` big;
    yields it once every node has joined, and ends exactly the processes it started afterwards,
    whether the nodes were added, killed or preempted meanwhile."""
    cluster = RayCluster(env, prefix, object_store_bytes)
    try:
        cluster.start_head(head_cpus)
        for cpus in workers:
            cluster.add_worker(cpus)
        yield cluster
    finally:
        cluster.stop()
