"""Local paths in a config made absolute (against `--relative-to`, else the working
directory; refused under `ray job submit`, whose working directory is a temporary copy), Hub
model ids pinned to a commit, and the image source's allowed URI prefixes filled in."""

import os
from typing import List, Optional, Sequence, Tuple, TypeVar

from samhq_core.checkpoint_sources import hub_model, pin_hub_revision

from ..config import ImageColumnsConfig
from ..inputs.images import default_uri_prefixes
from ..storage import is_local, plain_path

# Set by `ray job submit` in the driver's environment: the job runs in a temporary copy of the
# submitted working directory, so relative local paths would point into it.
JOB_SUBMIT_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
ImageSource = TypeVar("ImageSource", bound=ImageColumnsConfig)


def resolve_local_path(value: str, key: str, relative_to: Optional[str]) -> Tuple[str, List[str]]:
    """An absolute form of a local path (URLs are returned as they are), or a problem.

    Relative paths resolve against `relative_to` when given, else against the working
    directory, except under `ray job submit`: the driver then runs in Ray's temporary copy of
    the submitted working directory, deleted with the job, so a relative path is refused."""
    if not is_local(value):
        return value, []
    path = plain_path(value)
    if os.path.isabs(path):
        return value, []
    if relative_to is not None:
        return os.path.normpath(os.path.join(os.path.abspath(relative_to), path)), []
    if JOB_SUBMIT_ENV in os.environ:
        return value, [f"{key}: the relative path {value!r} would resolve inside Ray's temporary copy of the "
                       "working directory under `ray job submit` (deleted with the job); use an absolute path on a "
                       "filesystem every node sees, object storage (s3://...), or add --relative-to \"$PWD\" to the "
                       "entrypoint when the cluster runs on this machine"]
    return os.path.abspath(path), []


def resolve_checkpoint(value: str, key: str, relative_to: Optional[str]) -> Tuple[str, List[str]]:
    """A checkpoint source with its local path made absolute (`resolve_local_path`), or, when
    it is a Hugging Face Hub model id (`org/name[@revision]` that is no existing local path
    against the same directory: `samhq_core.checkpoint_sources.hub_model` has the rule), pinned to the
    commit its revision points to now, so that every model actor, each through its own node's
    Hugging Face cache, loads the same weights and a resumed job sees when they changed."""
    if hub_model(value, relative_to) is not None:
        try:
            return pin_hub_revision(value, relative_to), []
        except FileNotFoundError:
            return value, []  # the checkpoint check names what is missing
    return resolve_local_path(value, key, relative_to)


def with_uri_prefixes(source: ImageSource, urls: Sequence[str], section: str,
                      relative_to: Optional[str]) -> Tuple[ImageSource, List[str]]:
    """An image source whose allowed_uri_prefixes are set (the default of `urls`, the data it
    is read from) and made absolute; with the problems of relative prefixes that cannot be
    resolved. Also for an image_column, which may be a `datasets` Image column whose rows
    without bytes are read from their paths."""
    key = f"{section}.allowed_uri_prefixes"
    if source.allowed_uri_prefixes is None:
        return source.model_copy(update={"allowed_uri_prefixes": [p for u in urls for p in default_uri_prefixes(u)]}), []
    problems: List[str] = []
    prefixes = []
    for prefix in source.allowed_uri_prefixes:
        value, found = resolve_local_path(prefix, key, relative_to)
        prefixes.append(value)
        problems += found
    return source.model_copy(update={"allowed_uri_prefixes": prefixes}), problems
