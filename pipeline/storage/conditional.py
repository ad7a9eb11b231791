"""`ConditionalFile`: one small file that is created only when absent and replaced or removed
only when it is as its writer last read it: the primitive a lease needs, in the strongest
form each store offers.

- Local filesystems: an exclusive `flock` on the file's directory around every read-compare-
  write (Linux maps `flock` onto NFS locks too), the content's digest as its tag.
- S3 and S3-compatible stores: conditional requests, `If-None-Match: *` to create and
  `If-Match: <ETag>` to replace or delete (AWS S3, SeaweedFS; tested on SeaweedFS).
- Any other store (gs://, ...): best effort. A write is followed by a pause and a read back, and
  holds only when the read back finds it: two writers that both wrote within the pause see the
  same last write, and exactly one of them finds its own.
"""

import errno
import fcntl
import hashlib
import os
import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Tuple

from .location import Location

LOCAL, S3, BEST_EFFORT = "local", "s3", "best effort"
# Longer than the gap between a writer's check and its write on any working store.
BEST_EFFORT_SETTLE_S = 2.0


class ConditionFailed(Exception):
    """The file is not as the writer expected: another writer created, replaced or removed it."""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _precondition_failed(error: BaseException) -> bool:
    """Whether an s3fs error is an S3 precondition's refusal (412, or 409 for a conditional
    write that raced another)."""
    response = getattr(error.__cause__, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409") or status in (409, 412)


class ConditionalFile:
    """The file at `location`, written only under the conditions above. Tags are opaque:
    what `read` or a write returned, given back to `replace` and `delete`."""

    def __init__(self, location: Location, settle_s: float = BEST_EFFORT_SETTLE_S) -> None:
        self.location = location
        self.settle_s = settle_s
        self.kind = LOCAL if location.is_local else S3 if location.protocol in ("s3", "s3a") else BEST_EFFORT

    # --- local -----------------------------------------------------------------------------

    @contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        directory = os.path.dirname(self.location.path) or "."
        os.makedirs(directory, exist_ok=True)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _read_local(self) -> Optional[bytes]:
        try:
            with open(self.location.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _write_local(self, data: bytes) -> None:
        # O_NOFOLLOW: a link planted at the file's name is refused rather than written through.
        fd = os.open(self.location.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    # --- s3 --------------------------------------------------------------------------------

    def _s3_call(self, method: str, **kwargs: Any) -> Any:
        bucket, key, _ = self.location.fs.split_path(self.location.path)
        try:
            return self.location.fs.call_s3(method, Bucket=bucket, Key=key, **kwargs)
        except OSError as e:
            if _precondition_failed(e):
                raise ConditionFailed(f"{self.location.url} changed") from None
            raise
        finally:
            self.location.fs.invalidate_cache(self.location.path)

    # --- the operations --------------------------------------------------------------------

    def read(self) -> Optional[Tuple[bytes, str]]:
        """(content, tag), or None when there is no file."""
        if self.kind == LOCAL:
            with self._locked(exclusive=False):
                data = self._read_local()
            return None if data is None else (data, _digest(data))
        fs, path = self.location.fs, self.location.path
        fs.invalidate_cache(path)
        for _ in range(5):  # the ETag and the bytes of one version
            try:
                tag = str(fs.info(path)["ETag"]) if self.kind == S3 else ""
                data = fs.cat_file(path)
                fs.invalidate_cache(path)
                if self.kind != S3:
                    return data, _digest(data)
                if str(fs.info(path)["ETag"]) == tag:
                    return data, tag
            except FileNotFoundError:
                return None
        raise ConditionFailed(f"{self.location.url} kept changing while it was read")

    def create(self, data: bytes) -> str:
        """Write the file if there is none; its tag. FileExistsError when there is one."""
        if self.kind == LOCAL:
            with self._locked(exclusive=True):
                if os.path.lexists(self.location.path):
                    raise FileExistsError(errno.EEXIST, "exists", self.location.url)
                self._write_local(data)
            return _digest(data)
        if self.kind == S3:
            try:
                return str(self._s3_call("put_object", Body=data, IfNoneMatch="*")["ETag"])
            except ConditionFailed:
                raise FileExistsError(errno.EEXIST, "exists", self.location.url) from None
        if self.location.exists():
            raise FileExistsError(errno.EEXIST, "exists", self.location.url)
        return self._write_and_verify(data, FileExistsError(errno.EEXIST, "created by another writer",
                                                            self.location.url))

    def replace(self, data: bytes, tag: str) -> str:
        """Replace the file, if it is still the version `tag` names; the new tag.
        ConditionFailed otherwise (also when it is gone)."""
        if self.kind == LOCAL:
            with self._locked(exclusive=True):
                self._expect(tag)
                self._write_local(data)
            return _digest(data)
        if self.kind == S3:
            return str(self._s3_call("put_object", Body=data, IfMatch=tag)["ETag"])
        self._expect(tag)
        return self._write_and_verify(data, ConditionFailed(f"{self.location.url} was written by another writer"))

    def delete(self, tag: str) -> None:
        """Remove the file, if it is still the version `tag` names; ConditionFailed otherwise."""
        if self.kind == LOCAL:
            with self._locked(exclusive=True):
                self._expect(tag)
                os.remove(self.location.path)
            return
        if self.kind == S3:
            self._s3_call("delete_object", IfMatch=tag)
            return
        self._expect(tag)
        self.location.fs.rm(self.location.path)

    def _expect(self, tag: str) -> None:
        """ConditionFailed unless the file is still there and the version `tag` names (locally:
        call it under the lock)."""
        if self.kind == LOCAL:
            data = self._read_local()
            current = None if data is None else _digest(data)
        else:
            found = self.read()
            current = None if found is None else found[1]
        if current != tag:
            raise ConditionFailed(f"{self.location.url} changed")

    def _write_and_verify(self, data: bytes, lost: Exception) -> str:
        self.location.fs.pipe_file(self.location.path, data)
        time.sleep(self.settle_s)
        found = self.read()
        if found is None or found[0] != data:
            raise lost
        return found[1]


__all__ = ["BEST_EFFORT", "LOCAL", "S3", "ConditionFailed", "ConditionalFile"]
