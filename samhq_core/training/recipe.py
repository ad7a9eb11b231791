"""The two training phases of HQ-SAM on one model, a third for fine-tuning the whole decoder,
and the optimisation step by step (`PhaseTrainer`, which a data-parallel run wraps and
checkpoints).

- "sam": the SAM part (image encoder, prompt encoder, SAM mask decoder) trains; the HQ
  parameters are frozen and unused. Loss on SAM's own mask (`MaskSource.SAM_ONLY`) plus the IoU head's
  regression to the mask's real IoU. This stands in for SAM's pre-training.
- "hq": everything is frozen but the HQ parameters (HQ token, its MLP, compress_vit_feat,
  embedding_encoder, embedding_maskfeature), as in the SAM-HQ paper; the encoder then runs
  without autograd. Loss on the HQ token's mask (`MaskSource.HQ_ONLY`).
- "decoder": as "hq", but every mask-decoder parameter trains (SAM's decoder with the HQ
  parameters), for data far from SAM's. The loss is the HQ token's mask alone: what it does
  not depend on (SAM's own mask MLPs, the IoU head) gets no gradient and stays as it was,
  while SAM's own output moves with the shared two-way transformer.
"""

import functools
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch.nn import functional as F

from ..mask_source import MaskSource
from ..modeling import SamHQModel
from .losses import mask_iou, point_sampled_mask_loss

PHASES = ("sam", "hq", "decoder")
# The mask each phase trains.
PHASE_MASK_SOURCE = {"sam": MaskSource.SAM_ONLY, "hq": MaskSource.HQ_ONLY, "decoder": MaskSource.HQ_ONLY}
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


def trains(name: str, phase: str) -> bool:
    """Whether `phase` trains a parameter: "sam" every one but the HQ ones, "hq" the HQ ones
    alone, "decoder" every one of the mask decoder.

    Arguments:
      name (str): the parameter's name in SamHQModel.named_parameters().
      phase (str): one of PHASES.

    Returns:
      (bool): whether the parameter trains in that phase.
    """
    if phase == "decoder":
        return name.startswith("mask_decoder.")
    return is_hq_parameter(name) == (phase == "hq")


def set_trainable(model: SamHQModel, phase: str) -> List[torch.nn.Parameter]:
    """Freeze the model for a phase: only the parameters it `trains` keep requires_grad.

    Arguments:
      model (SamHQModel): the model; its parameters' requires_grad is set.
      phase (str): "sam", "hq" or "decoder".

    Returns:
      (list(torch.nn.Parameter)): the parameters that train.

    Raises:
      ValueError: for an unknown phase, or "hq" or "decoder" (whose loss is on the HQ
        token's mask) on a plain SAM model.
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    if PHASE_MASK_SOURCE[phase] == MaskSource.HQ_ONLY and not model.mask_decoder.hq:
        raise ValueError(f"the {phase!r} phase needs an HQ model; this checkpoint is plain SAM")
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(trains(name, phase))
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
      phase (str): one of PHASES.
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
      phase (str): one of PHASES.
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


class PhaseLoss(torch.nn.Module):
    """`batch_loss` of one phase as a module, so that a data-parallel wrapper
    (DistributedDataParallel) sees the forward pass whose gradients it averages."""

    def __init__(self, model: SamHQModel, phase: str) -> None:
        """
        Arguments:
          model (SamHQModel): the model.
          phase (str): one of PHASES.
        """
        super().__init__()
        self.model, self.phase = model, phase

    def forward(self, batch: Batch) -> Dict[str, torch.Tensor]:
        """The batch's losses.

        Arguments:
          batch (Batch): the images, boxes and targets, on the model's device.

        Returns:
          (dict(str, torch.Tensor)): as `batch_loss`.
        """
        return batch_loss(self.model, self.phase, batch)


class PhaseTrainer:
    """One phase's optimisation of a model, a step at a time: AdamW on the parameters the
    phase trains, a linear warm-up then cosine decay to zero over `steps`, the gradient norm
    clipped at 1. Its `state_dict` (the trained parameters, the optimizer, the schedule and
    the step) restores a run where it stopped."""

    def __init__(self, model: SamHQModel, phase: str, steps: int, lr: float, weight_decay: float = 0.01,
                 warmup_steps: int = 100,
                 wrap: Optional[Callable[[torch.nn.Module], torch.nn.Module]] = None) -> None:
        """Freezes the model for the phase (`set_trainable`) and puts the parts that train in
        train mode.

        Arguments:
          model (SamHQModel): the model, trained in place.
          phase (str): one of PHASES.
          steps (int): optimisation steps of the whole run (the schedule's length).
          lr (float): the peak learning rate.
          weight_decay (float): AdamW's weight decay.
          warmup_steps (int): steps of the linear warm-up.
          wrap (callable or None): wraps the loss module (a `PhaseLoss`) for data-parallel
            training, e.g. ray.train.torch.prepare_model; called after the model is frozen,
            so that it sees only the parameters that train.
        """
        self.model, self.phase, self.steps = model, phase, steps
        self.params = set_trainable(model, phase)
        self.names = [name for name, param in model.named_parameters() if param.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: min(1.0, (step + 1) / max(1, warmup_steps)) * 0.5 * (1 + math.cos(math.pi * step / steps)))
        loss: torch.nn.Module = PhaseLoss(model, phase)
        self.loss = wrap(loss) if wrap is not None else loss
        self.step = 0
        _train_mode(model)

    def train_step(self, batch: Batch) -> Dict[str, float]:
        """One optimisation step.

        Arguments:
          batch (Batch): the images, boxes and targets, on the model's device.

        Returns:
          (dict(str, float)): the losses and IoU of `batch_loss`.
        """
        losses = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.schedule.step()
        self.step += 1
        return {k: float(v.detach()) for k, v in losses.items()}

    def state_dict(self) -> Dict[str, Any]:
        """What resumes the optimisation: the trained parameters, the optimizer's and the
        schedule's state, and the steps done; a copy on the CPU, which later steps leave as
        it is.

        Returns:
          (dict(str, Any)): {"phase", "step", "parameters", "optimizer", "schedule"}.
        """
        parameters = dict(zip(self.names, self.params, strict=True))
        return _cpu_copy({"phase": self.phase, "step": self.step, "parameters": parameters,
                          "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict()})

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Resume from a `state_dict` of a trainer of the same phase, model and optimizer
        settings.

        Arguments:
          state (dict(str, Any)): what `state_dict` returned.

        Raises:
          ValueError: when it was saved by another phase or for other parameters.
        """
        if state["phase"] != self.phase or sorted(state["parameters"]) != sorted(self.names):
            raise ValueError(f"the saved state is of phase {state['phase']!r} with {len(state['parameters'])} trained "
                             f"parameters; this trainer's phase is {self.phase!r} with {len(self.names)}")
        with torch.no_grad():
            for name, param in zip(self.names, self.params, strict=True):
                param.copy_(state["parameters"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.step = state["step"]

    def finish(self) -> None:
        """Leave the model in eval mode with every parameter trainable again."""
        self.model.eval()
        for param in self.model.parameters():
            param.requires_grad_(True)


class ProgressLog:
    """Progress lines of a phase: the losses and IoU averaged over the steps since the last
    line, every `log_every` steps and after the last one, with the seconds since it began."""

    def __init__(self, phase: str, steps: int, log_every: int, log: Callable[[str], None]) -> None:
        """
        Arguments:
          phase (str): the phase, named in each line.
          steps (int): the run's last step.
          log_every (int): steps between lines.
          log (callable): takes each line.
        """
        self.phase, self.steps, self.log_every, self.log = phase, steps, log_every, log
        self.records: List[Dict[str, float]] = []
        self._window: List[Dict[str, float]] = []
        self._start = time.perf_counter()

    def add(self, step: int, losses: Dict[str, float]) -> None:
        """Count one step's losses; log a line when it is due.

        Arguments:
          step (int): the step just done (1 for the first).
          losses (dict(str, float)): what `PhaseTrainer.train_step` returned.
        """
        self._window.append(losses)
        if step % self.log_every == 0 or step == self.steps:
            record = {k: sum(r[k] for r in self._window) / len(self._window) for k in self._window[0]}
            record.update(step=step, seconds=time.perf_counter() - self._start)
            self.records.append(record)
            self.log(f"[{self.phase}] step {step}/{self.steps}  loss {record['loss']:.4f}  mask IoU "
                     f"{record['iou']:.3f}  {record['seconds']:.0f}s")
            self._window = []


def train_phase(model: SamHQModel, phase: str, batches: Iterator[Batch], steps: int, lr: float,
                weight_decay: float = 0.01, warmup_steps: int = 100, log_every: int = 50,
                log: Optional[Callable[[str], None]] = None) -> List[Dict[str, float]]:
    """Train `phase` for `steps` steps of a `PhaseTrainer` in this process. Logs the running
    loss and mask IoU every `log_every` steps with the elapsed time (`ProgressLog`; to stdout
    unless `log` is given). Leaves the model in eval mode with every parameter trainable
    again.

    Arguments:
      model (SamHQModel): the model, trained in place.
      phase (str): one of PHASES.
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
    trainer = PhaseTrainer(model, phase, steps, lr, weight_decay=weight_decay, warmup_steps=warmup_steps)
    progress = ProgressLog(phase, steps, log_every, log or functools.partial(print, flush=True))
    for step in range(1, steps + 1):
        progress.add(step, trainer.train_step(next(batches)))
    trainer.finish()
    return progress.records


def _cpu_copy(value: Any) -> Any:
    """`value` with every tensor in it (in dicts, lists and tuples) copied to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _cpu_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu_copy(v) for v in value)
    return value


def _train_mode(model: SamHQModel) -> None:
    """Train mode for the modules that train; frozen ones stay in eval mode, so that e.g.
    TinyViT's BatchNorm running statistics do not move while the encoder is frozen."""
    model.train()
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if own and not any(p.requires_grad for p in own):
            module.eval()
