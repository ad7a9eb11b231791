"""SamHQProcessor: images and prompts in, model inputs out; and masks back to images.

Matches the official SamPredictor's preprocessing: the longest side is resized to the
model's input size with PIL bilinear, pixels are normalised, then zero-padded to a square
at the bottom/right; prompt coordinates are scaled by the same factors.
"""

from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.nn import functional as F

from .modeling.prompt_encoder import LABEL_PAD
from .modeling.sam_hq import PIXEL_MEAN, PIXEL_STD

ImageInput = Union[Image.Image, np.ndarray, torch.Tensor]
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ProcessorOutput(dict):
    """Dict of model inputs; `.to(device)` moves every tensor."""

    def to(self, device: Union[str, torch.device]) -> "ProcessorOutput":
        return ProcessorOutput({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.items()})


def preprocess_shape(height: int, width: int, long_side: int) -> Tuple[int, int]:
    """(h, w) after resizing so that the longest side is `long_side`, rounding like the
    official ResizeLongestSide."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_longest_side(array: np.ndarray, long_side: int) -> np.ndarray:
    """uint8 RGB (H, W, 3) → resized so that its longest side is `long_side`, with PIL
    bilinear as the official preprocessing (torchvision's resize of a PIL image)."""
    new_h, new_w = preprocess_shape(array.shape[0], array.shape[1], long_side)
    return np.array(Image.fromarray(array).resize((new_w, new_h), Image.BILINEAR))


def to_rgb_array(image: ImageInput) -> np.ndarray:
    """Any supported image → uint8 RGB array (H, W, 3).

    PIL images get their EXIF orientation applied; any PIL mode is converted (16-bit modes
    scaled to 8 bits); arrays/tensors may be (H, W), (H, W, 1|3|4) or, for tensors,
    (1|3|4, H, W), as uint8, uint16, bool or floats in [0, 1] or [0, 255].
    """
    if isinstance(image, Image.Image):
        image = ImageOps.exif_transpose(image)
        if image.mode in _SIXTEEN_BIT_MODES:
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


class SamHQProcessor:
    """Prepares images and prompts for SamHQModel and post-processes its masks.

    image_size: the model's square input size (`config.vision_config.image_size`).
    """

    def __init__(self, image_size: int = 1024) -> None:
        self.image_size = image_size
        self.mask_size = image_size // 4
        self.pixel_mean = torch.tensor(PIXEL_MEAN).view(3, 1, 1)
        self.pixel_std = torch.tensor(PIXEL_STD).view(3, 1, 1)

    def __call__(
        self,
        images: Union[ImageInput, Sequence[ImageInput]],
        input_points: Optional[Any] = None,
        input_labels: Optional[Any] = None,
        input_boxes: Optional[Any] = None,
        input_masks: Optional[Any] = None,
        segmentation_maps: Optional[Any] = None,
        return_tensors: str = "pt",
    ) -> ProcessorOutput:
        """Returns pixel_values (B, 3, S, S), original_sizes and reshaped_input_sizes (B, 2)
        as (h, w), and the prompts rescaled to the S x S frame:

        input_points: per image, per prompt, a list of (x, y) points → (B, P, N, 2); prompts
          with fewer points are padded with label -1 (ignored by the model).
        input_labels: same nesting without the coordinates; 1 foreground, 0 background;
          defaults to all 1.
        input_boxes: per image, a list of (x1, y1, x2, y2) boxes → (B, P, 4).
        input_masks (alias segmentation_maps): per image, per prompt, a mask: either low-res
          logits of the model's mask size (256 x 256 for 1024 inputs) or an array of the
          original image size, which is resized into the model frame → (B, P, 256, 256).
        Prompts are always nested per image first, also for a single image; points may skip
        the prompt level ([[[x, y], ...]] per image = one prompt of those points, as in
        transformers). All images must carry the same number of prompts; coordinates are in
        original pixels.
        """
        if return_tensors != "pt":
            raise ValueError("only return_tensors='pt' is supported")
        if segmentation_maps is not None:
            if input_masks is not None:
                raise ValueError("pass input_masks or segmentation_maps, not both")
            input_masks = segmentation_maps
        if isinstance(images, (Image.Image, np.ndarray, torch.Tensor)):
            images = [images]
        if len(images) == 0:
            raise ValueError("no images given")
        pixel_values, original_sizes, reshaped_sizes = [], [], []
        for image in images:
            pixels, original, reshaped = self.preprocess_image(image)
            pixel_values.append(pixels)
            original_sizes.append(original)
            reshaped_sizes.append(reshaped)
        out = ProcessorOutput(
            pixel_values=torch.stack(pixel_values),
            original_sizes=torch.tensor(original_sizes, dtype=torch.long),
            reshaped_input_sizes=torch.tensor(reshaped_sizes, dtype=torch.long),
        )
        if input_points is not None:
            out["input_points"], out["input_labels"] = self._points(input_points, input_labels, original_sizes)
        elif input_labels is not None:
            raise ValueError("input_labels given without input_points")
        if input_boxes is not None:
            out["input_boxes"] = self._boxes(input_boxes, original_sizes)
        if input_masks is not None:
            out["input_masks"] = self._masks(input_masks, original_sizes)
        return out

    def preprocess_image(self, image: ImageInput) -> Tuple[torch.Tensor, Tuple[int, int], Tuple[int, int]]:
        """One image → normalised, padded (3, S, S) tensor, original (h, w), resized (h, w)."""
        array = to_rgb_array(image)
        h, w = array.shape[:2]
        resized = resize_longest_side(array, self.image_size)
        new_h, new_w = resized.shape[:2]
        pixels = (torch.from_numpy(resized).permute(2, 0, 1).float() - self.pixel_mean) / self.pixel_std
        pixels = F.pad(pixels, (0, self.image_size - new_w, 0, self.image_size - new_h))
        return pixels, (h, w), (new_h, new_w)

    def scale_coords(self, coords: np.ndarray, original_size: Tuple[int, int]) -> np.ndarray:
        """(..., 2) pixel (x, y) in the original image → the model's input frame."""
        h, w = original_size
        new_h, new_w = preprocess_shape(h, w, self.image_size)
        coords = np.array(coords, dtype=np.float64)
        coords[..., 0] *= new_w / w
        coords[..., 1] *= new_h / h
        return coords

    def _points(self, points: Any, labels: Any, sizes: List[Tuple[int, int]]) -> Tuple[torch.Tensor, torch.Tensor]:
        points = _per_image("input_points", points, len(sizes))
        labels = _per_image("input_labels", labels, len(sizes)) if labels is not None else None
        if _nesting_depth(points[0]) == 2:  # image → points: one prompt per image
            points = [[p] for p in points]
            labels = None if labels is None else [[label] for label in labels]
        num_prompts = _same_count("input_points", [len(p) for p in points])
        max_points = max((len(prompt) for image in points for prompt in image), default=0)
        if max_points == 0:
            raise ValueError("input_points has no points: give at least one (x, y) per prompt")
        coords = np.zeros((len(sizes), num_prompts, max_points, 2))
        label_array = np.full((len(sizes), num_prompts, max_points), LABEL_PAD, dtype=np.int64)
        for b, image_points in enumerate(points):
            for p, prompt in enumerate(image_points):
                prompt = np.asarray(prompt, dtype=np.float64).reshape(-1, 2) if len(prompt) else np.zeros((0, 2))
                if not np.isfinite(prompt).all():
                    raise ValueError(f"input_points of image {b}, prompt {p} contain NaN or infinite values")
                coords[b, p, : len(prompt)] = self.scale_coords(prompt, sizes[b])
                if labels is None:
                    label_array[b, p, : len(prompt)] = 1
                else:
                    prompt_labels = np.asarray(labels[b][p], dtype=np.int64).reshape(-1)
                    if len(prompt_labels) != len(prompt):
                        raise ValueError(f"image {b}, prompt {p}: {len(prompt)} points but {len(prompt_labels)} labels")
                    label_array[b, p, : len(prompt)] = prompt_labels
        return torch.from_numpy(coords).float(), torch.from_numpy(label_array)

    def _boxes(self, boxes: Any, sizes: List[Tuple[int, int]]) -> torch.Tensor:
        boxes = _per_image("input_boxes", boxes, len(sizes))
        num_prompts = _same_count("input_boxes", [len(b) for b in boxes])
        out = np.zeros((len(sizes), num_prompts, 4))
        for b, image_boxes in enumerate(boxes):
            array = np.asarray(image_boxes, dtype=np.float64).reshape(-1, 4) if len(image_boxes) else np.zeros((0, 4))
            if not np.isfinite(array).all():
                raise ValueError(f"input_boxes of image {b} contain NaN or infinite values")
            inverted = (array[:, 2] < array[:, 0]) | (array[:, 3] < array[:, 1])
            if inverted.any():
                raise ValueError(f"input_boxes of image {b}: boxes {np.flatnonzero(inverted).tolist()} have x2 < x1 or y2 < y1")
            out[b] = self.scale_coords(array.reshape(-1, 2, 2), sizes[b]).reshape(-1, 4)
        return torch.from_numpy(out).float()

    def _masks(self, masks: Any, sizes: List[Tuple[int, int]]) -> torch.Tensor:
        masks = _per_image("input_masks", masks, len(sizes))
        num_prompts = _same_count("input_masks", [len(m) for m in masks])
        out = torch.zeros(len(sizes), num_prompts, self.mask_size, self.mask_size)
        for b, image_masks in enumerate(masks):
            for p, mask in enumerate(image_masks):
                mask = torch.as_tensor(np.asarray(mask, dtype=np.float32))
                if mask.shape == (self.mask_size, self.mask_size):
                    out[b, p] = mask
                elif mask.shape == tuple(sizes[b]):
                    h, w = preprocess_shape(*sizes[b], self.mask_size)
                    out[b, p, :h, :w] = F.interpolate(mask[None, None], (h, w), mode="bilinear", align_corners=False)[0, 0]
                else:
                    raise ValueError(
                        f"input_masks of image {b}, prompt {p} has shape {tuple(mask.shape)}: expected "
                        f"({self.mask_size}, {self.mask_size}) logits or the image size {tuple(sizes[b])}"
                    )
        if not torch.isfinite(out).all():
            raise ValueError("input_masks contain NaN or infinite values")
        return out

    def post_process_masks(
        self,
        masks: torch.Tensor,
        original_sizes: Union[torch.Tensor, Sequence[Tuple[int, int]]],
        reshaped_input_sizes: Union[torch.Tensor, Sequence[Tuple[int, int]]],
        mask_threshold: float = 0.0,
        binarize: bool = True,
    ) -> List[torch.Tensor]:
        """Low-res logits (B, P, K, s, s) → per image (P, K, H, W) at the original size:
        upsampled to the input frame, padding cropped, resized to the original size, then
        thresholded unless binarize is False. Runs on the masks' device."""
        if masks.ndim != 5:
            raise ValueError(f"masks must be (batch, prompts, masks, h, w), got {tuple(masks.shape)}")
        results = []
        for b in range(masks.shape[0]):
            h, w = (int(x) for x in original_sizes[b])
            rh, rw = (int(x) for x in reshaped_input_sizes[b])
            logits = masks[b].flatten(0, 1)[:, None].float()
            logits = F.interpolate(logits, (self.image_size, self.image_size), mode="bilinear", align_corners=False)
            logits = F.interpolate(logits[..., :rh, :rw], (h, w), mode="bilinear", align_corners=False)
            logits = logits.view(masks.shape[1], masks.shape[2], h, w)
            results.append(logits > mask_threshold if binarize else logits)
        return results


def _per_image(name: str, values: Any, batch: int) -> List[Any]:
    values = values.tolist() if isinstance(values, (np.ndarray, torch.Tensor)) else list(values)
    if len(values) != batch:
        raise ValueError(f"{name} has entries for {len(values)} images, but {batch} images were given")
    return [v.tolist() if isinstance(v, (np.ndarray, torch.Tensor)) else v for v in values]


def _nesting_depth(value: Any) -> int:
    """Depth of a nested list, following first elements: [[x, y]] → 2."""
    depth = 0
    while isinstance(value, (list, tuple)) and len(value):
        value, depth = value[0], depth + 1
    return depth


def _same_count(name: str, counts: List[int]) -> int:
    if len(set(counts)) > 1:
        raise ValueError(f"{name}: every image needs the same number of prompts, got {counts}; process them separately")
    if counts[0] == 0:
        raise ValueError(f"{name} is empty: give at least one prompt per image or leave it out")
    return counts[0]
