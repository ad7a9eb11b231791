"""Where a checkpoint's files come from, without torch: a local path, any fsspec URL (remote
files downloaded once per version into a local cache), or a Hugging Face Hub model id, told
from a local path by `hub_model`'s rule and fetched through huggingface_hub and its cache
(HF_HOME, HF_HUB_OFFLINE, HF_TOKEN)."""

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple

import fsspec
from fsspec.implementations.local import LocalFileSystem

HF_WEIGHTS = "model.safetensors"
HF_CONFIG = "config.json"
WEIGHTS_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


def file_sha256(path: str) -> str:
    """SHA-256 of a local file, read in 1 MiB blocks so that a large checkpoint never sits in
    memory whole.

    Arguments:
      path (str): the file.

    Returns:
      (str): the hex digest, lower case.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class HubModel:
    """A model repository on the Hugging Face Hub at a revision (a branch, tag or commit
    hash; None: the repository's default branch)."""

    repo_id: str
    revision: Optional[str] = None

    def __str__(self) -> str:
        return self.repo_id if self.revision is None else f"{self.repo_id}@{self.revision}"


_HUB_FORM = re.compile(r"(?P<repo_id>[^/@]+/[^/@]+)(?:@(?P<revision>[^@\s]+))?")
_HUB_FILES = (HF_CONFIG, HF_WEIGHTS)
_COMMIT = re.compile(r"[0-9a-f]{40}")


def hub_model(src: str, relative_to: Optional[str] = None) -> Optional[HubModel]:
    """The Hub model that checkpoint source `src` names, or None for a URL or a local path.

    The rule, in order:
    1. a source with "://" is an fsspec URL, never a Hub id;
    2. an existing local file or directory is local: a local path always wins (a relative
       one is looked up against `relative_to`, default the working directory);
    3. `namespace/name` or `namespace/name@revision` is a Hub id when `namespace/name` is a
       repository id huggingface_hub accepts (letters, digits, '-', '_' and '.', exactly one
       '/', at most 96 characters, no '--' or '..', no '-' or '.' at either end) and the name
       does not end in a weights-file suffix (.pth, .pt, .bin, .safetensors: a local file that
       is missing, not a repository);
    4. anything else is a local path, a missing one.

    So a bare `name` (the Hub's legacy ids without a namespace) is always a local path, and
    `./namespace/name` always reads the local directory.

    Arguments:
      src (str): a checkpoint source, as `SamHQModel.from_pretrained` takes it.
      relative_to (str or None): the directory a relative local path is looked up against;
        default the working directory.

    Returns:
      (HubModel or None): the repository and revision (None: the default branch), or None
        when `src` is not a Hub id.
    """
    if "://" in src or os.path.exists(src if relative_to is None else os.path.join(relative_to, src)):
        return None
    match = _HUB_FORM.fullmatch(src)
    if match is None or match["repo_id"].endswith(WEIGHTS_SUFFIXES):
        return None
    # Imported on use, here and below: local and fsspec checkpoints never need its imports.
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(match["repo_id"])
    except HFValidationError:
        return None
    return HubModel(match["repo_id"], match["revision"])


def pin_hub_revision(src: str, relative_to: Optional[str] = None) -> str:
    """`src` with a Hub model's branch or tag replaced by the commit it points to now
    (`org/name@<40 hex digits>`), so that every process that loads it later loads the same
    weights; other sources, and ids already at a commit, as they are. Reads config.json
    alone (a few KB, into huggingface_hub's cache).

    Arguments:
      src (str): a checkpoint source, as `SamHQModel.from_pretrained` takes it.
      relative_to (str or None): as `hub_model`'s: where a relative local path is looked up.

    Returns:
      (str): `src` pinned to a commit, or as it is.

    Raises:
      FileNotFoundError: as `from_pretrained`, for a repository, revision or config.json that
        the Hub (or, under HF_HUB_OFFLINE, the cache) does not have.
    """
    hub = hub_model(src, relative_to)
    if hub is None or (hub.revision is not None and _COMMIT.fullmatch(hub.revision)):
        return src
    from huggingface_hub import hf_hub_download

    with _hub_lookup(hub, src):
        config_file = hf_hub_download(hub.repo_id, HF_CONFIG, revision=hub.revision)
    return str(HubModel(hub.repo_id, os.path.basename(os.path.dirname(config_file))))  # snapshots are named by commit


@contextlib.contextmanager
def _hub_lookup(hub: HubModel, src: str) -> Iterator[None]:
    """huggingface_hub's "not found" errors (no such repository, revision or file; not in the
    cache offline) as one FileNotFoundError that names both readings of `src`."""
    from huggingface_hub import constants
    from huggingface_hub.utils import (  # where every version since 0.24 exports them
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError) as e:
        if constants.HF_HUB_OFFLINE:
            where = f"in the Hugging Face cache {constants.HF_HUB_CACHE} (HF_HUB_OFFLINE is set: the Hub is not asked)"
        else:
            where = "on the Hugging Face Hub"
        token = (" (a private or gated repository needs a token: set HF_TOKEN or run `hf auth login`)"
                 if isinstance(e, RepositoryNotFoundError) else "")
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FileNotFoundError(f"checkpoint not found: {src} is neither a local path (no file or directory "
                                f"{os.path.abspath(src)}; ./{src} would name only that) nor a model {hub} {where}{token}: "
                                f"{type(e).__name__}: {reason}") from None


def _hub_snapshot(hub: HubModel, src: str) -> str:
    """The local directory of a Hub model's config.json and model.safetensors: its snapshot
    in huggingface_hub's cache, downloaded there first unless HF_HUB_OFFLINE is set."""
    from huggingface_hub import constants, snapshot_download

    with _hub_lookup(hub, src):
        directory = snapshot_download(hub.repo_id, revision=hub.revision, allow_patterns=list(_HUB_FILES))
    missing = [name for name in _HUB_FILES if not os.path.exists(os.path.join(directory, name))]
    if missing:
        offline = " (HF_HUB_OFFLINE is set: only files already in the cache are there)" if constants.HF_HUB_OFFLINE else ""
        raise FileNotFoundError(f"{src}: the snapshot of Hub model {hub} ({directory}) has no {' or '.join(missing)}"
                                f"{offline}; an HF-layout checkpoint has {HF_CONFIG} and {HF_WEIGHTS}")
    return directory


def hub_header_source(hub: HubModel, src: str) -> Tuple[fsspec.AbstractFileSystem, str]:
    """Where to read a Hub model's config and weights header from: its config.json is
    fetched into huggingface_hub's cache (a few KB), and the weights are the same commit's
    cached model.safetensors, else the Hub's copy, of which HfFileSystem's range requests read
    the header alone.

    Arguments:
      hub (HubModel): the model, as `hub_model` gives it.
      src (str): the source as the caller gave it, for error messages.

    Returns:
      (fsspec.AbstractFileSystem): the local filesystem, or an HfFileSystem.
      (str): the directory that holds config.json and model.safetensors on it: the cache's
        snapshot, or `repo_id@commit` on the Hub.

    Raises:
      FileNotFoundError: for a model the Hub (or the cache offline) does not have, or whose
        weights are not cached while HF_HUB_OFFLINE is set.
    """
    from huggingface_hub import HfFileSystem, constants, hf_hub_download

    with _hub_lookup(hub, src):
        config_file = hf_hub_download(hub.repo_id, HF_CONFIG, revision=hub.revision)
    snapshot = os.path.dirname(config_file)
    commit = os.path.basename(snapshot)  # the cache names each snapshot directory by its commit
    if os.path.exists(os.path.join(snapshot, HF_WEIGHTS)):
        return LocalFileSystem(), snapshot
    if constants.HF_HUB_OFFLINE:
        raise FileNotFoundError(f"{src}: the Hugging Face cache has the {HF_CONFIG} of Hub model {hub} (commit "
                                f"{commit}) but not its {HF_WEIGHTS}, and HF_HUB_OFFLINE is set: download the model "
                                "once with the Hub reachable")
    return HfFileSystem(), f"{hub.repo_id}@{commit}"


def fetch(src: str, cache_dir: Optional[str] = None, storage_options: Optional[dict] = None) -> str:
    """Local path of `src`. A remote file or HF directory is downloaded into the cache once
    per version: the cache key holds the URL and the weights file's size and version stamp
    (ETag / modification time), so a checkpoint replaced at the same URL is fetched again. A
    Hub model id (`hub_model`) is its snapshot directory in huggingface_hub's cache.

    Arguments:
      src (str): a local path, `file://` or other fsspec URL, or Hub model id.
      cache_dir (str or None): the cache of remote files (default ~/.cache/samhq_core).
      storage_options (dict or None): fsspec options for a remote URL.

    Returns:
      (str): the local weights file, or the local HF-layout directory.

    Raises:
      FileNotFoundError: for a source, or a file of an HF directory, that does not exist.
    """
    hub = hub_model(src)
    if hub is not None:
        return _hub_snapshot(hub, src)
    if "://" not in src or src.startswith("file://"):
        path = src[len("file://"):] if src.startswith("file://") else src
        if not os.path.exists(path):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        return path
    fs, remote = fsspec.core.url_to_fs(src, **(storage_options or {}))
    is_file = remote.endswith(WEIGHTS_SUFFIXES)
    names = [os.path.basename(remote)] if is_file else [HF_CONFIG, HF_WEIGHTS]
    remote_files = [remote] if is_file else [f"{remote.rstrip('/')}/{name}" for name in names]
    for remote_file in remote_files:
        if not fs.exists(remote_file):
            raise FileNotFoundError(f"checkpoint file not found: {remote_file} ({src})")
    version = version_stamp(fs.info(remote_files[-1]))
    cache_root = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "samhq_core")
    target = os.path.join(cache_root, hashlib.sha256(f"{src}\n{version}".encode()).hexdigest()[:16])
    os.makedirs(target, exist_ok=True)
    for name, remote_file in zip(names, remote_files, strict=True):
        local = os.path.join(target, name)
        if os.path.exists(local):
            continue
        with tempfile.NamedTemporaryFile(dir=target, delete=False) as tmp:
            with fs.open(remote_file, "rb") as f:
                shutil.copyfileobj(f, tmp, 1 << 22)
        os.replace(tmp.name, local)  # atomic: a cut-off download never looks cached
    return os.path.join(target, names[0]) if is_file else target


def version_stamp(info: Dict) -> str:
    """A file's version as its filesystem reports it: its size plus whatever version fields
    the listing has (an object store's ETag or generation, a local file's modification and
    change times and inode), as one string that changes when the file is replaced.

    Arguments:
      info (dict): the file's entry in an fsspec `info` or detailed listing.

    Returns:
      (str): the stamp (JSON of the fields found).
    """
    fields = ("size", "ETag", "etag", "generation", "LastModified", "last_modified", "mtime", "created", "ino")
    return json.dumps({k: str(info[k]) for k in fields if k in info}, sort_keys=True)


def checkpoint_version(src: str, storage_options: Optional[dict] = None) -> str:
    """The version of the weights a checkpoint source names, without reading them: a Hub
    model's commit (`pin_hub_revision` pins a branch to one), else the `version_stamp` of the
    weights file (and, for an HF-layout directory, of its config.json), local or remote.

    Arguments:
      src (str): a checkpoint source, as `fetch` takes it.
      storage_options (dict or None): fsspec options for a remote URL.

    Returns:
      (str): a string that differs when the weights at `src` were replaced.

    Raises:
      FileNotFoundError: for a source, or a file of an HF directory, that does not exist.
    """
    hub = hub_model(src)
    if hub is not None:
        return f"hub {hub}"
    fs, path = fsspec.core.url_to_fs(src, **({} if "://" not in src or src.startswith("file://")
                                            else storage_options or {}))
    files = [path] if path.endswith(WEIGHTS_SUFFIXES) else [f"{path.rstrip('/')}/{name}" for name in _HUB_FILES]
    stamps = []
    for name in files:
        try:
            stamps.append(version_stamp(fs.info(name)))
        except FileNotFoundError:
            raise FileNotFoundError(f"checkpoint file not found: {name} ({src})") from None
    return " ".join(stamps)
