"""Paths and URLs as strings: which are local, how they join and compare, and whether an
image URI lies under an allowed prefix. Nothing here touches a store."""

import os
import posixpath
import re
from typing import Optional, Sequence, Tuple

# hf:// paths (huggingface_hub's HfFileSystem) begin with the repository: `org/name` for a
# model, `datasets/org/name` or `spaces/org/name`, each optionally `@revision`.
_HUB_REPO_TYPES = ("datasets", "spaces")
# Label Studio serves a local file under its LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT at this path
# (`export --label-studio-root` names images so; `import --label-studio-root` reads them back).
LABEL_STUDIO_LOCAL_FILES = "/data/local-files/?d="

# What an image URI may be besides a plain path. fsspec reads more forms (`file:/x`, `local:/x`,
# `~/x`, `simplecache::/x` chains), each naming another file than the same string compared as a
# path names, so image URIs in any other form are refused (`uri_problem`).
IMAGE_URI_PROTOCOLS = ("file", "s3", "gs", "gcs", "http", "https", "hf")
_HTTP = ("http", "https")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
# '.', '/' and '\' percent-encoded, and '%' itself: the HTTP client decodes %2e before it
# resolves '..'; servers may decode the others (or decode twice) before resolving the path.
_ENCODED_SEPARATOR = re.compile(r"%(2e|2f|5c|25)", re.IGNORECASE)


def is_local(url: str) -> bool:
    """Whether `url` is a `file://` URL or a string without "://", taken as a local path.
    Strings fsspec reads otherwise (`file:/x`, `~/x`, `a::b`) count as local here too: image
    URIs in such forms are refused before this is asked (`uri_problem`)."""
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


def uri_problem(uri: str) -> Optional[str]:
    """Why the job refuses to read the image URI `uri` as written, or None. Refused: forms
    other than a plain path or a URL of `IMAGE_URI_PROTOCOLS` (fsspec's chained `a::b`
    protocols, `scheme:` without "//", a leading `~`); URLs with '.' or '..' path segments
    (object stores take them literally, HTTP clients resolve them); and HTTP(S) URLs whose path
    holds a '\\' or a percent-encoded '.', '/', '\\' or '%', which the client or server may
    decode into a path outside the one checked. Such URLs are refused rather than decoded:
    the image's own URL needs none of them."""
    forms = f"give a plain path or one of {', '.join(p + '://' for p in IMAGE_URI_PROTOCOLS)}"
    if "::" in uri:
        return f"unsupported URI form {uri!r} (fsspec reads '::' as a chain of protocols): {forms}"
    if "://" not in uri or uri.startswith("file://"):
        if plain_path(uri).startswith("~"):
            return f"unsupported URI form {uri!r} ('~' is not expanded to a home directory): give an absolute path"
        if "://" not in uri and _SCHEME.match(uri):
            return f"unsupported URI form {uri!r} (a 'scheme:' prefix without '//'): {forms}"
        return None
    scheme = uri.split("://", 1)[0]
    if scheme not in IMAGE_URI_PROTOCOLS:
        return f"unsupported URI form {uri!r} (protocol {scheme!r}): {forms}"
    path = _url_parts(uri)[2]
    if any(segment in (".", "..") for segment in path.split("/")):
        return (f"{uri} has '.' or '..' path segments, which stores and servers resolve differently: give the URL "
                "with them resolved")
    if scheme in _HTTP and ("\\" in path or _ENCODED_SEPARATOR.search(path)):
        return (f"{uri} has a '\\' or a percent-encoded '.', '/', '\\' or '%' in its path, which the client or "
                "server may decode into another path than the one checked: write them unencoded")
    return None


def uri_allowed(uri: str, prefixes: Sequence[str]) -> bool:
    """Whether an image URI may be read: in a form the job reads (`uri_problem`) and under one
    of the prefixes. Local paths must be absolute (`resolve_image_uri` resolves relative ones
    against the input's directory, never the working directory) and are compared after
    resolving symlinks and '..'; URLs by scheme, host and path, at path-segment bounds."""
    if uri_problem(uri) is not None:
        return False
    if is_local(uri):
        if not os.path.isabs(plain_path(uri)):
            return False
        path = local_path(uri)
        return any(is_local(p) and within(path, local_path(p)) for p in prefixes)
    origin, path = _normal_url(uri)
    return any(_normal_url(p)[0] == origin and within(path, _normal_url(p)[1])
               for p in prefixes if not is_local(p))


def resolve_url_dots(url: str) -> str:
    """A URL with the '.' and '..' segments of its path resolved (as a relative path joined to
    a URL directory is meant), never above the URL's host or bucket."""
    scheme, host, path, tail = _url_parts(url)
    return f"{scheme}://{host}{posixpath.normpath('/' + path)}{tail}"


def _url_parts(url: str) -> Tuple[str, str, str, str]:
    """(scheme, host, path without its leading '/', tail): an HTTP URL's path ends before its
    query or fragment (the tail), which the client does not send as part of the path."""
    scheme, rest = url.split("://", 1)
    host, _, path = rest.partition("/")
    tail = ""
    if scheme in _HTTP:
        cut = len(re.split(r"[?#]", path, maxsplit=1)[0])
        path, tail = path[:cut], path[cut:]
    return scheme, host, path, tail


def _normal_url(url: str) -> Tuple[str, str]:
    """(scheme://host, path) with the scheme and host lower-cased and '..' resolved."""
    scheme, host, path, _ = _url_parts(url)
    return f"{scheme.lower()}://{host.lower()}", posixpath.normpath("/" + path)


def glob_root(path: str) -> str:
    """The directory part of a glob (an input path may be one); the path itself otherwise."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if any(ch in part for ch in "*?["):
            return "/".join(parts[:i]) or "/"
    return path
