"""Synthetic scenes with exact ground-truth masks, for training and evaluating small
SAM-HQ models where no real labelled data can be used.

Each scene is a textured background with clutter and a few objects of many kinds: filled
shapes, shapes with holes, thin structures (wires, branching twigs) and text-like strokes.
Thin structures are THIN_WIDTH to THIN_WIDTH + 3 px wide: thin next to the object (a wire
across a quarter of the image) but no thinner than one cell of the mask decoder's output grid
(S/4 per side, 4 px at the demo's 256 input). Thinner lines cannot be drawn by any logits on
that grid: even logit maps fitted to each mask miss much of them (the demo model's card,
models/samhq-demo-synthetic/README.md, gives the fitted IoUs at both widths).
Objects are drawn back to front; each object's mask is its visible region (later objects
occlude earlier ones), so masks never overlap. Boxes are the masks' tight boxes with
detector-like jitter.
"""

import math
from dataclasses import dataclass
from typing import Callable, List, Tuple

import numpy as np
from PIL import Image, ImageDraw

KINDS = ("ellipse", "polygon", "ring", "frame", "wire", "twig", "strokes")
THIN_WIDTH = 4  # px


@dataclass
class Scene:
    image: np.ndarray  # uint8 (H, W, 3)
    masks: np.ndarray  # bool (N, H, W), visible region of each object, disjoint
    boxes: np.ndarray  # float32 (N, 4) jittered xyxy boxes
    kinds: List[str]


def _draw(size: Tuple[int, int], paint: Callable[[ImageDraw.ImageDraw], None]) -> np.ndarray:
    canvas = Image.new("L", (size[1], size[0]), 0)
    paint(ImageDraw.Draw(canvas))
    return np.asarray(canvas) > 127


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random colour with stripes, a gradient or noise: float (H, W, 3)."""
    base = rng.uniform(0, 255, 3)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    style = rng.integers(3)
    if style == 0:  # stripes
        angle, period = rng.uniform(0, math.pi), rng.uniform(4, 16)
        wave = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)[..., None]
        return base + 40 * wave * rng.uniform(-1, 1, 3)
    if style == 1:  # gradient
        return base + (xx / max(w, 1))[..., None] * rng.uniform(-80, 80, 3)
    return base + rng.normal(0, 20, (h, w, 3))


def _shape_mask(kind: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
    r = rng.uniform(0.08, 0.25) * min(h, w)
    if kind == "ellipse":
        rx, ry = r * rng.uniform(0.5, 1.0), r * rng.uniform(0.5, 1.0)
        return _draw((h, w), lambda d: d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255))
    if kind == "polygon":
        n = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * math.pi, n))
        radii = r * rng.uniform(0.4, 1.0, n)
        points = [(cx + q * math.cos(a), cy + q * math.sin(a)) for a, q in zip(angles, radii, strict=True)]
        return _draw((h, w), lambda d: d.polygon(points, fill=255))
    if kind == "ring":
        inner = r * rng.uniform(0.3, 0.7)
        def ring(d: ImageDraw.ImageDraw) -> None:
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
            d.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=0)

        return _draw((h, w), ring)
    if kind == "frame":
        t = max(2.0, r * rng.uniform(0.1, 0.3))
        return _draw((h, w), lambda d: d.rectangle([cx - r, cy - r, cx + r, cy + r], outline=255, width=int(t)))
    if kind == "wire":
        points = [(cx + rng.uniform(-2, 2) * r, cy + rng.uniform(-2, 2) * r) for _ in range(int(rng.integers(3, 6)))]
        width = THIN_WIDTH + int(rng.integers(3))
        return _draw((h, w), lambda d: d.line(points, fill=255, width=width, joint="curve"))
    if kind == "twig":
        segments: List[Tuple[Tuple[float, float, float, float], int]] = []

        def grow(x: float, y: float, angle: float, length: float, depth: int) -> None:
            x2, y2 = x + length * math.cos(angle), y + length * math.sin(angle)
            segments.append(((x, y, x2, y2), THIN_WIDTH + depth))  # thinner towards the tips
            if depth > 0:
                for turn in (-1, 1):
                    grow(x2, y2, angle + turn * rng.uniform(0.3, 0.9), length * rng.uniform(0.5, 0.8), depth - 1)

        grow(cx, cy + r, -math.pi / 2 + rng.uniform(-0.3, 0.3), r, int(rng.integers(2, 4)))
        def twig(d: ImageDraw.ImageDraw) -> None:
            for seg, wd in segments:
                d.line(seg, fill=255, width=wd)

        return _draw((h, w), twig)
    # strokes: a few glyph-like polylines side by side
    width, glyphs = THIN_WIDTH + int(rng.integers(3)), int(rng.integers(2, 5))
    step = r * 0.8

    def strokes(d: ImageDraw.ImageDraw) -> None:
        for g in range(glyphs):
            x0 = cx - glyphs * step / 2 + g * step
            points = [(x0 + rng.uniform(0, step * 0.7), cy + rng.uniform(-r / 2, r / 2)) for _ in range(4)]
            d.line(points, fill=255, width=width)

    return _draw((h, w), strokes)


def tight_box(mask: np.ndarray) -> np.ndarray:
    """The tight box of a mask.

    Arguments:
      mask (np.ndarray): bool (H, W), not empty.

    Returns:
      (np.ndarray): float32 (4,) xyxy, with x2/y2 one past the last pixel.
    """
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def make_scene(rng: np.random.Generator, height: int = 256, width: int = 256, max_objects: int = 4,
               box_jitter: float = 0.05, min_visible_pixels: int = 30) -> Scene:
    """One scene with 1..max_objects labelled objects (objects hidden below
    `min_visible_pixels` by occlusion are dropped) and unlabelled clutter.

    Arguments:
      rng (np.random.Generator): the source of randomness.
      height (int): the image's height in pixels.
      width (int): the image's width in pixels.
      max_objects (int): labelled objects drawn, at most.
      box_jitter (float): standard deviation of the boxes' noise, relative to their size.
      min_visible_pixels (int): the smallest visible region an object is kept with.

    Returns:
      (Scene): the image (H, W, 3), masks (N, H, W), boxes (N, 4) and kinds of the N objects
        kept.
    """
    image = _texture(rng, height, width)
    for _ in range(int(rng.integers(3, 8))):  # clutter: small unlabelled blobs
        blob = _shape_mask("ellipse", rng, height, width) & (rng.random((height, width)) < 0.9)
        image[blob] = rng.uniform(0, 255, 3)
    layers: List[np.ndarray] = []  # the objects' visible parts, later ones occluding earlier ones
    kinds: List[str] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        kind = KINDS[int(rng.integers(len(KINDS)))]
        mask = _shape_mask(kind, rng, height, width)
        if not mask.any():
            continue
        image[mask] = _texture(rng, height, width)[mask]
        layers = [m & ~mask for m in layers]
        layers.append(mask)
        kinds.append(kind)
    keep = [i for i, m in enumerate(layers) if m.sum() >= min_visible_pixels]
    masks = np.array([layers[i] for i in keep], dtype=bool).reshape(-1, height, width)
    kinds = [kinds[i] for i in keep]
    boxes = np.array([tight_box(m) for m in masks], dtype=np.float32).reshape(-1, 4)
    if len(boxes):
        size = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
        boxes = boxes + rng.normal(0, box_jitter, boxes.shape).astype(np.float32) * size
        boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
    return Scene(np.clip(image, 0, 255).astype(np.uint8), masks, boxes, kinds)


def coarsen(mask: np.ndarray, cell: int = 8, coverage: float = 0.25) -> np.ndarray:
    """A coarse annotation of a mask, like polygon labels of large datasets: the mask on a
    grid of `cell` x `cell` blocks, a block kept when at least `coverage` of it is covered.
    Thin parts turn into blocky bands and boundaries into staircases.

    Arguments:
      mask (np.ndarray): bool (H, W).
      cell (int): the block side in pixels.
      coverage (float): the share of a block the mask must cover for the block to be kept.

    Returns:
      (np.ndarray): bool (H, W), the coarse mask.
    """
    h, w = mask.shape
    ph, pw = -h % cell, -w % cell
    padded = np.pad(mask, ((0, ph), (0, pw)))
    blocks = padded.reshape(padded.shape[0] // cell, cell, padded.shape[1] // cell, cell).mean(axis=(1, 3))
    return np.repeat(np.repeat(blocks >= coverage, cell, 0), cell, 1)[:h, :w]
