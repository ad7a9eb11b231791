"""Segment-everything on the model actors: the decode stage's crops of a row (the whole
image, then those of the crop layers, each resized) handed to samhq_core's automatic mask
generator (`SamHQAutomaticMaskGenerator.generate_prepared`), the crops of all of a batch's
rows at once, and its records added to the rows' results."""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from samhq_core import MaskSource, SamHQModel, SamHQProcessor
from samhq_core.automatic import PreparedCrop, PreparedImage, SamHQAutomaticMaskGenerator
from samhq_core.automatic import records as record
from samhq_core.automatic.crops import crop_boxes

from ..config import EverythingConfig
from ..schema import FOUND_BY_EVERYTHING
from .mask_result import MaskResult


class EverythingMasks:
    """The generator with the job's `everything` parameters, on the model's device.

    Arguments:
      model (SamHQModel): the actor's model.
      processor (SamHQProcessor): its processor (the decode stage's resize).
      config (EverythingConfig): the parameters.
      mask_source (MaskSource): which mask the HQ decoder outputs, as for the prompts' masks.
      encoder_batch_size (int): crops encoded at once.
    """

    def __init__(self, model: SamHQModel, processor: SamHQProcessor, config: EverythingConfig,
                 mask_source: MaskSource, encoder_batch_size: int) -> None:
        self.config = config
        self.generator = SamHQAutomaticMaskGenerator(
            model, points_per_side=config.points_per_side, points_per_batch=config.points_per_batch,
            pred_iou_thresh=config.pred_iou_thresh, stability_score_thresh=config.stability_score_thresh,
            stability_score_offset=config.stability_score_offset, box_nms_thresh=config.box_nms_thresh,
            crop_n_layers=config.crop_n_layers, crop_nms_thresh=config.crop_nms_thresh,
            crop_overlap_ratio=config.crop_overlap_ratio,
            crop_n_points_downscale_factor=config.crop_n_points_downscale_factor,
            min_mask_region_area=config.min_mask_region_area, output_mode="uncompressed_rle",
            mask_source=mask_source, encoder_batch_size=encoder_batch_size, processor=processor)

    def prepared(self, pixels: bytes, resized_hw: Tuple[int, int], original_hw: Tuple[int, int],
                 crop_pixels: Sequence[bytes], crop_hw: Sequence[Sequence[int]],
                 embeddings: Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]] = None) -> PreparedImage:
        """A row's crops as the generator takes them.

        Arguments:
          pixels (bytes): the whole image resized, row-major (h, w, 3) uint8.
          resized_hw (tuple(int, int)): its (h, w).
          original_hw (tuple(int, int)): the image's (H, W), as shown.
          crop_pixels (sequence of bytes): the crop layers' crops resized, in `crop_boxes` order.
          crop_hw (sequence of [h, w]): their sizes.
          embeddings (tuple(torch.Tensor, torch.Tensor or None) or None): the whole image's
            image and intermediate embeddings, when its prompts were decoded: not encoded again.

        Returns:
          (PreparedImage): the image's size and crops.
        """
        boxes, layers = crop_boxes(original_hw, self.config.crop_n_layers, self.config.crop_overlap_ratio)
        if len(crop_pixels) != len(boxes) - 1 or len(crop_hw) != len(crop_pixels):
            raise ValueError(f"the row has {len(crop_pixels)} crops after the whole image, not the "
                             f"{len(boxes) - 1} of everything.crop_n_layers {self.config.crop_n_layers}")
        images = [_pixels(pixels, resized_hw), *(_pixels(p, (hw[0], hw[1])) for p, hw in zip(crop_pixels, crop_hw, strict=True))]
        given = [embeddings] + [None] * (len(images) - 1)
        return PreparedImage(original_hw, [PreparedCrop(box, layer, image, known) for box, layer, image, known
                                           in zip(boxes, layers, images, given, strict=True)])

    def generate(self, images: Sequence[PreparedImage]) -> List[List[Dict[str, Any]]]:
        """Per image, the generator's records (uncompressed RLE segmentations)."""
        return self.generator.generate_prepared(images, self.config.multimask_output)


def add_records(result: MaskResult, records: Sequence[Dict[str, Any]]) -> None:
    """Add a row's segment-everything records to its result, as the output's per-mask values."""
    for found in records:
        area = int(found[record.AREA])
        x, y, w, h = found[record.BBOX]  # the inclusive box's x1 - x0: the tight box is a pixel larger
        result.add(np.asarray(found[record.SEGMENTATION]["counts"], dtype=np.int64), found[record.PREDICTED_IOU],
                   found[record.STABILITY_SCORE], area, [float(x), float(y), float(w + 1), float(h + 1)] if area else
                   [0.0, 0.0, 0.0, 0.0], None, FOUND_BY_EVERYTHING, [float(v) for v in found[record.POINT_COORDS][0]],
                   [float(v) for v in found[record.CROP_BOX]])


def _pixels(data: bytes, hw: Tuple[int, int]) -> np.ndarray:
    # A writable copy: torch refuses to share a read-only buffer without a warning.
    return np.frombuffer(bytearray(data), dtype=np.uint8).reshape(hw[0], hw[1], 3)

