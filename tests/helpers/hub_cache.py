"""A Hugging Face Hub cache written by hand exactly as huggingface_hub writes it, so that its
real download functions can be run against it offline (HF_HUB_OFFLINE=1):

    <HF_HOME>/hub/models--<org>--<name>/
        blobs/<sha256 of an LFS file, the git blob id of any other>
        snapshots/<commit>/<file>          relative symlinks to ../../blobs/<id>
        refs/<branch>                      the branch's commit hash, without a newline

(`huggingface_hub.scan_cache_dir` checks a cache laid out so.)"""

import hashlib
import os
import tempfile
from typing import Dict, Sequence

import torch

# What the Hub stores in Git LFS (its default .gitattributes), and so names by sha256 in blobs/.
_LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


def repo_folder(hub_cache: str, repo_id: str) -> str:
    return os.path.join(hub_cache, "models--" + repo_id.replace("/", "--"))


def _blob_id(name: str, data: bytes) -> str:
    """The ETag the Hub serves, by which huggingface_hub names the blob: an LFS file's
    sha256, a regular file's git blob sha1."""
    if name.endswith(_LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def add_snapshot(hub_cache: str, repo_id: str, files: Dict[str, bytes], refs: Sequence[str] = ("main",)) -> str:
    """Put one commit of `repo_id` holding `files` into the cache, with `refs` (branches)
    pointing at it; returns the commit hash (made up from the content, 40 hex digits)."""
    folder = repo_folder(hub_cache, repo_id)
    commit = hashlib.sha1(repr((repo_id, sorted((n, _blob_id(n, d)) for n, d in files.items()))).encode()).hexdigest()
    snapshot = os.path.join(folder, "snapshots", commit)
    os.makedirs(os.path.join(folder, "blobs"), exist_ok=True)
    os.makedirs(snapshot, exist_ok=True)
    for name, data in files.items():
        blob = os.path.join(folder, "blobs", _blob_id(name, data))
        with open(blob, "wb") as f:
            f.write(data)
        link = os.path.join(snapshot, name)
        os.symlink(os.path.relpath(blob, os.path.dirname(link)), link)
    for ref in refs:
        path = os.path.join(folder, "refs", ref)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(commit)
    return commit


def add_model(hub_cache: str, repo_id: str, model: torch.nn.Module, refs: Sequence[str] = ("main",),
              names: Sequence[str] = ("config.json", "model.safetensors")) -> str:
    """A commit of `repo_id` with the files of `model.save_pretrained` (those in `names`)."""
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        files = {}
        for name in names:
            with open(os.path.join(directory, name), "rb") as f:
                files[name] = f.read()
    return add_snapshot(hub_cache, repo_id, files, refs)
