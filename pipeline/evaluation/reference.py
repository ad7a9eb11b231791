"""The bare samhq_core loop the pipeline is measured against: per row SamHQProcessor →
SamHQModel → post_process_masks → COCO RLE, in this process, no Ray. The throughput benchmark
times it; the demo model's evaluation checks that the pipeline gives the same masks."""

import io
from typing import Any, Dict, Iterator, List

import torch
from PIL import Image

from samhq_core import SamHQModel, SamHQProcessor

from ..masks import rle
from ..schema import BOX_ERRORS, ERROR, IOU_SCORES, MASKS


def bare_loop(model: SamHQModel, rows: List[Dict[str, Any]], **forward_kwargs: Any) -> Iterator[Dict[str, Any]]:
    """Result rows in the pipeline's output format (image_id, masks, iou_scores, box_errors,
    error) for input rows with image_id, image (encoded bytes) and boxes (xyxy);
    `forward_kwargs` go to the model (e.g. mask_source=MaskSource.HQ_ONLY), single-mask output."""
    processor = SamHQProcessor.for_model(model)
    for row in rows:
        inputs = processor(Image.open(io.BytesIO(row["image"])), input_boxes=[row["boxes"]])
        with torch.inference_mode():
            out = model(**inputs, multimask_output=False, **forward_kwargs)
        masks = processor.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])
        yield {"image_id": row["image_id"], MASKS: [rle.encode(m.numpy()) for m in masks[0][:, 0]],
               IOU_SCORES: out.iou_scores[0, :, 0].tolist(), BOX_ERRORS: [None] * len(row["boxes"]), ERROR: None}
