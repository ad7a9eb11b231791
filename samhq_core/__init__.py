"""Native PyTorch SAM-HQ, numerically matching the official SysCV implementation."""

from .config import SamHQConfig, SamHQMaskDecoderConfig, SamHQPromptEncoderConfig, SamHQVisionConfig
from .modeling import SamHQModel, SamHQOutput
from .processor import SamHQProcessor

__all__ = [
    "SamHQConfig",
    "SamHQMaskDecoderConfig",
    "SamHQModel",
    "SamHQOutput",
    "SamHQProcessor",
    "SamHQPromptEncoderConfig",
    "SamHQVisionConfig",
]
