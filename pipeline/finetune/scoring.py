"""mIoU and boundary IoU of a checkpoint on held-out examples, for each way of reading its masks
(`MaskSource`): the HQ-token output that fine-tuning trains, SAM + HQ, and SAM alone, the
baseline that HQ training leaves unchanged."""

from typing import Dict, List, Tuple

import numpy as np
import torch

from samhq_core import MaskSource, SamHQModel, SamHQProcessor

from ..masks import rle
from ..masks.metrics import mask_scores
from .data import Example


@torch.inference_mode()
def evaluate(model: SamHQModel, examples: List[Example]) -> Dict[str, Dict[str, float]]:
    """mIoU, mBIoU and boxes per mask source (by its value) over the examples' boxes, the
    masks at the original size."""
    model.eval()
    processor = SamHQProcessor.for_model(model)
    scores: Dict[MaskSource, List[Tuple[float, float]]] = {source: [] for source in MaskSource}
    for e in examples:
        embeddings, early = model.get_image_embeddings(e.pixels[None].to(model.device))
        truth = [rle.decode(t, "validation", "mask") for t in e.truth]
        for source in MaskSource:
            out = model(image_embeddings=embeddings, intermediate_embeddings=early,
                        input_boxes=e.boxes[None].to(model.device), multimask_output=False, mask_source=source)
            masks = torch.cat(list(processor.masks_at_original_size(out.pred_masks[0, :, 0], e.resized_hw,
                                                                    e.original_hw))).cpu().numpy()
            scores[source] += [mask_scores(t, m) for t, m in zip(truth, masks, strict=True)]
    results = {}
    for source, pairs in scores.items():
        iou, biou = np.array(pairs).reshape(-1, 2).mean(0) if pairs else (float("nan"), float("nan"))
        results[source.value] = {"miou": float(iou), "mbiou": float(biou), "boxes": len(pairs)}
    return results
