"""Two outputs of the model compared: binarised masks by IoU, tensors by their largest difference."""

import torch


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU per mask of two boolean (N, H, W) stacks; 1 where both are empty."""
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()
