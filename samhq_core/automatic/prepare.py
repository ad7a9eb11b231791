"""The CPU part of automatic mask generation for one image: its crops, each cut out and resized
to the model's input size as the processor resizes images. A pipeline runs this on its CPU
workers and hands the result to the generator on the model's device
(`SamHQAutomaticMaskGenerator.generate_prepared`)."""

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..processor import ImageInput, SamHQProcessor, to_rgb_array
from .crops import CropBox, crop_boxes


@dataclass
class PreparedCrop:
    """One crop of an image: where it lies, its layer, and its pixels resized."""

    box: CropBox  # (x0, y0, x1, y1) in the image, x1 and y1 exclusive
    layer: int  # 0 for the whole image
    resized: np.ndarray  # uint8 (h, w, 3): the crop, longest side the model's input size
    # The crop's image embeddings (C, h', w') and intermediate embeddings (or None) when the
    # caller already has them from this model (e.g. the whole image, encoded for its prompts):
    # the generator does not encode the crop again.
    embeddings: Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]] = None


@dataclass
class PreparedImage:
    """An image's crops, ready for the model."""

    size: Tuple[int, int]  # the image's (H, W)
    crops: List[PreparedCrop]


def prepare_image(image: ImageInput, processor: SamHQProcessor, crop_n_layers: int,
                  crop_overlap_ratio: float) -> PreparedImage:
    """Cut an image into the generator's crops and resize each (PIL bilinear, longest side the
    model's input size: `SamHQProcessor.resize_image`), on the CPU.

    Arguments:
      image (PIL.Image.Image, np.ndarray or torch.Tensor): an image `to_rgb_array` takes.
      processor (SamHQProcessor): the model's processor.
      crop_n_layers (int): crop layers after the whole image (`crops.crop_boxes`).
      crop_overlap_ratio (float): the overlap of layer 1's crops (`crops.crop_boxes`).

    Returns:
      (PreparedImage): the image's size and its crops, the whole image first.

    Raises:
      ValueError: for an image `to_rgb_array` refuses, or one so small that a crop is empty.
    """
    array = to_rgb_array(image)  # H x W x 3
    size = (array.shape[0], array.shape[1])
    boxes, layers = crop_boxes(size, crop_n_layers, crop_overlap_ratio)
    crops = []
    for (x0, y0, x1, y1), layer in zip(boxes, layers, strict=True):
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"the {size[1]} x {size[0]} image (width x height) is too small for {crop_n_layers} crop "
                             f"layers: crop {(x0, y0, x1, y1)} of layer {layer} is empty")
        resized, _ = processor.resize_image(array[y0:y1, x0:x1])
        crops.append(PreparedCrop((x0, y0, x1, y1), layer, resized))
    return PreparedImage(size, crops)
