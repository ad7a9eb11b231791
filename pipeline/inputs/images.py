"""The one reader of an image input's values, for the decode stage and the review page: a
value of the image column (encoded bytes, a `datasets` Image struct `{bytes, path}`, or an
image URI / path) → the image's encoded bytes, within the input's limits; and where image
URIs may point unless the config says (`default_uri_prefixes`).

A relative path in the data is read against the input's directory (`input_directory`: the
directory of input.path, whatever the working directory of a worker), on the input's own
store: `images/a.jpg` beside `s3://bucket/set/rows.parquet` is `s3://bucket/set/images/a.jpg`."""

import concurrent.futures
import os
import posixpath
from typing import Any, List, Optional

from ..config import ImageSourceConfig, StorageConfig
from ..schema import IMAGE_STRUCT_BYTES, IMAGE_STRUCT_PATH
from ..storage import Location, glob_root, is_local, join, local_path, plain_path, store_root, uri_allowed


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
    `directory` (None: left as it is); URLs and absolute paths as they are."""
    if directory is None or not is_local(uri) or os.path.isabs(plain_path(uri)):
        return uri
    return join(directory, plain_path(uri))


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
    """Image URIs must lie under input.allowed_uri_prefixes and name a regular file of at
    most input.max_image_bytes, read within input.read_timeout_s; bytes given in the column
    are held to the same size limit. Raises ValueError, PermissionError or TimeoutError naming
    the problem."""

    def __init__(self, inputs: ImageSourceConfig, storage: StorageConfig, directory: Optional[str] = None) -> None:
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
        if self.directory is None and is_local(uri) and not os.path.isabs(plain_path(uri)):
            raise ValueError(f"{where} is the relative path {uri!r}, and the input's directory it would be read "
                             "against is not known here: give absolute paths or URIs")
        written, uri = uri, resolve_image_uri(uri, self.directory)
        if written != uri:  # every message names what the data says and what was read
            where = f"{where} {written!r} (a relative path, read against the input's directory)"
        prefixes = self.inputs.allowed_uri_prefixes
        if prefixes is not None and not uri_allowed(uri, prefixes):
            raise PermissionError(f"{uri} lies outside input.allowed_uri_prefixes ({', '.join(prefixes)})"
                                  + (f"; {where}" if written != uri else ""))
        location = Location(uri, self.storage)
        fs, path = location.fs, location.path
        limit = self.inputs.max_image_bytes

        def read() -> bytes:
            info = fs.info(path)
            if info.get("type") != "file":  # a FIFO or device would block or never end
                raise ValueError(f"{uri} is not a regular file (type {info.get('type')})")
            if (info.get("size") or 0) > limit:
                raise ValueError(f"{uri} has {info['size']} bytes, more than input.max_image_bytes ({limit})")
            with fs.open(path, "rb") as f:
                return f.read(limit + 1)

        future = self._pool.submit(read)
        try:
            return future.result(timeout=self.inputs.read_timeout_s)
        except FileNotFoundError:
            raise FileNotFoundError(f"{uri} not found ({where})") from None
        except concurrent.futures.TimeoutError:
            # The stuck read keeps its thread; later rows get a fresh one.
            self._pool.shutdown(wait=False)
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="image-read")
            raise TimeoutError(f"reading {uri} took more than input.read_timeout_s ({self.inputs.read_timeout_s:g} s)") from None
