"""Mask losses of SAM-HQ training: sigmoid binary cross-entropy plus dice on points drawn
mostly where the prediction is uncertain, as the official training does, and the mask IoU
that the IoU head regresses to."""

import torch
from torch.nn import functional as F


def mask_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE + dice, averaged over masks.

    Arguments:
      logits (torch.Tensor): mask logits (n, H, W).
      targets (torch.Tensor): (n, H, W) in [0, 1].

    Returns:
      (torch.Tensor): the loss, a float32 scalar.
    """
    logits, targets = logits.flatten(1).float(), targets.flatten(1).float()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1)
    probs = logits.sigmoid()
    dice = 1 - (2 * (probs * targets).sum(1) + 1) / (probs.sum(1) + targets.sum(1) + 1)
    return (bce + dice).mean()


def mask_iou(logits: torch.Tensor, targets: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """IoU of the thresholded logits with binary targets; an empty prediction of an empty
    target counts as 1.

    Arguments:
      logits (torch.Tensor): mask logits (n, H, W).
      targets (torch.Tensor): (n, H, W); above 0.5 is mask.
      threshold (float): logits above it are mask.

    Returns:
      (torch.Tensor): IoU (n,), float32.
    """
    pred, gt = (logits > threshold).flatten(1), (targets > 0.5).flatten(1)
    inter, union = (pred & gt).sum(1).float(), (pred | gt).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def sample_points(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear values of maps at points.

    Arguments:
      maps (torch.Tensor): (n, H, W).
      coords (torch.Tensor): (n, K, 2) as (x, y), in [0, 1] across the map.

    Returns:
      (torch.Tensor): the values (n, K).
    """
    grid = coords[:, None] * 2 - 1  # n x 1 x K x 2 in grid_sample's [-1, 1]
    return F.grid_sample(maps[:, None], grid, align_corners=False)[:, 0, 0]


def point_sampled_mask_loss(low_res_logits: torch.Tensor, targets: torch.Tensor, num_points: int,
                            oversample: float = 3.0, importance: float = 0.75) -> torch.Tensor:
    """BCE + dice on `num_points` points per mask, most of them where the prediction is
    least certain, as the official SAM-HQ training does (after PointRend): the loss lands
    on boundaries and thin parts instead of the easy interior and background.

    Arguments:
      low_res_logits (torch.Tensor): mask logits (n, h, w).
      targets (torch.Tensor): (n, H, W) in [0, 1], at any resolution.
      num_points (int): points per mask.
      oversample (float): candidates drawn uniformly per point, among which the most
        uncertain (logits nearest 0) are picked.
      importance (float): the share of the points taken from the most uncertain candidates;
        the rest are drawn uniformly.

    Returns:
      (torch.Tensor): the loss, a float32 scalar.
    """
    n, device = low_res_logits.shape[0], low_res_logits.device
    with torch.no_grad():
        candidates = torch.rand(n, int(num_points * oversample), 2, device=device)
        uncertainty = -sample_points(low_res_logits.detach().float(), candidates).abs()
        uncertain = int(num_points * importance)
        top = uncertainty.topk(uncertain, dim=1).indices
        coords = torch.cat([candidates.gather(1, top[..., None].expand(-1, -1, 2)),
                            torch.rand(n, num_points - uncertain, 2, device=device)], dim=1)
        labels = sample_points(targets.float(), coords)
    return mask_loss(sample_points(low_res_logits.float(), coords), labels)
