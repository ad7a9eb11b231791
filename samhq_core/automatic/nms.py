"""Greedy non-maximum suppression of boxes, in plain torch on the boxes' own device, with the
results of torchvision.ops.nms and torchvision.ops.batched_nms, bit for bit.

What "the same results" takes, as torchvision's kernels do it:
- boxes are processed by decreasing score, ties in index order (a stable sort, as
  torchvision's CPU and CUDA kernels sort);
- a box is suppressed by a kept box of higher rank whose IoU with it is > iou_threshold; the
  IoU is computed in the boxes' dtype as inter / (area_kept + area_other - inter), and compared
  with the threshold as a float64 on the CPU, rounded to float32 on CUDA (as the CUDA kernel
  takes it);
- batched_nms works as torchvision chooses for the input's size: the coordinate trick (boxes of
  each category shifted apart, one NMS; kept indices in processing order) up to 4,000 box
  values on the CPU and 100,000 elsewhere, else one NMS per category with the kept indices
  sorted by score at the end, by torch's unstable sort as torchvision's Python code calls it
  (so that ties fall as they fall there, on the same device and torch version).

The greedy pass itself, sequential in torchvision, is a fixed point here: keep[r] is "no kept
box of higher rank suppresses box r". Iterating keep <- F(keep) from all-kept settles rank 0
in the first round, rank 1 by the second, and so on; a round that changes nothing has reached
the one fixed point there is, which is the greedy answer. Rounds are whole-matrix operations,
and their number is the length of the longest chain of suppressions, not the number of boxes.
"""

from typing import List, Sequence

import torch

# torchvision.ops.batched_nms's switch from the coordinate trick to one NMS per category, in
# box values (boxes.numel()), for the CPU and for other devices.
VANILLA_ABOVE_CPU = 4000
VANILLA_ABOVE_ACCELERATOR = 100_000
# IoU values computed at once while the suppression matrix is built (4 bytes each, a few times).
_IOU_BLOCK = 1 << 22


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """The areas of boxes, as torchvision.ops.box_area computes them.

    Arguments:
      boxes (torch.Tensor): (..., 4) as (x1, y1, x2, y2).

    Returns:
      (torch.Tensor): (...,) (x2 - x1) * (y2 - y1), in the boxes' dtype.
    """
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision.ops.nms: greedy non-maximum suppression on the boxes' device.

    Arguments:
      boxes (torch.Tensor): (N, 4) as (x1, y1, x2, y2), floating point.
      scores (torch.Tensor): (N,) their scores.
      iou_threshold (float): a box whose IoU with a kept box of higher score is above it is
        dropped.

    Returns:
      (torch.Tensor): int64 (K,) the indices of the kept boxes, by decreasing score (ties in
        index order).
    """
    return nms_groups(boxes, scores, [torch.arange(boxes.shape[0], device=boxes.device)], iou_threshold)[0]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision.ops.batched_nms: non-maximum suppression within each category, with the same
    kept indices in the same order as torchvision's.

    Arguments:
      boxes (torch.Tensor): (N, 4) as (x1, y1, x2, y2), floating point, coordinates >= 0.
      scores (torch.Tensor): (N,) their scores.
      idxs (torch.Tensor): (N,) integer: each box's category; boxes of different categories
        never suppress each other.
      iou_threshold (float): as in `nms`.

    Returns:
      (torch.Tensor): int64 (K,) the indices of the kept boxes, by decreasing score.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    if boxes.numel() <= _vanilla_above(boxes.device):
        # The categories shifted apart (by more than the largest coordinate), then one NMS.
        shift = idxs.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
        return nms(boxes + shift[:, None], scores, iou_threshold)
    categories = [torch.nonzero(idxs == c).flatten() for c in torch.unique(idxs)]
    kept = torch.cat(nms_groups(boxes, scores, categories, iou_threshold))
    return _by_score(kept.sort().values, scores)  # in index order first, as torchvision's mask gives them


def nms_per_segment(boxes: torch.Tensor, scores: torch.Tensor, sizes: Sequence[int],
                    iou_threshold: float) -> List[torch.Tensor]:
    """`batched_nms` with one category, called on each of several consecutive segments of the
    boxes (as the official generator calls it per crop and per image), computed together.

    Arguments:
      boxes (torch.Tensor): (N, 4) as (x1, y1, x2, y2), floating point.
      scores (torch.Tensor): (N,) their scores.
      sizes (sequence of int): the segments' lengths, in order; they sum to N.
      iou_threshold (float): as in `nms`.

    Returns:
      (list(torch.Tensor)): per segment, int64 indices into the N boxes of its kept boxes, in
        the order `batched_nms` on that segment alone returns them.
    """
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    segments = [torch.arange(s, s + n, device=boxes.device) for s, n in zip(starts, sizes, strict=True)]
    kept = nms_groups(boxes, scores, segments, iou_threshold)
    vanilla_above = _vanilla_above(boxes.device)
    return [_by_score(k.sort().values, scores) if 4 * n > vanilla_above else k
            for k, n in zip(kept, sizes, strict=True)]


def nms_groups(boxes: torch.Tensor, scores: torch.Tensor, groups: Sequence[torch.Tensor],
               iou_threshold: float) -> List[torch.Tensor]:
    """`nms` of each group of boxes on its own (boxes[group], scores[group]), computed together:
    the groups are padded to one batch, so that the suppression is one computation for all.

    Arguments:
      boxes (torch.Tensor): (N, 4) as (x1, y1, x2, y2), floating point.
      scores (torch.Tensor): (N,) their scores.
      groups (sequence of torch.Tensor): int64 index tensors into the N boxes.
      iou_threshold (float): as in `nms`.

    Returns:
      (list(torch.Tensor)): per group, int64 indices into the N boxes of its kept boxes, by
        decreasing score, ties in the group's order.
    """
    if not groups:
        return []
    longest = max(int(g.numel()) for g in groups)
    ranked = torch.full((len(groups), longest), -1, dtype=torch.long, device=boxes.device)  # G x M, -1 = padding
    for i, group in enumerate(groups):
        if group.numel():
            ranked[i, : group.numel()] = group[scores[group].sort(dim=0, descending=True, stable=True)[1]]
    valid = ranked >= 0
    sorted_boxes = boxes[ranked.clamp(min=0)]  # G x M x 4
    keep = _greedy_keep(_suppression(sorted_boxes, valid, iou_threshold)) & valid
    return [ranked[i][keep[i]] for i in range(len(groups))]


def _vanilla_above(device: torch.device) -> int:
    return VANILLA_ABOVE_CPU if device.type == "cpu" else VANILLA_ABOVE_ACCELERATOR


def _by_score(indices: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Indices reordered by their scores, decreasing, with torch's unstable sort (torchvision's
    Python call)."""
    return indices[scores[indices].sort(descending=True)[1]]


def _suppression(boxes: torch.Tensor, valid: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """(G, M, M) bool: [g, r, s] when box r of group g (higher rank) would suppress box s, r < s."""
    groups, m, _ = boxes.shape
    area = box_area(boxes)  # G x M
    over = torch.zeros(groups, m, m, dtype=torch.bool, device=boxes.device)
    rank = torch.arange(m, device=boxes.device)
    block = max(1, _IOU_BLOCK // max(1, groups * m))
    for start in range(0, m, block):
        rows = boxes[:, start : start + block, None, :]  # G x b x 1 x 4
        cols = boxes[:, None, :, :]  # G x 1 x M x 4
        width = (torch.minimum(rows[..., 2], cols[..., 2]) - torch.maximum(rows[..., 0], cols[..., 0])).clamp(min=0)
        height = (torch.minimum(rows[..., 3], cols[..., 3]) - torch.maximum(rows[..., 1], cols[..., 1])).clamp(min=0)
        inter = width * height  # G x b x M
        iou = inter / (area[:, start : start + block, None] + area[:, None, :] - inter)
        later = rank[None, start : start + block, None] < rank[None, None, :]
        over[:, start : start + block] = _above(iou, iou_threshold) & later & valid[:, None, :]
    return over & valid[:, :, None]


def _above(iou: torch.Tensor, threshold: float) -> torch.Tensor:
    """IoU > threshold as torchvision's kernel of the device compares: a float64 threshold on the
    CPU, a float32 one on CUDA."""
    if iou.device.type == "cuda":
        return iou > float(torch.tensor(threshold, dtype=torch.float32))
    return iou.double() > threshold


def _greedy_keep(suppresses: torch.Tensor) -> torch.Tensor:
    """The greedy pass over ranked boxes as a fixed point (see the module's docstring):
    suppresses (G, M, M) → keep (G, M) bool."""
    keep = torch.ones(suppresses.shape[:2], dtype=torch.bool, device=suppresses.device)
    for _ in range(suppresses.shape[1] + 1):
        updated = ~(suppresses & keep[:, :, None]).any(dim=1)
        if torch.equal(updated, keep):
            break
        keep = updated
    return keep
