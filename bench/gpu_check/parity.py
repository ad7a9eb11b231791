"""1. Parity: CUDA fp32 against the CPU, bf16 against fp32, on the same random weights."""

import copy
from typing import Any, Dict, Tuple

import numpy as np
import torch

from bench.common.compare import mask_iou, max_abs_diff
from bench.gpu_check.clock import Clock, Device
from bench.gpu_check.inputs import describe, random_boxes, scene_pixels
from bench.gpu_check.settings import BF16_MIN_MEAN_IOU, LOGIT_TOLERANCE, Settings
from samhq_core import SamHQModel
from samhq_core.random_weights import random_model


def check_parity(settings: Settings, dev: Device, clock: Clock) -> Tuple[Dict[str, Any], SamHQModel, SamHQModel]:
    """CUDA fp32 vs CPU fp32 and CUDA bf16 vs CUDA fp32 on the same weights; returns the results,
    the CPU model and its copy on the device."""
    config = settings.parity_config
    reference = random_model(config, settings.seed, device="cpu")
    model = copy.deepcopy(reference).to(dev.device)
    side = config.vision_config.image_size
    pixels = scene_pixels(side, settings.seed)
    boxes = torch.from_numpy(random_boxes(np.random.default_rng(settings.seed), settings.parity_boxes, side, side))[None]
    with torch.inference_mode():
        cpu_out = reference(pixel_values=pixels, input_boxes=boxes, multimask_output=False)
        pixels_d, boxes_d = pixels.to(dev.device), boxes.to(dev.device)
        out = model(pixel_values=pixels_d, input_boxes=boxes_d, multimask_output=False)
        with dev.autocast(True):
            bf16 = model(pixel_values=pixels_d, input_boxes=boxes_d, multimask_output=False)
    cpu_embeddings, embeddings = cpu_out.image_embeddings, out.image_embeddings
    masks32, masks16 = out.pred_masks[0, :, 0] > 0, bf16.pred_masks[0, :, 0] > 0
    ious = mask_iou(masks32, masks16)
    result = {
        "model": f"{describe(config)}, {settings.parity_boxes} boxes, one synthetic scene",
        "embeddings": max_abs_diff(embeddings.cpu(), cpu_embeddings),
        "embedding_scale": cpu_embeddings.abs().max().item(),
        "logits": max_abs_diff(out.pred_masks.cpu(), cpu_out.pred_masks),
        "logit_scale": cpu_out.pred_masks.abs().max().item(),
        "iou_scores": max_abs_diff(out.iou_scores.cpu(), cpu_out.iou_scores),
        "bf16_mean_iou": ious.mean().item(),
        "bf16_min_iou": ious.min().item(),
        "foreground": masks32.float().mean().item(),
        "bf16_iou_scores": max_abs_diff(bf16.iou_scores, out.iou_scores),
    }
    result["fp32_passed"] = result["logits"] <= LOGIT_TOLERANCE and result["iou_scores"] <= LOGIT_TOLERANCE
    result["bf16_passed"] = result["bf16_mean_iou"] >= BF16_MIN_MEAN_IOU
    clock.log(f"parity: logits {result['logits']:.2e}, IoU scores {result['iou_scores']:.2e}, "
              f"bf16 mean mask IoU {result['bf16_mean_iou']:.4f}")
    return result, reference, model
