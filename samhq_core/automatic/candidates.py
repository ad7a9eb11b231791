"""The model's masks for the point grid of every crop of a batch, filtered as the official
generator filters them, on the model's device: predicted IoU, then (at each crop's resolution)
the stability score and whether the mask is cut off by the crop's edge. What passes keeps its
scores, box and point, and its mask as run lengths in its image's frame."""

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..mask_source import MaskSource
from ..modeling import SamHQModel
from ..processor import SamHQProcessor, stability_scores
from .crops import CropBox
from .mask_boxes import cut_by_crop_edge, mask_boxes
from .rle import masks_to_rle


@dataclass
class CropPrompts:
    """A crop of the batch as the decoder sees it."""

    box: CropBox  # (x0, y0, x1, y1) in its image
    image_size: Tuple[int, int]  # its image's (H, W)
    resized_size: Tuple[int, int]  # the crop's (h, w) after resizing to the model's input
    points: np.ndarray  # float64 (P, 2) the point prompts, in the crop's pixels

    @property
    def size(self) -> Tuple[int, int]:
        """The crop's (h, w) in pixels of its image.

        Returns:
          (tuple(int, int)): (y1 - y0, x1 - x0).
        """
        x0, y0, x1, y1 = self.box
        return y1 - y0, x1 - x0


@dataclass
class Filters:
    """The official generator's thresholds (its parameters of the same names)."""

    pred_iou_thresh: float
    stability_score_thresh: float
    stability_score_offset: float
    mask_threshold: float = 0.0  # logits above it are mask (the official model's mask_threshold)


@dataclass
class Candidates:
    """Masks that passed the filters, in order: crop by crop, by point prompt within a crop."""

    crop: torch.Tensor  # int64 (n,) each mask's crop among the batch's crops
    iou: torch.Tensor  # float32 (n,) predicted IoU
    stability: torch.Tensor  # float32 (n,) stability score
    boxes: torch.Tensor  # int64 (n, 4) tight boxes (x0, y0, x1, y1), inclusive
    points: np.ndarray  # float64 (n, 2) the point prompt of each mask
    rles: List[np.ndarray]  # run lengths of each mask in its image's frame

    def take(self, index: torch.Tensor) -> "Candidates":
        """Some of the masks, in the order given.

        Arguments:
          index (torch.Tensor): int64 (k,) positions among the n masks.

        Returns:
          (Candidates): the k masks.
        """
        host = index.cpu().numpy()
        return Candidates(self.crop[index], self.iou[index], self.stability[index], self.boxes[index],
                          self.points[host], [self.rles[i] for i in host])

    @classmethod
    def concat(cls, parts: Sequence["Candidates"], device: torch.device) -> "Candidates":
        """The masks of several parts, one after the other.

        Arguments:
          parts (sequence of Candidates): the parts, in order.
          device (torch.device): where the tensors of an empty result are.

        Returns:
          (Candidates): all their masks.
        """
        if not parts:
            empty = torch.empty(0, device=device)
            return cls(empty.long(), empty, empty, empty.long().view(0, 4), np.zeros((0, 2)), [])
        return cls(torch.cat([p.crop for p in parts]), torch.cat([p.iou for p in parts]),
                   torch.cat([p.stability for p in parts]), torch.cat([p.boxes for p in parts]),
                   np.concatenate([p.points for p in parts]), [r for p in parts for r in p.rles])


def find_candidates(
    model: SamHQModel,
    processor: SamHQProcessor,
    embeddings: torch.Tensor,
    intermediate: Optional[torch.Tensor],
    crops: Sequence[CropPrompts],
    filters: Filters,
    points_per_batch: int,
    multimask_output: bool,
    mask_source: MaskSource,
) -> Candidates:
    """Decode every crop's point prompts, points_per_batch at a time (a batch may span crops
    and images), and keep the masks that pass the filters. With an HQ decoder a point gives its
    one official mask (the best of the three candidates, plus the HQ term, or the HQ mask
    alone); with plain SAM's (a plain checkpoint, or mask_source SAM_ONLY) all of its
    candidates, as the official decoders do.

    Arguments:
      model (SamHQModel): the model.
      processor (SamHQProcessor): its processor, for coordinates and upsampling.
      embeddings (torch.Tensor): (C, 256, h, w) the crops' image embeddings, in crop order.
      intermediate (torch.Tensor or None): (C, h, w, vit_dim) their intermediate embeddings.
      crops (sequence of CropPrompts): the C crops.
      filters (Filters): the thresholds.
      points_per_batch (int): point prompts decoded at once.
      multimask_output (bool): whether each point yields its best of 3 candidates (or all 3,
        for plain SAM) or the single-mask output.
      mask_source (MaskSource): which mask an HQ decoder outputs.

    Returns:
      (Candidates): the masks that passed, on the model's device.
    """
    device = embeddings.device
    owners = np.repeat(np.arange(len(crops)), [len(c.points) for c in crops])  # N: each prompt's crop
    points = np.concatenate([c.points for c in crops])  # N x 2, crop pixels
    coords = np.concatenate([processor.scale_coords(c.points, c.size) for c in crops])  # N x 2, input frame
    one_per_point = model.mask_decoder.hq and mask_source != MaskSource.SAM_ONLY
    parts = []
    for start in range(0, len(points), points_per_batch):
        end = min(start + points_per_batch, len(points))
        first, last = int(owners[start]), int(owners[end - 1])
        logits, iou = model.decode_flat(
            embeddings[first : last + 1],
            None if intermediate is None else intermediate[first : last + 1],
            torch.from_numpy(owners[start:end] - first).to(device),
            points=(torch.from_numpy(coords[start:end]).to(device, torch.float32)[:, None, :],
                    torch.ones(end - start, 1, dtype=torch.long, device=device)),
            multimask_output=multimask_output,
            mask_source=mask_source,
            prompt_chunk_size=end - start,
        )  # n x K x s x s, n x K
        if one_per_point:
            logits, iou = logits[:, :1], iou[:, :1]
        per_point = logits.shape[1]
        logits, iou = logits.flatten(0, 1), iou.flatten()  # n*K, point by point
        passed = iou > filters.pred_iou_thresh if filters.pred_iou_thresh > 0 else torch.ones_like(iou, dtype=torch.bool)
        passed_at = torch.nonzero(passed).flatten().cpu().numpy()
        prompt_of = np.repeat(np.arange(start, end), per_point)  # n*K: each mask's prompt
        for crop in range(first, last + 1):
            mine = passed_at[owners[prompt_of[passed_at]] == crop]
            if len(mine):
                index = torch.from_numpy(mine).to(device)
                parts += _crop_masks(processor, crops[crop], crop, logits[index], iou[index], points[prompt_of[mine]],
                                     filters)
    return Candidates.concat(parts, device)


def _crop_masks(processor: SamHQProcessor, crop: CropPrompts, crop_index: int, logits: torch.Tensor,
                iou: torch.Tensor, points: np.ndarray, filters: Filters) -> List[Candidates]:
    """One crop's low-res logits (k, s, s) at the crop's size, filtered by stability and the crop
    edge, as Candidates (one per upsampled chunk)."""
    parts = []
    done = 0
    for full in processor.masks_at_original_size(logits, crop.resized_size, crop.size, binarize=False):  # m x h x w
        chunk = slice(done, done + full.shape[0])
        done += full.shape[0]
        stability = stability_scores(full, filters.mask_threshold, filters.stability_score_offset)
        masks = full > filters.mask_threshold
        boxes = mask_boxes(masks)
        keep = ~cut_by_crop_edge(boxes, crop.box, crop.image_size)
        if filters.stability_score_thresh > 0:
            keep &= stability >= filters.stability_score_thresh
        kept = torch.nonzero(keep).flatten()
        host = kept.cpu().numpy()
        if not len(host):
            continue
        parts.append(Candidates(
            crop=torch.full((len(host),), crop_index, dtype=torch.long, device=logits.device),
            iou=iou[chunk][kept], stability=stability[kept], boxes=boxes[kept], points=points[chunk][host],
            rles=masks_to_rle(masks[kept], crop.box, crop.image_size),
        ))
    return parts
