"""The checkpoint, from its header alone (a few KB; nothing is downloaded): that it is a SAM or
SAM-HQ checkpoint and what architecture it holds; and, for a local one, its sha256."""

import os
import re
from typing import List, Optional, Tuple

from samhq_core import SamHQConfig
from samhq_core.checkpoint_sources import HF_WEIGHTS, file_sha256, hub_model

from ..config import StorageConfig
from ..storage import is_local, plain_path, s3_options, store_problem

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def check_checkpoint(checkpoint: str, variant: Optional[str], storage: StorageConfig, key: str,
                     sha256: Optional[str] = None) -> Tuple[Optional[SamHQConfig], List[str]]:
    """The checkpoint's architecture from its header, or the problems: under `key` (e.g.
    model.checkpoint), and those of the expected digest `sha256` under the same section's
    sha256 (model.sha256).

    The digest is checked here for a local checkpoint (a path or file:// URL) by hashing its
    weights file, as `SamHQModel.from_pretrained` does: the file itself, or an HF-layout
    directory's model.safetensors. A remote checkpoint (object storage, HTTP, a Hub model) is
    not downloaded to be hashed: the plan stays a read of a few KB, and a copy fetched by the
    driver would serve only actors on the driver's machine. Each model actor checks the digest
    of the copy it loads before reading any tensor, so a wrong remote file fails the actors as
    they start; only the digest's form (64 hex digits) is checked here."""
    from samhq_core import SamHQModel  # torch, for the model's tensor names and shapes

    sha256_key = f"{key.rsplit('.', 1)[0]}.sha256"
    problems = []
    if sha256 is not None and not _SHA256.fullmatch(sha256):
        problems.append(f"{sha256_key}: {sha256!r} is not a SHA-256 digest (64 hex digits, as `sha256sum` prints)")
        sha256 = None
    try:
        config = SamHQModel.config_from_pretrained(checkpoint, variant, storage_options=s3_options(storage))
    except (FileNotFoundError, ValueError) as e:
        return None, [f"{key}: {e}", *problems]
    except Exception as e:  # noqa: BLE001 - permissions, endpoints, network: report what the store said
        return None, [f"{key}: cannot read {checkpoint}: {store_problem(e, checkpoint)}", *problems]
    if sha256 is not None and is_local(checkpoint) and hub_model(checkpoint) is None:
        weights = plain_path(checkpoint)
        if os.path.isdir(weights):
            weights = os.path.join(weights, HF_WEIGHTS)
        actual = file_sha256(weights)
        if actual != sha256.lower():
            problems.append(f"{sha256_key}: {weights} has sha256 {actual}, not the configured {sha256.lower()}: it is "
                            "not the file the digest was taken of (replaced, truncated or corrupted); fetch the "
                            f"checkpoint again, or set {sha256_key} to {actual} if you trust this file")
    return config, problems
