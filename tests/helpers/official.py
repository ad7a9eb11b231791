"""The official SAM-HQ implementation (PyPI `segment-anything-hq` 0.3), the parity tests'
ground truth, importable without torchvision and timm.

Its package imports torchvision (for a PIL resize and box NMS) and timm (for TinyViT's
DropPath and init helpers), neither of which has a build for the CPU torch used here. This
module registers minimal stand-ins for exactly those names before importing it: the resize
is PIL's bilinear resize, which is what torchvision's `resize` does for PIL images.
"""

import sys
import types

import torch
from PIL import Image


def _stub(name: str, **attrs) -> None:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module


def _tv_resize(image: Image.Image, size) -> Image.Image:
    height, width = size
    return image.resize((width, height), Image.BILINEAR)


def _unavailable(*args, **kwargs):
    raise NotImplementedError("torchvision is not installed; this stand-in only covers SamPredictor")


def _trunc_normal_(tensor: torch.Tensor, std: float = 1.0, **kwargs) -> torch.Tensor:
    return torch.nn.init.trunc_normal_(tensor, std=std)


class _DropPath(torch.nn.Module):
    def __init__(self, drop_prob=None):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        return x


_STUBS = [
    "torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.ops",
    "torchvision.ops.boxes", "timm", "timm.models", "timm.models.layers", "timm.models.registry",
]
_stub("torchvision")
_stub("torchvision.transforms")
_stub("torchvision.transforms.functional", resize=_tv_resize, to_pil_image=Image.fromarray)
_stub("torchvision.ops")
_stub("torchvision.ops.boxes", batched_nms=_unavailable, box_area=_unavailable)
_stub("timm")
_stub("timm.models")
_stub("timm.models.layers", DropPath=_DropPath, to_2tuple=lambda x: (x, x), trunc_normal_=_trunc_normal_)
_stub("timm.models.registry", register_model=lambda fn: fn)

import segment_anything_hq  # noqa: E402
from segment_anything_hq import SamPredictor  # noqa: E402,F401
from segment_anything_hq.modeling import (  # noqa: E402,F401
    ImageEncoderViT,
    MaskDecoderHQ,
    PromptEncoder,
    Sam,
    TinyViT,
    TwoWayTransformer,
)
from segment_anything_hq.modeling.mask_decoder import MaskDecoder  # noqa: E402,F401
from segment_anything_hq.utils.amg import calculate_stability_score  # noqa: E402,F401

sam_model_registry = segment_anything_hq.sam_model_registry

# The official modules hold the names they imported; the stand-ins leave sys.modules so that
# other libraries' "is torchvision installed?" checks see the truth.
for _name in _STUBS:
    sys.modules.pop(_name, None)
