"""Where bench/scale.py puts a run's input and finds its output: a local directory, or a bucket
of a SeaweedFS S3 server the bench started. Keys are relative ("<run>/input/part-00000.parquet")."""

import os
import shutil
from typing import Any, Dict, List
from urllib.parse import urlparse

import pyarrow.parquet as pq
from pyarrow import fs

RESULT_PREFIX = "masks-"  # the job's result files; the checkpoint and manifests sit beside them


class Store:
    kind = ""
    poll_interval = 0.5  # seconds between looks for the first result file
    job_storage: Dict[str, Any] = {}  # the job config's `storage` section

    def url(self, key: str) -> str:
        raise NotImplementedError

    def put(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def result_files(self, output: str) -> Dict[str, int]:
        """{key: size} of the result files under `output`."""
        raise NotImplementedError

    def filesystem(self) -> fs.FileSystem:
        raise NotImplementedError

    def path(self, key: str) -> str:
        """`key` as `filesystem()` names it."""
        raise NotImplementedError

    def remove(self, prefix: str) -> None:
        raise NotImplementedError

    def num_rows(self, key: str) -> int:
        with self.filesystem().open_input_file(self.path(key)) as f:
            return pq.ParquetFile(f).metadata.num_rows

    def ids(self, keys: Dict[str, int]) -> List[Any]:
        """The `id` column of every file in `keys`, in one list."""
        ids: List[Any] = []
        for key in keys:
            ids += pq.read_table(self.path(key), columns=["id"], filesystem=self.filesystem()).column(0).to_pylist()
        return ids


class LocalStore(Store):
    kind = "local disk"

    def __init__(self, root: str) -> None:
        self.root = root

    def url(self, key: str) -> str:
        return os.path.join(self.root, key)

    def path(self, key: str) -> str:
        return self.url(key)

    def filesystem(self) -> fs.FileSystem:
        return fs.LocalFileSystem()

    def put(self, key: str, data: bytes) -> None:
        os.makedirs(os.path.dirname(self.url(key)), exist_ok=True)
        with open(self.url(key), "wb") as f:
            f.write(data)

    def result_files(self, output: str) -> Dict[str, int]:
        directory = self.url(output)
        if not os.path.isdir(directory):
            return {}
        return {f"{output}/{n}": os.path.getsize(os.path.join(directory, n))
                for n in os.listdir(directory) if n.startswith(RESULT_PREFIX)}

    def remove(self, prefix: str) -> None:
        shutil.rmtree(self.url(prefix), ignore_errors=True)


class SeaweedStore(Store):
    kind = "SeaweedFS (S3)"
    poll_interval = 2.0  # a listing is a request to the server the job writes to

    def __init__(self, server: Any, bucket: str) -> None:
        from helpers.seaweedfs import CREDENTIALS

        self.server, self.bucket = server, bucket
        self.client = server.client()
        server.create_bucket(bucket)
        self.job_storage = {"endpoint_url": server.endpoint}
        self._fs = fs.S3FileSystem(access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                   secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                                   region=CREDENTIALS["AWS_DEFAULT_REGION"],
                                   endpoint_override=urlparse(server.endpoint).netloc, scheme="http")

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def path(self, key: str) -> str:
        return f"{self.bucket}/{key}"

    def filesystem(self) -> fs.FileSystem:
        return self._fs

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def _objects(self, prefix: str) -> Dict[str, int]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return {item["Key"]: item["Size"] for page in pages for item in page.get("Contents", [])}

    def result_files(self, output: str) -> Dict[str, int]:
        return self._objects(f"{output}/{RESULT_PREFIX}")

    def remove(self, prefix: str) -> None:
        keys = list(self._objects(f"{prefix}/"))
        for start in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=self.bucket,
                                       Delete={"Objects": [{"Key": k} for k in keys[start:start + 1000]]})
