"""Automatic mask generation ("segment everything"): SamHQAutomaticMaskGenerator, the official
SAM-HQ generator's algorithm on a SamHQModel, batched over images and crops on the model's
device; and the exact plain-torch box NMS it runs on (`nms`)."""

from .generator import SamHQAutomaticMaskGenerator
from .nms import batched_nms, nms
from .prepare import PreparedCrop, PreparedImage, prepare_image

__all__ = ["PreparedCrop", "PreparedImage", "SamHQAutomaticMaskGenerator", "batched_nms", "nms", "prepare_image"]
