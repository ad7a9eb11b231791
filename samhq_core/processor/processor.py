"""SamHQProcessor: images and prompts in, model inputs out; and masks back to images (see the
package's docstring for the steps)."""

from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.nn import functional as F

from ..modeling.prompt_encoder import LABEL_NEGATIVE, LABEL_PAD, LABEL_POSITIVE
from ..modeling.sam_hq import PIXEL_MEAN, PIXEL_STD, SamHQModel
from . import prompt_checks as checks
from .images import (
    EXIF_ORIENTATION,
    SIXTEEN_BIT_MODES,
    TRANSPOSING_ORIENTATIONS,
    ImageInput,
    preprocess_shape,
    resize_longest_side,
    to_rgb_array,
)

# Full-resolution logits held at once when masks are upsampled, in pixels (x4 bytes).
MAX_PIXELS_PER_CHUNK = 1 << 26
# The low-res logit a binary mask prompt gives inside the mask (and its negative outside): the
# magnitude of SAM's own confident logits, whose low-res masks are what its mask input was
# trained on. The prompt encoder's first LayerNorm makes the result barely depend on it once
# it is well above the convolution's bias.
MASK_PROMPT_LOGIT = 20.0


class ProcessorOutput(dict):
    """Dict of model inputs; `.to(device)` moves every tensor."""

    def to(self, device: Union[str, torch.device]) -> "ProcessorOutput":
        """Move every tensor to `device`; other values are kept as they are.

        Arguments:
          device (str or torch.device): where the tensors go.

        Returns:
          (ProcessorOutput): a new dict with the moved tensors.
        """
        return ProcessorOutput({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.items()})


class SamHQProcessor:
    """Prepares images and prompts for SamHQModel and post-processes its masks.

    image_size: the model's square input size (`config.vision_config.image_size`).
    """

    def __init__(self, image_size: int = 1024) -> None:
        self.image_size = image_size
        self.mask_size = image_size // 4
        self.pixel_mean = torch.tensor(PIXEL_MEAN).view(3, 1, 1)
        self.pixel_std = torch.tensor(PIXEL_STD).view(3, 1, 1)
        # Copies on each device used, made once: a copy to a GPU per image would sync the host.
        self._normalisers: Dict[torch.device, Tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_pretrained(cls, src: str, variant: Optional[str] = None,
                        storage_options: Optional[dict] = None) -> "SamHQProcessor":
        """The processor for the checkpoint at `src`: the input size comes from its config,
        read from the checkpoint's header without its weights
        (`SamHQModel.config_from_pretrained`).

        Arguments:
          src (str): the checkpoint, what `SamHQModel.from_pretrained` takes.
          variant (str or None): the official variant of a `.pth`; inferred when omitted.
          storage_options (dict or None): fsspec options for fsspec URLs.

        Returns:
          (SamHQProcessor): the processor for the checkpoint's input size.
        """
        config = SamHQModel.config_from_pretrained(src, variant, storage_options=storage_options)
        return cls(config.vision_config.image_size)

    @classmethod
    def for_model(cls, model: SamHQModel) -> "SamHQProcessor":
        """The processor for a loaded model.

        Arguments:
          model (SamHQModel): the model, whose config gives the input size.

        Returns:
          (SamHQProcessor): the processor for that input size.
        """
        return cls(model.config.vision_config.image_size)

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
        """Prepare B images and their prompts for the model, which takes the result as
        `model(**inputs)`. Prompts are always nested per image first, also for a single
        image; points may skip the prompt level ([[[x, y], ...]] per image = one prompt of
        those points, as in transformers). All images must carry the same number of prompts;
        coordinates are in original pixels. Nested lists, arrays and tensors are all taken.

        Arguments:
          images (image or sequence of images): one image or a list of B, each a PIL image,
            np.ndarray or torch.Tensor of a form `to_rgb_array` takes.
          input_points (nested lists or None): per image, per prompt, a list of (x, y) points
            → (B, P, N, 2); prompts with fewer points are padded with label -1 (ignored by
            the model).
          input_labels (nested lists or None): same nesting without the coordinates;
            1 foreground, 0 background; defaults to all 1.
          input_boxes (nested lists or None): per image, a list of (x1, y1, x2, y2) boxes
            → (B, P, 4).
          input_masks (nested lists or None): per image, per prompt, a mask: either low-res
            logits of the model's mask size (256 x 256 for 1024 inputs) or an array of the
            original image size, which is resized into the model frame → (B, P, 256, 256).
          segmentation_maps (nested lists or None): an alias of input_masks; pass one of them.
          return_tensors (str): "pt", the only one supported.

        Returns:
          (ProcessorOutput): pixel_values (B, 3, S, S), original_sizes and
            reshaped_input_sizes (B, 2) as (h, w), and the prompts given, rescaled to the
            S x S frame: input_points (B, P, N, 2) with input_labels (B, P, N), input_boxes
            (B, P, 4), input_masks (B, P, S/4, S/4).

        Raises:
          ValueError: for no or unsupported images, return_tensors other than "pt", both
            input_masks and segmentation_maps, input_labels without input_points, prompts of
            the wrong nesting, shape or values, different prompt counts per image, points
            outside their image or boxes that do not overlap it.
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
        """Preprocess one image: resized, normalised and zero-padded to the model's input.

        Arguments:
          image (PIL.Image.Image, np.ndarray or torch.Tensor): an image `to_rgb_array` takes.

        Returns:
          (torch.Tensor): the normalised, padded (3, S, S) input.
          (tuple(int, int)): the original (h, w).
          (tuple(int, int)): the resized (h, w), before padding.
        """
        resized, original = self.resize_image(image)
        return self.model_input(torch.from_numpy(resized)), original, (resized.shape[0], resized.shape[1])

    def resize_image(self, image: ImageInput, draft: bool = False) -> Tuple[np.ndarray, Tuple[int, int]]:
        """Resize any supported image so that its longest side is the model's input size (PIL
        bilinear, as official), on the CPU.

        Arguments:
          image (PIL.Image.Image, np.ndarray or torch.Tensor): an image `to_rgb_array` takes.
          draft (bool): a JPEG not yet loaded is decoded at the smallest power-of-two
            reduction (1/2, 1/4, 1/8) that keeps it at least the resized size, in the DCT
            domain: several times faster for images of twice the input size or more, with
            pixels that differ from the official preprocessing's
            (bench/results/data_plane.md). The size returned is still the image's own.

        Returns:
          (np.ndarray): uint8 RGB (h, w, 3), resized.
          (tuple(int, int)): the original (h, w).
        """
        if isinstance(image, Image.Image) and image.mode not in SIXTEEN_BIT_MODES:
            # The same pixels as the array path, without its three full-size copies.
            orientation = image.getexif().get(EXIF_ORIENTATION, 1)
            swapped = orientation in TRANSPOSING_ORIENTATIONS
            height, width = (image.width, image.height) if swapped else (image.height, image.width)
            new_h, new_w = preprocess_shape(height, width, self.image_size)
            if draft and image.format == "JPEG":
                image.draft("RGB", (new_h, new_w) if swapped else (new_w, new_h))
            if orientation != 1:
                image = ImageOps.exif_transpose(image)
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            return np.asarray(rgb.resize((new_w, new_h), Image.Resampling.BILINEAR)), (height, width)
        array = to_rgb_array(image)
        return resize_longest_side(array, self.image_size), (array.shape[0], array.shape[1])

    def model_input(self, resized: torch.Tensor) -> torch.Tensor:
        """Turn a resized image into the model's input on the image's device: normalised,
        zero-padded at the bottom and right.

        Arguments:
          resized (torch.Tensor): uint8 RGB (h, w, 3) as `resize_image` makes it, on any
            device.

        Returns:
          (torch.Tensor): the input (3, S, S), float32, on that device.
        """
        h, w = resized.shape[:2]
        mean, std = self._normaliser(resized.device)
        pixels = torch.zeros(3, self.image_size, self.image_size, device=resized.device)
        pixels[:, :h, :w] = (resized.permute(2, 0, 1).float() - mean) / std
        return pixels

    def _normaliser(self, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        """The pixel mean and std (3, 1, 1) on `device`."""
        if device not in self._normalisers:
            self._normalisers[device] = (self.pixel_mean.to(device), self.pixel_std.to(device))
        return self._normalisers[device]

    def target_masks(self, masks: torch.Tensor, resized_size: Tuple[int, int]) -> torch.Tensor:
        """Bring masks at the original size into the model's input frame, resized as the
        image was (bilinear, antialiased) and zero-padded: training targets.

        Arguments:
          masks (torch.Tensor): (P, H, W) in [0, 1], at the original size.
          resized_size (tuple(int, int)): the image's resized (h, w).

        Returns:
          (torch.Tensor): (P, S, S) float32, in [0, 1].
        """
        resized = F.interpolate(masks.float()[:, None], resized_size, mode="bilinear", antialias=True,
                                align_corners=False)[:, 0]
        return F.pad(resized, (0, self.image_size - resized_size[1], 0, self.image_size - resized_size[0]))

    def mask_prompt_logits(self, mask: np.ndarray) -> np.ndarray:
        """A binary mask at the original size as a mask prompt: low-res logits, what the
        official predictor's `mask_input` takes. The mask is resized and padded into the input
        frame as the image is (`target_masks`: bilinear, antialiased; the padding is outside
        the mask), averaged over 4 x 4 cells into the low-res frame, and mapped linearly from
        [0, 1] to [-MASK_PROMPT_LOGIT, +MASK_PROMPT_LOGIT]: +20 inside, -20 outside, in
        between along the edges.

        Arguments:
          mask (np.ndarray): bool or 0/1 (H, W), at the original (EXIF-oriented) size.

        Returns:
          (np.ndarray): float32 (S/4, S/4) logits.
        """
        h, w = mask.shape
        resized = preprocess_shape(h, w, self.image_size)
        frame = self.target_masks(torch.from_numpy(np.asarray(mask, dtype=np.float32))[None], resized)
        inside = F.avg_pool2d(frame[None], self.image_size // self.mask_size)[0, 0]
        return ((2 * inside - 1) * MASK_PROMPT_LOGIT).numpy()

    def scale_boxes(self, boxes: np.ndarray, original_size: Tuple[int, int]) -> np.ndarray:
        """Scale boxes from original pixels to the model's input frame.

        Arguments:
          boxes (np.ndarray): (N, 4) as (x1, y1, x2, y2), in original pixels.
          original_size (tuple(int, int)): the image's (h, w).

        Returns:
          (np.ndarray): (N, 4) float64, in the input frame.
        """
        return self.scale_coords(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def scale_coords(self, coords: np.ndarray, original_size: Tuple[int, int]) -> np.ndarray:
        """Scale pixel coordinates from the original image to the model's input frame.

        Arguments:
          coords (np.ndarray): (..., 2) as (x, y), in original pixels; not modified.
          original_size (tuple(int, int)): the image's (h, w).

        Returns:
          (np.ndarray): (..., 2) float64, in the input frame.
        """
        h, w = original_size
        new_h, new_w = preprocess_shape(h, w, self.image_size)
        coords = np.array(coords, dtype=np.float64)
        coords[..., 0] *= new_w / w
        coords[..., 1] *= new_h / h
        return coords

    def _points(self, points: Any, labels: Any, sizes: List[Tuple[int, int]]) -> Tuple[torch.Tensor, torch.Tensor]:
        points = checks.per_image("input_points", points, len(sizes))
        depth = checks.nesting_depth(points)
        if depth not in (3, 4):
            raise ValueError(f"input_points: expected {checks.POINTS_NESTING}; got {depth} levels: {checks.short(points)}")
        labels = checks.per_image("input_labels", labels, len(sizes)) if labels is not None else None
        if depth == 3:  # image → points: one prompt per image
            points = [[p] for p in points]
            labels = None if labels is None else [[label] for label in labels]
        num_prompts = checks.same_count("input_points", [len(p) for p in points])
        coords = [[[checks.numbers("input_points", f"image {b}, prompt {p}, point {i}", point, 2, "[x, y]")
                    for i, point in enumerate(checks.sequence("input_points", f"image {b}, prompt {p}", prompt))]
                   for p, prompt in enumerate(image)] for b, image in enumerate(points)]
        max_points = max(len(prompt) for image in coords for prompt in image)
        if max_points == 0:
            raise ValueError("input_points has no points: give at least one (x, y) per prompt")
        out = np.zeros((len(sizes), num_prompts, max_points, 2))
        label_array = np.full((len(sizes), num_prompts, max_points), LABEL_PAD, dtype=np.int64)
        for b, image in enumerate(coords):
            for p, prompt in enumerate(image):
                for i, (x, y) in enumerate(prompt):
                    checks.check_inside("input_points", f"image {b}, prompt {p}, point {i} ({x:g}, {y:g})", x, y, x, y,
                                  sizes[b])
                if not prompt:
                    continue
                out[b, p, : len(prompt)] = self.scale_coords(np.array(prompt), sizes[b])
                if labels is None:
                    label_array[b, p, : len(prompt)] = LABEL_POSITIVE
                    continue
                prompt_labels = checks.sequence("input_labels", f"image {b}, prompt {p}",
                                          checks.sequence("input_labels", f"image {b}", labels[b])[p]
                                          if p < len(labels[b]) else None)
                if len(prompt_labels) != len(prompt):
                    raise ValueError(f"image {b}, prompt {p}: {len(prompt)} points but {len(prompt_labels)} labels")
                for i, label in enumerate(prompt_labels):
                    if label not in (LABEL_POSITIVE, LABEL_NEGATIVE, LABEL_PAD) or isinstance(label, bool):
                        raise ValueError(f"input_labels: image {b}, prompt {p}, label {i} is {label!r}; labels are "
                                         "1 (foreground), 0 (background) or -1 (padding)")
                    label_array[b, p, i] = label
        return torch.from_numpy(out).float(), torch.from_numpy(label_array)

    def _boxes(self, boxes: Any, sizes: List[Tuple[int, int]]) -> torch.Tensor:
        boxes = checks.per_image("input_boxes", boxes, len(sizes))
        depth = checks.nesting_depth(boxes)
        if depth != 3 and not all(len(image) == 0 for image in boxes):
            hint = "; for one image's boxes, wrap them in one more list" if depth == 2 else ""
            raise ValueError(f"input_boxes: expected {checks.BOXES_NESTING}; got {depth} levels: {checks.short(boxes)}{hint}")
        num_prompts = checks.same_count("input_boxes", [len(checks.sequence("input_boxes", f"image {b}", image))
                                                  for b, image in enumerate(boxes)])
        out = np.zeros((len(sizes), num_prompts, 4))
        for b, image_boxes in enumerate(boxes):
            array = np.array([checks.numbers("input_boxes", f"image {b}, box {i}", box, 4, "[x1, y1, x2, y2]")
                              for i, box in enumerate(image_boxes)], dtype=np.float64)
            inverted = (array[:, 2] < array[:, 0]) | (array[:, 3] < array[:, 1])
            if inverted.any():
                raise ValueError(f"input_boxes of image {b}: boxes {np.flatnonzero(inverted).tolist()} have x2 < x1 or y2 < y1")
            for i, (x1, y1, x2, y2) in enumerate(array):
                checks.check_inside("input_boxes", f"image {b}, box {i} ({x1:g}, {y1:g}, {x2:g}, {y2:g})", x1, y1, x2, y2,
                              sizes[b], overlap=True)
            out[b] = self.scale_coords(array.reshape(-1, 2, 2), sizes[b]).reshape(-1, 4)
        return torch.from_numpy(out).float()

    def _masks(self, masks: Any, sizes: List[Tuple[int, int]]) -> torch.Tensor:
        masks = checks.per_image("input_masks", masks, len(sizes))
        num_prompts = checks.same_count("input_masks", [len(m) for m in masks])
        out = torch.zeros(len(sizes), num_prompts, self.mask_size, self.mask_size)
        for b, image_masks in enumerate(masks):
            for p, mask in enumerate(image_masks):
                mask = (mask.detach().cpu().float() if isinstance(mask, torch.Tensor)
                        else torch.as_tensor(np.asarray(mask, dtype=np.float32)))
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
        """Bring the model's low-res masks back to each image's original size: upsampled to
        the input frame, padding cropped, resized to the original size, then thresholded
        unless binarize is False. Runs on the masks' device.

        Arguments:
          masks (torch.Tensor): low-res logits (B, P, K, s, s), the model's pred_masks.
          original_sizes (torch.Tensor or sequence of (h, w)): (B, 2), each image's (H, W).
          reshaped_input_sizes (torch.Tensor or sequence of (h, w)): (B, 2), each image's
            resized (h, w).
          mask_threshold (float): logits above it are mask.
          binarize (bool): whether to threshold.

        Returns:
          (list(torch.Tensor)): per image (P, K, H, W) at its original size: bool when
            binarize, else float32 logits.

        Raises:
          ValueError: if masks is not 5-dimensional.
        """
        if masks.ndim != 5:
            raise ValueError(f"masks must be (batch, prompts, masks, h, w), got {tuple(masks.shape)}")
        results = []
        for b in range(masks.shape[0]):
            original = (int(original_sizes[b][0]), int(original_sizes[b][1]))
            resized = (int(reshaped_input_sizes[b][0]), int(reshaped_input_sizes[b][1]))
            chunks = self.masks_at_original_size(masks[b].flatten(0, 1), resized, original, mask_threshold, binarize)
            results.append(torch.cat(list(chunks)).view(masks.shape[1], masks.shape[2], *original))
        return results

    def masks_at_original_size(
        self,
        low_res: torch.Tensor,
        resized_size: Tuple[int, int],
        original_size: Tuple[int, int],
        mask_threshold: float = 0.0,
        binarize: bool = True,
        max_pixels: int = MAX_PIXELS_PER_CHUNK,
    ) -> Iterator[torch.Tensor]:
        """Bring one image's low-res masks back to its original size, k at a time so that at
        most about `max_pixels` full-resolution logits exist at once. Runs on the logits'
        device.

        Arguments:
          low_res (torch.Tensor): low-res logits (n, s, s) of one image.
          resized_size (tuple(int, int)): the image's resized (h, w).
          original_size (tuple(int, int)): the image's original (H, W).
          mask_threshold (float): logits above it are mask.
          binarize (bool): whether to threshold.
          max_pixels (int): full-resolution logits held at once, about.

        Returns:
          (Iterator[torch.Tensor]): (k, H, W) masks, n in all, in order: bool (thresholded)
            unless binarize is False, then float32 logits.
        """
        h, w = original_size
        chunk = max(1, max_pixels // max(h * w, self.image_size * self.image_size))
        for start in range(0, low_res.shape[0], chunk):
            logits = low_res[start : start + chunk, None].float()
            logits = F.interpolate(logits, (self.image_size, self.image_size), mode="bilinear", align_corners=False)
            logits = logits[..., : resized_size[0], : resized_size[1]]
            logits = F.interpolate(logits, (h, w), mode="bilinear", align_corners=False)[:, 0]
            yield logits > mask_threshold if binarize else logits
