"""`scripts/ray_head.sh`, the README's way to start a Ray head on a shared machine: two users'
heads started at once both come up, on ports of their own (none of Ray's defaults), each
answering its own CLI, also on a machine without a Ray token yet; ending a head's script ends
its processes and no other."""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from helpers.owned_processes import OwnedProcess, session_members
from helpers.paths import ROOT

pytestmark = pytest.mark.cluster  # starts two Ray heads
RAY_DEFAULT_PORTS = {6379, 8265, 10001, 52365}


def test_two_heads_at_once_share_nothing(tmp_path):
    # A home of its own, as on a new machine: no token of an earlier cluster (~/.ray/auth_token);
    # the script makes one, which the CLIs then read.
    home = tmp_path / "home"
    home.mkdir()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, "RAY_AUTH_MODE": "token",
           "HOME": str(home)}
    # Short state directories: Ray's socket paths have a length limit.
    dirs = [tempfile.mkdtemp(prefix="rh", dir="/tmp") for _ in range(2)]
    heads = [OwnedProcess(["bash", os.path.join(ROOT, "scripts", "ray_head.sh"), d], env=env, cwd=tmp_path)
             for d in dirs]
    try:
        addresses = [subprocess.run(["bash", os.path.join(ROOT, "scripts", "ray_head.sh"), "--address", d],
                                    capture_output=True, text=True, timeout=150, check=True).stdout.strip()
                     for d in dirs]
        assert len(set(addresses)) == 2, addresses
        assert (home / ".ray" / "auth_token").stat().st_size > 0
        for head, address, d in zip(heads, addresses, dirs, strict=True):
            announced = head.output_tail()
            ports = {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", announced)}
            assert len(ports) == 2 and not ports & RAY_DEFAULT_PORTS, announced  # GCS and dashboard
            listed = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "job", "list"], capture_output=True,
                                    text=True, timeout=120, env={**env, "RAY_ADDRESS": address})
            assert listed.returncode == 0, listed.stderr[-2000:]
            assert os.path.exists(os.path.join(d, "head.log"))
        # A SIGTERM to a head's script (what Ctrl-C or `kill` sends it) ends that head's every
        # process and removes its sessions; the other head still answers until it is ended too.
        for k, (head, d) in enumerate(zip(heads, dirs, strict=True)):
            sessions = os.path.realpath(os.path.join(d, "ray"))
            assert sessions != os.path.join(d, "ray") and os.path.isdir(sessions)  # a short directory, linked
            os.kill(head.process.pid, signal.SIGTERM)
            deadline = time.time() + 60
            while session_members(head.session_id) and time.time() < deadline:
                time.sleep(0.5)
            assert not session_members(head.session_id)
            assert not os.path.exists(sessions) and not os.path.lexists(os.path.join(d, "ray"))
            if k == 0:
                listed = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "job", "list"],
                                        capture_output=True, text=True, timeout=120,
                                        env={**env, "RAY_ADDRESS": addresses[1]})
                assert listed.returncode == 0, listed.stderr[-2000:]
    finally:
        for head in heads:
            head.stop()
        for d in dirs:
            subprocess.run(["rm", "-rf", d], check=False)
