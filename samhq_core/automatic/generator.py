"""SamHQAutomaticMaskGenerator: "segment everything" with a SamHQModel, the official SAM-HQ
generator's algorithm and parameters (segment_anything_hq.SamAutomaticMaskGenerator), batched:

1. each image is cut into crops (layer 0: the whole image) and each crop resized (CPU:
   `prepare`, which a pipeline may run on other workers);
2. the crops of all images are encoded together, encoder_batch_size at a time (a crop given
   with its embeddings is not encoded again);
3. every crop's grid of point prompts is decoded points_per_batch at a time (a batch of points
   may span crops and images); the masks are filtered by predicted IoU, upsampled to their
   crop's size, filtered by stability score and by the crop's edge, thresholded, and coded as
   run lengths (`candidates`), all on the model's device;
4. non-maximum suppression within each crop, then across each image's crops (preferring masks
   of smaller crops), for all crops and images at once on the device (`nms`);
5. optionally, small holes and islands are removed on the host (OpenCV) and NMS runs again
   (`cleanup`);
6. records as the official generator's (`records`).
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..mask_source import MaskSource
from ..modeling import SamHQModel
from ..processor import ImageInput, SamHQProcessor
from .candidates import Candidates, CropPrompts, Filters, find_candidates
from .cleanup import clean_small_regions
from .grid import layer_point_grids
from .nms import box_area, nms_per_segment
from .prepare import PreparedCrop, PreparedImage, prepare_image
from .records import OUTPUT_MODES, mask_records

# Crops encoded at once when the caller does not say: one on a CPU, more on an accelerator.
ENCODER_BATCH_CPU = 1
ENCODER_BATCH_ACCELERATOR = 8


class SamHQAutomaticMaskGenerator:
    """Generates masks for whole images from a grid of point prompts, with the parameters (names
    and defaults) of the official SAM-HQ generator, on the model's device.

    Arguments:
      model (SamHQModel): the model.
      points_per_side (int or None): points along each side of the grid of layer 0 (the
        whole image); points_per_side ** 2 in all. None when point_grids is given.
      points_per_batch (int): point prompts decoded at once.
      pred_iou_thresh (float): masks of predicted IoU up to it are dropped (0: none).
      stability_score_thresh (float): masks of stability score below it are dropped (0: none).
      stability_score_offset (float): how far from the mask threshold (0) the two thresholds of
        the stability score lie.
      box_nms_thresh (float): the box IoU above which NMS within a crop drops the mask of
        lower predicted IoU.
      crop_n_layers (int): crop layers after the whole image; layer i has (2 ** i) ** 2 crops.
      crop_nms_thresh (float): the box IoU above which NMS across an image's crops drops the
        mask of the larger crop.
      crop_overlap_ratio (float): the overlap of layer 1's crops, as a fraction of the image's
        shorter side (later layers overlap less).
      crop_n_points_downscale_factor (int): layer i's grid has points_per_side /
        crop_n_points_downscale_factor ** i points per side.
      point_grids (list(np.ndarray) or None): explicit grids, (n_i, 2) in [0, 1], one per layer,
        instead of points_per_side.
      min_mask_region_area (int): if > 0, holes and islands of fewer pixels are removed from
        each mask (OpenCV), then NMS runs again.
      output_mode (str): "binary_mask" (bool (H, W) arrays), "uncompressed_rle" or "coco_rle"
        (pycocotools' compressed RLE).
      mask_source (MaskSource or str): which mask an HQ decoder outputs; SAM_PLUS_HQ is the
        official HQ generator's (its predictor's hq_token_only=False).
      encoder_batch_size (int or None): crops encoded at once; by default 1 on a CPU, 8 on an
        accelerator.
      processor (SamHQProcessor or None): the model's processor; by default
        `SamHQProcessor.for_model(model)`.
    """

    def __init__(
        self,
        model: SamHQModel,
        points_per_side: Optional[int] = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Optional[List[np.ndarray]] = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        mask_source: MaskSource = MaskSource.SAM_PLUS_HQ,
        encoder_batch_size: Optional[int] = None,
        processor: Optional[SamHQProcessor] = None,
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("pass exactly one of points_per_side and point_grids")
        if points_per_side is not None:
            point_grids = layer_point_grids(points_per_side, crop_n_layers, crop_n_points_downscale_factor)
        assert point_grids is not None
        if len(point_grids) < crop_n_layers + 1 or any(len(g) == 0 for g in point_grids[: crop_n_layers + 1]):
            raise ValueError(f"every layer needs points: {crop_n_layers + 1} layers, grids of "
                             f"{[len(g) for g in point_grids]} points")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {', '.join(OUTPUT_MODES)}, got {output_mode!r}")
        if points_per_batch < 1 or (encoder_batch_size is not None and encoder_batch_size < 1):
            raise ValueError("points_per_batch and encoder_batch_size must be >= 1")
        self.mask_source = MaskSource(mask_source)
        if self.mask_source == MaskSource.HQ_ONLY and not model.mask_decoder.hq:
            raise ValueError("mask_source hq_only needs an HQ checkpoint; this model is plain SAM")
        self.model = model
        self.processor = processor if processor is not None else SamHQProcessor.for_model(model)
        self.point_grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
        self.points_per_batch = points_per_batch
        self.filters = Filters(pred_iou_thresh, stability_score_thresh, stability_score_offset)
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.encoder_batch_size = encoder_batch_size

    def generate(self, image: ImageInput, multimask_output: bool = True) -> List[Dict[str, Any]]:
        """Generate the masks of one image, as the official generator's `generate`.

        Arguments:
          image (PIL.Image.Image, np.ndarray or torch.Tensor): the image (uint8 RGB (H, W, 3)
            as the official takes it, or anything `processor.to_rgb_array` takes).
          multimask_output (bool): whether a point's mask is chosen among the decoder's 3
            candidates (for plain SAM: all 3 are kept) or is its single-mask output.

        Returns:
          (list(dict(str, any))): one record per mask (`records.mask_records`): segmentation,
            area, bbox (XYWH), predicted_iou, point_coords, stability_score, crop_box (XYWH).
        """
        return self.generate_batch([image], multimask_output)[0]

    def generate_batch(self, images: Sequence[ImageInput], multimask_output: bool = True) -> List[List[Dict[str, Any]]]:
        """Generate the masks of several images at once: `prepare` each, then `generate_prepared`.

        Arguments:
          images (sequence of images): the images, as `generate` takes them.
          multimask_output (bool): as in `generate`.

        Returns:
          (list(list(dict(str, any)))): per image, its records, as `generate` returns them.
        """
        return self.generate_prepared([self.prepare(image) for image in images], multimask_output)

    def prepare(self, image: ImageInput) -> PreparedImage:
        """The CPU part for one image: its crops, resized for the model (`prepare.prepare_image`).

        Arguments:
          image (PIL.Image.Image, np.ndarray or torch.Tensor): the image.

        Returns:
          (PreparedImage): its size and resized crops, for `generate_prepared`.
        """
        return prepare_image(image, self.processor, self.crop_n_layers, self.crop_overlap_ratio)

    @torch.inference_mode()
    def generate_prepared(self, images: Sequence[PreparedImage], multimask_output: bool = True
                          ) -> List[List[Dict[str, Any]]]:
        """Generate the masks of prepared images, all their crops together on the model's device.

        Arguments:
          images (sequence of PreparedImage): from `prepare`, with this generator's crop layers.
          multimask_output (bool): as in `generate`.

        Returns:
          (list(list(dict(str, any)))): per image, its records, as `generate` returns them.
        """
        crops = [CropPrompts(c.box, image.size, (c.resized.shape[0], c.resized.shape[1]),
                             self.point_grids[c.layer] * np.array([[c.box[2] - c.box[0], c.box[3] - c.box[1]]]))
                 for image in images for c in image.crops]
        crops_per_image = [len(image.crops) for image in images]
        embeddings, intermediate = self._encode([c for image in images for c in image.crops])
        found = find_candidates(self.model, self.processor, embeddings, intermediate, crops, self.filters,
                                self.points_per_batch, multimask_output, self.mask_source)
        found = self._within_crops(found, crops)
        per_image = np.add.reduceat(np.bincount(found.crop.cpu().numpy(), minlength=len(crops)),
                                    np.cumsum([0, *crops_per_image[:-1]])).tolist()
        if len(crops) > len(images):  # crop layers: duplicates across an image's crops
            found = self._across_crops(found, crops, per_image)
            per_image = self._count_per_image(found, crops_per_image)
        if self.min_mask_region_area > 0:
            found = clean_small_regions(found, [image.size for image in images], per_image, self.min_mask_region_area,
                                        max(self.box_nms_thresh, self.crop_nms_thresh))
            per_image = self._count_per_image(found, crops_per_image)
        return self._records(found, crops, [image.size for image in images], per_image)

    def _encode(self, crops: List[PreparedCrop]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Image and intermediate embeddings (N, C, ...) of the crops: those given with a crop
        as they are, the others encoded from its resized pixels."""
        device = self.model.device
        batch = self.encoder_batch_size or (ENCODER_BATCH_CPU if device.type == "cpu" else ENCODER_BATCH_ACCELERATOR)
        encoded = [c.embeddings for c in crops]
        todo = [i for i, given in enumerate(encoded) if given is None]
        for start in range(0, len(todo), batch):
            part = todo[start : start + batch]
            pixels = torch.stack([self.processor.model_input(torch.from_numpy(crops[i].resized).to(device)) for i in part])
            image_embeddings, early = self.model.get_image_embeddings(pixels)
            for k, i in enumerate(part):
                encoded[i] = (image_embeddings[k], None if early is None else early[k])
        done = [e for e in encoded if e is not None]
        intermediate = [e[1] for e in done if e[1] is not None]
        return torch.stack([e[0] for e in done]), torch.stack(intermediate) if len(intermediate) == len(done) else None

    def _within_crops(self, found: Candidates, crops: List[CropPrompts]) -> Candidates:
        """NMS within each crop (box in the crop, predicted IoU), then boxes and points moved to
        their image's frame."""
        per_crop = np.bincount(found.crop.cpu().numpy(), minlength=len(crops)).tolist()
        keep = torch.cat(nms_per_segment(found.boxes.float(), found.iou, per_crop, self.box_nms_thresh))
        found = found.take(keep)
        origins = torch.tensor([[c.box[0], c.box[1]] for c in crops], dtype=torch.long).view(-1, 2)
        found.boxes = found.boxes + origins.repeat(1, 2).to(found.boxes.device)[found.crop]
        found.points = found.points + origins.numpy()[found.crop.cpu().numpy()]
        return found

    def _across_crops(self, found: Candidates, crops: List[CropPrompts], per_image: List[int]) -> Candidates:
        """NMS across each image's crops, preferring masks of smaller crops (score 1 / crop area)."""
        crop_boxes = torch.tensor([c.box for c in crops], dtype=torch.long).view(-1, 4).to(found.boxes.device)
        scores = 1 / box_area(crop_boxes[found.crop])
        return found.take(torch.cat(nms_per_segment(found.boxes.float(), scores, per_image, self.crop_nms_thresh)))

    @staticmethod
    def _count_per_image(found: Candidates, crops_per_image: List[int]) -> List[int]:
        """How many masks each image has (masks are grouped by image, in order)."""
        image_of_crop = np.repeat(np.arange(len(crops_per_image)), crops_per_image)
        return np.bincount(image_of_crop[found.crop.cpu().numpy()], minlength=len(crops_per_image)).tolist()

    def _records(self, found: Candidates, crops: List[CropPrompts], sizes: List[Tuple[int, int]],
                 per_image: List[int]) -> List[List[Dict[str, Any]]]:
        """The records of each image's masks."""
        boxes, iou, stability = found.boxes.cpu().numpy(), found.iou.cpu().numpy(), found.stability.cpu().numpy()
        crop_of = found.crop.cpu().numpy()
        out, start = [], 0
        for size, count in zip(sizes, per_image, strict=True):
            part = slice(start, start + count)
            start += count
            out.append(mask_records(found.rles[part], size, boxes[part], iou[part], found.points[part],
                                    stability[part], [crops[c].box for c in crop_of[part]], self.output_mode))
        return out
