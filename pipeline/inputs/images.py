"""The one reader of an image input's values, for the decode stage and the review page: a
value of the image column (encoded bytes, a `datasets` Image struct `{bytes, path}`, or an
image URI / path) → the image's encoded bytes, within the input's limits; and where image
URIs may point unless the config says (`default_uri_prefixes`).

A relative path in the data is read against the input's directory (`input_directory`: the
directory of input.path, whatever the working directory of a worker), on the input's own
store: `images/a.jpg` beside `s3://bucket/set/rows.parquet` is `s3://bucket/set/images/a.jpg`."""

import concurrent.futures
import errno
import os
import posixpath
import urllib.parse
from typing import Any, Dict, List, Optional

from ..config import ImageColumnsConfig, StorageConfig
from ..schema import IMAGE_STRUCT_BYTES, IMAGE_STRUCT_PATH
from ..storage import (
    Location,
    glob_root,
    is_local,
    join,
    local_path,
    plain_path,
    resolve_url_dots,
    store_root,
    uri_allowed,
    uri_problem,
)

# HTTP redirects an image read follows, each to a URL that is itself allowed.
MAX_REDIRECTS = 5
_REDIRECT_STATUSES = (301, 302, 303, 307, 308)


class _Redirect(Exception):
    """An HTTP redirect answered to an image read, not followed by the client."""

    def __init__(self, status: int, location: Optional[str]) -> None:
        super().__init__(f"HTTP {status} to {location}")
        self.status, self.location = status, location


async def _stop_at_redirects(response: Any) -> None:
    """aiohttp's check of each response (its `raise_for_status`): a redirect raises `_Redirect`,
    so that ImageReader decides whether to follow it; other statuses are fsspec's to judge."""
    if response.status in _REDIRECT_STATUSES:
        raise _Redirect(response.status, response.headers.get("Location"))


# Request options of every HTTP request of an image read (fsspec's HTTPFileSystem hands them
# to aiohttp): its info (HEAD, then GET) and its reads alike.
_NO_REDIRECTS: Dict[str, Any] = {"allow_redirects": False, "raise_for_status": _stop_at_redirects}


def input_directory(input_location: Location) -> str:
    """The directory of an input (a Parquet file's directory, a directory itself, or a glob's
    root), as a URL (a plain path when local): what relative image paths are read against."""
    path = input_location.path
    if any(ch in path for ch in "*?["):
        directory = glob_root(path)
    elif input_location.isdir():
        directory = path.rstrip("/")
    else:
        directory = posixpath.dirname(path.rstrip("/"))
    return input_location.url_of(directory)


def resolve_image_uri(uri: str, directory: Optional[str]) -> str:
    """An image URI as the job reads it: a relative local path joined to the input's
    `directory` (None: left as it is), with its '.' and '..' resolved when the directory is a
    URL; URLs, absolute paths and URIs the job refuses (`uri_problem`) as they are."""
    if directory is None or uri_problem(uri) is not None or not is_local(uri) or os.path.isabs(plain_path(uri)):
        return uri
    joined = join(directory, plain_path(uri))
    return joined if is_local(joined) else resolve_url_dots(joined)


def default_uri_prefixes(input_url: str) -> List[str]:
    """Where image URIs may point unless input.allowed_uri_prefixes says otherwise: the bucket
    (or host) of an object-store input, the Hub repository of an hf:// input (`store_root`);
    for a local input, the directory above the input's directory (so that sibling folders
    such as images/ next to boxes/ work), or the input's directory itself when that would be
    the filesystem's root."""
    if not is_local(input_url):
        return [store_root(input_url)]
    path = local_path(glob_root(input_url))
    directory = path if os.path.isdir(path) else os.path.dirname(path)
    parent = os.path.dirname(directory)
    return [directory if parent == os.path.dirname(parent) else parent]


class ImageReader:
    """Image URIs must be a plain path or a file://, s3://, gs://, gcs://, http(s):// or
    hf:// URL (never an fsspec chain, `scheme:` form or `~` path: `uri_problem` has the
    rule), lie under input.allowed_uri_prefixes and name a regular file of at most
    input.max_image_bytes, read within input.read_timeout_s; bytes given in the column are
    held to the same size limit. HTTP redirects are followed only to http(s) URLs that are
    themselves allowed, checked like the URI (at most MAX_REDIRECTS): the HTTP client follows
    none itself, in its info requests (HEAD, GET) or its reads. Raises ValueError,
    PermissionError or TimeoutError naming the problem."""

    def __init__(self, inputs: ImageColumnsConfig, storage: StorageConfig, directory: Optional[str] = None) -> None:
        """`directory`: the input's directory, which relative image paths are read against
        (`input_directory`)."""
        self.inputs, self.storage, self.directory = inputs, storage, directory
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="image-read")

    def image_bytes(self, value: Any, column: str) -> bytes:
        """The encoded image a value of `column` holds or names."""
        limit = self.inputs.max_image_bytes
        if isinstance(value, str):
            data = self.read_uri(value, column)
        elif isinstance(value, dict):  # a datasets Image column (schema.is_image_struct): its bytes, else its path
            if value.get(IMAGE_STRUCT_BYTES) is not None:
                data = value[IMAGE_STRUCT_BYTES]
            elif value.get(IMAGE_STRUCT_PATH):
                data = self.read_uri(value[IMAGE_STRUCT_PATH], f"{column}.{IMAGE_STRUCT_PATH}")
            else:
                raise ValueError(f"{column} has neither {IMAGE_STRUCT_BYTES} nor a {IMAGE_STRUCT_PATH}")
        elif value is None:
            raise ValueError(f"{column} is null")
        else:
            data = value
        if len(data) > limit:
            raise ValueError(f"the image has more than input.max_image_bytes ({limit} bytes)")
        return data

    def read_uri(self, uri: Optional[str], where: str) -> bytes:
        """The bytes of the image at `uri` (from the value `where` names, for messages), at
        most input.max_image_bytes."""
        if not uri:
            raise ValueError(f"{where} is empty")
        problem = uri_problem(uri)
        if problem is not None:
            raise ValueError(f"{problem} ({where})")
        if self.directory is None and is_local(uri) and not os.path.isabs(plain_path(uri)):
            raise ValueError(f"{where} is the relative path {uri!r}, and the input's directory it would be read "
                             "against is not known here: give absolute paths or URIs")
        written, uri = uri, resolve_image_uri(uri, self.directory)
        if written != uri:  # every message names what the data says and what was read
            where = f"{where} {written!r} (a relative path, read against the input's directory)"
            problem = uri_problem(uri)  # beside a URL, the path's own %2f or '\' lands in a URL
            if problem is not None:
                raise ValueError(f"{problem} ({where})")
        prefixes = self.inputs.allowed_uri_prefixes
        if prefixes is not None and not uri_allowed(uri, prefixes):
            raise PermissionError(f"{uri} lies outside input.allowed_uri_prefixes ({', '.join(prefixes)})"
                                  + (f"; {where}" if written != uri else ""))

        def read() -> bytes:
            url = uri
            for _ in range(MAX_REDIRECTS + 1):
                try:
                    return self._read(url)
                except _Redirect as redirect:
                    url = self._redirect_target(url, redirect)
            raise ValueError(f"{uri} redirects more than {MAX_REDIRECTS} times")

        future = self._pool.submit(read)
        try:
            return future.result(timeout=self.inputs.read_timeout_s)
        except FileNotFoundError as e:
            answer = f", {e.strerror}" if str(e.strerror or "").startswith("HTTP status") else ""
            raise FileNotFoundError(f"{uri} not found{answer} ({where})") from None
        except concurrent.futures.TimeoutError:
            # The stuck read keeps its thread; later rows get a fresh one.
            self._pool.shutdown(wait=False)
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="image-read")
            raise TimeoutError(f"reading {uri} took more than input.read_timeout_s ({self.inputs.read_timeout_s:g} s)") from None

    def _redirect_target(self, url: str, redirect: _Redirect) -> str:
        """Where the redirect answered to `url` leads, once checked like an image URI."""
        if not redirect.location:
            raise ValueError(f"{url} answers HTTP {redirect.status} without a Location to redirect to")
        target = urllib.parse.urljoin(url, redirect.location)
        answer = f"{url} redirects (HTTP {redirect.status}) to {target}"
        if not target.startswith(("http://", "https://")):
            raise PermissionError(f"{answer}, which is not followed: an HTTP redirect may lead only to http(s) URLs")
        problem = uri_problem(target)
        if problem is not None:
            raise PermissionError(f"{answer}, which is not followed: {problem}")
        prefixes = self.inputs.allowed_uri_prefixes
        if prefixes is not None and not uri_allowed(target, prefixes):
            raise PermissionError(f"{answer}, which is not followed: it lies outside input.allowed_uri_prefixes "
                                  f"({', '.join(prefixes)})")
        return target

    def _read(self, url: str) -> bytes:
        """The bytes at `url`, at most input.max_image_bytes + 1; an HTTP redirect raises
        `_Redirect` instead of being followed."""
        location = Location(url, self.storage)
        fs, path = location.fs, location.path
        options = _NO_REDIRECTS if url.startswith(("http://", "https://")) else {}
        limit = self.inputs.max_image_bytes
        try:
            info = fs.info(path, **options)
        except FileNotFoundError as e:
            # fsspec's HTTP info reports any failed request as FileNotFoundError, a redirect too.
            if isinstance(e.__cause__, _Redirect):
                raise e.__cause__ from None
            status = getattr(e.__cause__, "status", None)
            if not isinstance(status, int):
                raise
            # Say what the server said: a missing file, or an error another try may not meet.
            answer = f"HTTP status {status} ({getattr(e.__cause__, 'message', '')})"
            if status in (404, 410):
                raise FileNotFoundError(errno.ENOENT, answer, url) from None
            raise OSError(f"{url}: {answer}") from None
        if info.get("type") != "file":  # a FIFO or device would block or never end
            raise ValueError(f"{url} is not a regular file (type {info.get('type')})")
        if (info.get("size") or 0) > limit:
            raise ValueError(f"{url} has {info['size']} bytes, more than input.max_image_bytes ({limit})")
        with fs.open(path, "rb", **options) as f:
            return f.read(limit + 1)
