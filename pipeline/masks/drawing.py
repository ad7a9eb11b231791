"""Drawing masks and boxes over images, for every picture the package makes: the demo's
overlays, the evaluation's worst-box overlays and the review page's mask layers.

A mask is shown as its colour alpha-blended over the image. `blend` composites masks into
the pixels; `mask_layer` is the same blend left to the viewer (an image whose mask pixels
carry the colour at that opacity and are transparent elsewhere, laid over the image), so
that the review page can show and hide each mask.
"""

import io
from typing import Iterable, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageOps

Color = Tuple[int, int, int]
PALETTE: Tuple[Color, ...] = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                              (70, 240, 240))
MASK_ALPHA = 0.5


def color(index: int) -> Color:
    """The palette colour of the `index`-th mask or box."""
    return PALETTE[index % len(PALETTE)]


def open_rgb(data: bytes) -> Image.Image:
    """Encoded image bytes → RGB, with its EXIF orientation applied, as the job decodes it (so
    that the masks, made at that orientation, fit)."""
    with Image.open(io.BytesIO(data)) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def blend(image: np.ndarray, masks: Iterable[Tuple[np.ndarray, Color]], alpha: float = MASK_ALPHA) -> np.ndarray:
    """RGB uint8 (H, W, 3) with each bool (H, W) mask's colour blended in at `alpha`, in order."""
    canvas = image.astype(np.float32)
    for mask, rgb in masks:
        canvas[mask] = (1 - alpha) * canvas[mask] + alpha * np.asarray(rgb, np.float32)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def mask_layer(mask: np.ndarray, rgb: Color, alpha: float = MASK_ALPHA) -> Image.Image:
    """A bool (H, W) mask as an image to lay over the picture: `rgb` at opacity `alpha` on the
    mask, transparent elsewhere. A two-colour palette image, so its PNG stays small."""
    layer = Image.fromarray(mask.astype(np.uint8)).convert("P")  # "L" values 0 and 1 become palette indices
    layer.putpalette([0, 0, 0, *rgb])
    layer.info["transparency"] = bytes([0, round(alpha * 255)])
    return layer


def draw_boxes(image: Image.Image, boxes: Sequence[Tuple[Sequence[float], Color]], width: int = 1) -> None:
    """Outline xyxy boxes on `image`, in place."""
    draw = ImageDraw.Draw(image)
    for box, rgb in boxes:
        draw.rectangle([float(v) for v in box], outline=rgb, width=width)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
