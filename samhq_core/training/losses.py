"""Mask losses of SAM-HQ training: sigmoid binary cross-entropy plus dice, as the official
training uses, and the IoU-head regression target."""

import torch
from torch.nn import functional as F


def mask_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE + dice, averaged over masks. logits and targets (n, H, W); targets in [0, 1]."""
    logits, targets = logits.flatten(1).float(), targets.flatten(1).float()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1)
    probs = logits.sigmoid()
    dice = 1 - (2 * (probs * targets).sum(1) + 1) / (probs.sum(1) + targets.sum(1) + 1)
    return (bce + dice).mean()


def mask_iou(logits: torch.Tensor, targets: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """IoU (n,) of the thresholded logits with binary targets, both (n, H, W); an empty
    prediction of an empty target counts as 1."""
    pred, gt = (logits > threshold).flatten(1), (targets > 0.5).flatten(1)
    inter, union = (pred & gt).sum(1).float(), (pred | gt).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
