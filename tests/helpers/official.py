"""The official SAM-HQ implementation (PyPI `segment-anything-hq` 0.3), the parity tests'
ground truth, importable without torchvision and timm.

Its package imports torchvision (for a PIL resize and box NMS) and timm (for TinyViT's
DropPath and init helpers), neither of which has a build for the CPU torch used here. This
module registers minimal stand-ins for exactly those names before importing it: the resize
is PIL's bilinear resize, which is what torchvision's `resize` does for PIL images; the box
NMS and box area of the automatic mask generator are `reference_batched_nms` and
`reference_box_area` below, straightforward transcriptions of torchvision's CPU kernel (one box
at a time), kept independent of samhq_core's NMS, which the tests compare with them and
bench/automatic_masks.py --torchvision with the real torchvision.
"""

import sys
import types

import numpy as np
import torch
from PIL import Image


def _stub(name: str, **attrs) -> None:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module


def _tv_resize(image: Image.Image, size) -> Image.Image:
    height, width = size
    return image.resize((width, height), Image.BILINEAR)


def reference_box_area(boxes: torch.Tensor) -> torch.Tensor:
    """torchvision.ops.box_area: (x2 - x1) * (y2 - y1) of (N, 4) boxes."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def reference_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision.ops.nms as its CPU kernel runs it: boxes by decreasing score, ties in index
    order (the kernel's stable sort); each box not yet suppressed is kept and suppresses every
    later box whose IoU with it, computed in the boxes' dtype, is above the threshold as a
    float64."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    b = boxes.detach().cpu().numpy()
    x1, y1, x2, y2 = (np.ascontiguousarray(b[:, i]) for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    order = scores.sort(dim=0, descending=True, stable=True)[1].tolist()
    suppressed = [False] * len(order)
    keep = []
    zero = b.dtype.type(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        for rank, i in enumerate(order):
            if suppressed[i]:
                continue
            keep.append(i)
            for j in order[rank + 1 :]:
                if suppressed[j]:
                    continue
                w = max(zero, min(x2[i], x2[j]) - max(x1[i], x1[j]))
                h = max(zero, min(y2[i], y2[j]) - max(y1[i], y1[j]))
                inter = w * h
                if float(inter / (areas[i] + areas[j] - inter)) > iou_threshold:
                    suppressed[j] = True
    return torch.tensor(keep, dtype=torch.long)


def reference_batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                          iou_threshold: float) -> torch.Tensor:
    """torchvision.ops.batched_nms on the CPU: up to 4,000 box values, the categories are shifted
    apart by more than the largest coordinate and run as one NMS; above, one NMS per category
    and the kept indices (in index order) sorted by decreasing score."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    if boxes.numel() <= 4000:
        offsets = idxs.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
        return reference_nms(boxes + offsets[:, None], scores, iou_threshold)
    kept = torch.zeros(len(scores), dtype=torch.bool)
    for category in torch.unique(idxs):
        members = torch.where(idxs == category)[0]
        kept[members[reference_nms(boxes[members], scores[members], iou_threshold)]] = True
    indices = torch.where(kept)[0]
    return indices[scores[indices].sort(descending=True)[1]]


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
_stub("torchvision.ops.boxes", batched_nms=reference_batched_nms, box_area=reference_box_area)
_stub("timm")
_stub("timm.models")
_stub("timm.models.layers", DropPath=_DropPath, to_2tuple=lambda x: (x, x), trunc_normal_=_trunc_normal_)
_stub("timm.models.registry", register_model=lambda fn: fn)

import segment_anything_hq  # noqa: E402
from segment_anything_hq import SamAutomaticMaskGenerator, SamPredictor  # noqa: E402,F401
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
