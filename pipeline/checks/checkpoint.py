"""The checkpoint, from its header alone (a few KB; nothing is downloaded): that it is a SAM or
SAM-HQ checkpoint and what architecture it holds."""

from typing import List, Optional, Tuple

from samhq_core import SamHQConfig

from ..config import StorageConfig
from ..storage import s3_options, store_problem


def check_checkpoint(checkpoint: str, variant: Optional[str], storage: StorageConfig,
                     key: str) -> Tuple[Optional[SamHQConfig], List[str]]:
    """The checkpoint's architecture from its header, or the problem under `key`."""
    from samhq_core import SamHQModel  # torch, for the model's tensor names and shapes

    try:
        return SamHQModel.config_from_pretrained(checkpoint, variant, storage_options=s3_options(storage)), []
    except (FileNotFoundError, ValueError) as e:
        return None, [f"{key}: {e}"]
    except Exception as e:  # noqa: BLE001 - permissions, endpoints, network: report what the store said
        return None, [f"{key}: cannot read {checkpoint}: {store_problem(e, checkpoint)}"]
