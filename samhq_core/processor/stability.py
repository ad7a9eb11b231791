"""SAM's stability score of mask logits."""

import torch


def stability_scores(logits: torch.Tensor, mask_threshold: float = 0.0, offset: float = 1.0) -> torch.Tensor:
    """SAM's stability score of mask logits, as its data engine computes it: the IoU of the
    mask thresholded at mask_threshold + offset with the one thresholded at
    mask_threshold - offset (the first lies inside the second, so it is their pixel-count
    ratio; NaN where both are empty). Runs on the logits' device.

    Arguments:
      logits (torch.Tensor): mask logits (..., H, W).
      mask_threshold (float): the threshold the masks are read at.
      offset (float): how far the two thresholds lie from it.

    Returns:
      (torch.Tensor): scores (...,), float32.
    """
    inner = (logits > mask_threshold + offset).sum(dim=(-1, -2), dtype=torch.int64)
    outer = (logits > mask_threshold - offset).sum(dim=(-1, -2), dtype=torch.int64)
    return inner / outer
