"""Paths and URLs as strings: which are local, how they join and compare, and whether an
image URI lies under an allowed prefix. Nothing here touches a store."""

import os
import posixpath
from typing import Sequence, Tuple

# hf:// paths (huggingface_hub's HfFileSystem) begin with the repository: `org/name` for a
# model, `datasets/org/name` or `spaces/org/name`, each optionally `@revision`.
_HUB_REPO_TYPES = ("datasets", "spaces")


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def plain_path(url: str) -> str:
    """A local URL (`file://...` or a plain path) as a plain path, as written."""
    return url[len("file://"):] if url.startswith("file://") else url


def local_path(url: str) -> str:
    """A local URL (`file://...` or a plain path) as a path, symlinks and '..' resolved."""
    return os.path.realpath(plain_path(url))


def join(url: str, name: str) -> str:
    """`name` inside the directory `url` (a path or URL)."""
    return f"{url.rstrip('/')}/{name}"


def basename(path: str) -> str:
    """The last part of a path or URL (a listed directory's too, which fsspec may end in "/")."""
    return path.rstrip("/").rsplit("/", 1)[-1]


def within(inner: str, outer: str) -> bool:
    """Whether path `inner` is `outer` or lies under it (at path-segment bounds)."""
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def store_root(url: str) -> str:
    """The top of a non-local URL, as `scheme://top/`: the bucket of an object store (the
    host of an HTTP URL), or the Hub repository of an hf:// path (with its @revision)."""
    scheme, rest = url.split("://", 1)
    parts = rest.split("/")
    depth = (3 if parts[0] in _HUB_REPO_TYPES else 2) if scheme == "hf" else 1
    return f"{scheme}://{'/'.join(parts[:depth])}/"


def uri_allowed(uri: str, prefixes: Sequence[str]) -> bool:
    """Whether an image URI lies under one of the prefixes. Local paths are compared after
    resolving symlinks and '..'; URLs after normalising their path, at path-segment bounds."""
    if is_local(uri):
        path = local_path(uri)
        return any(is_local(p) and within(path, local_path(p)) for p in prefixes)
    normal = _normal_url(uri)
    return any(_normal_url(p)[0] == normal[0] and within(normal[1], _normal_url(p)[1])
               for p in prefixes if not is_local(p))


def _normal_url(url: str) -> Tuple[str, str]:
    """(scheme://host, path) with the scheme and host lower-cased and '..' resolved."""
    scheme, rest = url.split("://", 1)
    host, _, path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}", posixpath.normpath("/" + path)


def glob_root(path: str) -> str:
    """The directory part of a glob (an input path may be one); the path itself otherwise."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if any(ch in part for ch in "*?["):
            return "/".join(parts[:i]) or "/"
    return path
