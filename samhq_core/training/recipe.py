"""The two training phases of HQ-SAM on one model, and one optimisation step.

- "sam": the SAM part (image encoder, prompt encoder, SAM mask decoder) trains; the HQ
  parameters are frozen and unused. Loss on SAM's own mask (`MaskSource.SAM_ONLY`) plus the IoU head's
  regression to the mask's real IoU. This stands in for SAM's pre-training.
- "hq": everything is frozen but the HQ parameters (HQ token, its MLP, compress_vit_feat,
  embedding_encoder, embedding_maskfeature), as in the SAM-HQ paper; the encoder then runs
  without autograd. Loss on the HQ token's mask (`MaskSource.HQ_ONLY`).
"""

import functools
import math
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch.nn import functional as F

from ..mask_source import MaskSource
from ..modeling import SamHQModel
from .losses import mask_iou, point_sampled_mask_loss

PHASES = ("sam", "hq")
PHASE_MASK_SOURCE = {"sam": MaskSource.SAM_ONLY, "hq": MaskSource.HQ_ONLY}  # the mask each phase trains
# Points per mask of the loss: a sixteenth of a 256 x 256 target, as the official
# training takes 112 x 112 of its 1024 x 1024 ones (about 1%), but more for the small frame.
LOSS_POINTS = 64 * 64
HQ_PARAMETER_PREFIXES = (
    "mask_decoder.hf_token.",
    "mask_decoder.hf_mlp.",
    "mask_decoder.compress_vit_feat.",
    "mask_decoder.embedding_encoder.",
    "mask_decoder.embedding_maskfeature.",
)


def is_hq_parameter(name: str) -> bool:
    """Whether a parameter belongs to the HQ part of the model, which the "hq" phase trains.

    Arguments:
      name (str): the parameter's name in SamHQModel.named_parameters().

    Returns:
      (bool): whether it starts with one of HQ_PARAMETER_PREFIXES.
    """
    return name.startswith(HQ_PARAMETER_PREFIXES)


def set_trainable(model: SamHQModel, phase: str) -> List[torch.nn.Parameter]:
    """Freeze the model for a phase: "sam" trains every parameter but the HQ ones, "hq" the
    HQ ones alone.

    Arguments:
      model (SamHQModel): the model; its parameters' requires_grad is set.
      phase (str): "sam" or "hq".

    Returns:
      (list(torch.nn.Parameter)): the parameters that train.

    Raises:
      ValueError: for an unknown phase, or "hq" on a plain SAM model.
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    if phase == "hq" and not model.mask_decoder.hq:
        raise ValueError("the 'hq' phase needs an HQ model; this checkpoint is plain SAM")
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(is_hq_parameter(name) == (phase == "hq"))
        if param.requires_grad:
            trainable.append(param)
    return trainable


@dataclass
class Batch:
    """B images in the model frame, with per image P_b boxes and their target masks.

    pixel_values (B, 3, S, S) as SamHQProcessor makes them; boxes[b] (P_b, 4) xyxy in the
    S x S frame; targets[b] (P_b, S, S) in [0, 1], zero on the padding.
    """

    pixel_values: torch.Tensor
    boxes: List[torch.Tensor]
    targets: List[torch.Tensor]

    def to(self, device: torch.device) -> "Batch":
        """Move every tensor of the batch to `device`.

        Arguments:
          device (torch.device): where the tensors go.

        Returns:
          (Batch): a new batch with the moved tensors.
        """
        return Batch(self.pixel_values.to(device), [b.to(device) for b in self.boxes], [t.to(device) for t in self.targets])


def phase_logits(model: SamHQModel, phase: str, image_embeddings: torch.Tensor, early: torch.Tensor,
                 boxes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Predict masks for one image's boxes from the mask source that `phase` trains, all
    boxes in one chunk.

    Arguments:
      model (SamHQModel): the model.
      phase (str): "sam" or "hq".
      image_embeddings (torch.Tensor): the image's embeddings (1, C, h, w).
      early (torch.Tensor): its intermediate embeddings (1, h, w, vit_dim).
      boxes (torch.Tensor): (P, 4) xyxy in the S x S frame.

    Returns:
      (torch.Tensor): mask logits (P, 1, s, s).
      (torch.Tensor): IoU predictions (P,).
    """
    out = model(image_embeddings=image_embeddings, intermediate_embeddings=early, input_boxes=boxes[None],
                multimask_output=False, mask_source=PHASE_MASK_SOURCE[phase],
                prompt_chunk_size=len(boxes))
    return out.pred_masks[0], out.iou_scores[0, :, 0]


def batch_loss(model: SamHQModel, phase: str, batch: Batch) -> Dict[str, torch.Tensor]:
    """Loss of one batch for `phase`. The IoU head's loss is the "sam" phase's alone; in the
    "hq" phase the image encoder runs without autograd.

    Arguments:
      model (SamHQModel): the model.
      phase (str): "sam" or "hq".
      batch (Batch): the images, boxes and targets, on the model's device.

    Returns:
      (dict(str, torch.Tensor)): scalars {"loss", "mask_loss", "iou_loss", "iou"}: "loss" is
        the sum of the two losses, and "iou" the mean IoU of the thresholded masks, for
        progress reports.

    Raises:
      ValueError: for a batch without boxes.
    """
    size = model.config.vision_config.image_size
    with torch.set_grad_enabled(phase == "sam" and torch.is_grad_enabled()):
        embeddings, early = model.get_image_embeddings(batch.pixel_values)
    mask_losses, iou_losses, ious = [], [], []
    for b, (boxes, targets) in enumerate(zip(batch.boxes, batch.targets, strict=True)):
        if len(boxes) == 0:
            continue
        low_res, predicted_iou = phase_logits(model, phase, embeddings[b : b + 1], early[b : b + 1], boxes)
        logits = F.interpolate(low_res.detach(), (size, size), mode="bilinear", align_corners=False)[:, 0]
        mask_losses.append(point_sampled_mask_loss(low_res[:, 0], targets, LOSS_POINTS) * len(boxes))
        iou = mask_iou(logits, targets)
        ious.append(iou)
        if phase == "sam":
            iou_losses.append(F.mse_loss(predicted_iou, iou, reduction="sum"))
    count = sum(len(b) for b in batch.boxes)
    if count == 0:
        raise ValueError("batch has no boxes")
    losses = {"mask_loss": torch.stack(mask_losses).sum() / count}
    losses["iou_loss"] = torch.stack(iou_losses).sum() / count if iou_losses else torch.zeros(())
    losses["loss"] = losses["mask_loss"] + losses["iou_loss"]
    losses["iou"] = torch.cat(ious).mean()
    return losses


def train_phase(model: SamHQModel, phase: str, batches: Iterator[Batch], steps: int, lr: float,
                weight_decay: float = 0.01, warmup_steps: int = 100, log_every: int = 50,
                log: Optional[Callable[[str], None]] = None) -> List[Dict[str, float]]:
    """Train `phase` for `steps` AdamW steps (linear warm-up, cosine decay to zero, gradient
    norm clipped at 1). Logs the running loss and mask IoU every `log_every` steps with the
    elapsed time (to stdout unless `log` is given). Leaves the model in eval mode with every
    parameter trainable again.

    Arguments:
      model (SamHQModel): the model, trained in place.
      phase (str): "sam" or "hq".
      batches (Iterator[Batch]): at least `steps` batches, on the model's device.
      steps (int): optimisation steps.
      lr (float): the peak learning rate.
      weight_decay (float): AdamW's weight decay.
      warmup_steps (int): steps of the linear warm-up.
      log_every (int): steps between log records (and after the last step).
      log (callable or None): takes each log line; default print to stdout.

    Returns:
      (list(dict(str, float))): the log records: the losses and IoU of `batch_loss`, averaged
        over the steps since the last record, with the step and the seconds elapsed.
    """
    log = log or functools.partial(print, flush=True)
    params = set_trainable(model, phase)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup_steps)) * 0.5 * (1 + math.cos(math.pi * step / steps)))
    _train_mode(model)
    records, window, start = [], [], time.perf_counter()
    for step in range(1, steps + 1):
        losses = batch_loss(model, phase, next(batches))
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        window.append({k: float(v.detach()) for k, v in losses.items()})
        if step % log_every == 0 or step == steps:
            record = {k: sum(r[k] for r in window) / len(window) for k in window[0]}
            record.update(step=step, seconds=time.perf_counter() - start)
            records.append(record)
            log(f"[{phase}] step {step}/{steps}  loss {record['loss']:.4f}  mask IoU {record['iou']:.3f}  "
                f"{record['seconds']:.0f}s")
            window = []
    model.eval()
    for param in model.parameters():
        param.requires_grad_(True)
    return records


def _train_mode(model: SamHQModel) -> None:
    """Train mode for the modules that train; frozen ones stay in eval mode, so that e.g.
    TinyViT's BatchNorm running statistics do not move while the encoder is frozen."""
    model.train()
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if own and not any(p.requires_grad for p in own):
            module.eval()
