"""Native PyTorch SAM-HQ, numerically matching the official SysCV implementation.

The model and processor are imported on first use, so that what needs only the configs (a
job's checks, the command line's help) does not import torch."""

import importlib
from typing import TYPE_CHECKING, Any

from .config import SamHQConfig, SamHQMaskDecoderConfig, SamHQPromptEncoderConfig, SamHQVisionConfig
from .mask_source import MaskSource

if TYPE_CHECKING:
    from .automatic import SamHQAutomaticMaskGenerator
    from .modeling import SamHQModel, SamHQOutput
    from .processor import SamHQProcessor

_LAZY = {"SamHQModel": ".modeling", "SamHQOutput": ".modeling", "SamHQProcessor": ".processor",
         "SamHQAutomaticMaskGenerator": ".automatic"}

__all__ = [
    "MaskSource",
    "SamHQAutomaticMaskGenerator",
    "SamHQConfig",
    "SamHQMaskDecoderConfig",
    "SamHQModel",
    "SamHQOutput",
    "SamHQProcessor",
    "SamHQPromptEncoderConfig",
    "SamHQVisionConfig",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
