"""Images as the processor takes them: any of PIL, numpy or torch to an RGB uint8 array
(EXIF orientation applied, 16-bit and grey images mapped), and the longest-side resize the
official SamPredictor does (PIL bilinear)."""

from typing import Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageOps

ImageInput = Union[Image.Image, np.ndarray, torch.Tensor]
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
EXIF_ORIENTATION = 0x0112
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def preprocess_shape(height: int, width: int, long_side: int) -> Tuple[int, int]:
    """The size of an image after resizing so that its longest side is `long_side`, rounding
    like the official ResizeLongestSide.

    Arguments:
      height (int): the image's height.
      width (int): the image's width.
      long_side (int): the longest side after resizing.

    Returns:
      (tuple(int, int)): (h, w), each at least 1.
    """
    scale = long_side * 1.0 / max(height, width)
    # At least 1 pixel: past 2 * long_side : 1 the official rounding gives 0, which no resize takes.
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def resize_longest_side(array: np.ndarray, long_side: int) -> np.ndarray:
    """Resize an image so that its longest side is `long_side`, with PIL bilinear as the
    official preprocessing (torchvision's resize of a PIL image).

    Arguments:
      array (np.ndarray): uint8 RGB (H, W, 3).
      long_side (int): the longest side after resizing.

    Returns:
      (np.ndarray): uint8 RGB (h, w, 3), (h, w) as `preprocess_shape` gives it.
    """
    new_h, new_w = preprocess_shape(array.shape[0], array.shape[1], long_side)
    return np.array(Image.fromarray(array).resize((new_w, new_h), Image.Resampling.BILINEAR))


def to_rgb_array(image: ImageInput) -> np.ndarray:
    """Convert any supported image to a uint8 RGB array.

    Arguments:
      image (PIL.Image.Image, np.ndarray or torch.Tensor): PIL images get their EXIF
        orientation applied; any PIL mode is converted (16-bit modes scaled to 8 bits);
        arrays/tensors may be (H, W), (H, W, 1|3|4) or, for tensors, (1|3|4, H, W), as uint8,
        uint16, bool or floats in [0, 1] or [0, 255].

    Returns:
      (np.ndarray): uint8 RGB (H, W, 3); an alpha channel is dropped.

    Raises:
      ValueError: for another type or shape, an empty image, or NaN or infinite values.
    """
    if isinstance(image, Image.Image):
        image = ImageOps.exif_transpose(image)
        if image.mode in SIXTEEN_BIT_MODES:
            array = np.asarray(image).astype(np.float64) / 257.0
        else:
            return np.asarray(image.convert("RGB"))
    elif isinstance(image, torch.Tensor):
        array = image.detach().cpu().numpy()
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = array.transpose(1, 2, 0)
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise ValueError(f"unsupported image type {type(image).__name__}: pass a PIL image, numpy array or torch tensor")
    return _array_to_rgb(array)


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"image array must be (H, W) or (H, W, 1|3|4), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image is empty: shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        array = array / 257.0
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError("image contains NaN or infinite values")
        if array.max(initial=0) <= 1.0:
            array = array * 255.0
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])
