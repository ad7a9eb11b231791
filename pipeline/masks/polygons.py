"""Masks as polygons, for the polygon exports: the one place masks become polygons.

The rings come from OpenCV's `cv2.findContours` with its two-level hierarchy (`RETR_CCOMP`:
outer boundaries and the holes directly inside them; an island inside a hole is an outer
boundary of its own), in one of two conventions, each exact under the rasteriser of the
format's own tools:

- Pixel edges (`EDGES`, COCO polygons): pixel (x, y) is the square [x, x + 1] x [y, y + 1], and
  pycocotools covers the pixels whose centres a polygon contains. A ring runs along the mask's
  pixel edges, every pixel centre half a pixel from it, so rasterising it gives the mask back
  exactly (1-pixel lines and diagonal steps included). OpenCV traces the centres of the
  boundary pixels, half a pixel inside those edges; traced on the mask upsampled 2x, each
  traced centre is a quarter pixel from an edge, and rounding it to the nearest pixel corner,
  ``(p + 1) // 2`` in upsampled pixels, puts it on the edge.
- Pixel centres (`CENTRES`, YOLO-seg): Ultralytics draws a polygon with `cv2.fillPoly` at
  integer coordinates, which fills every pixel the outline touches as well as those inside it.
  A ring through the centres of the mask's boundary pixels (OpenCV's trace as it is) fills
  exactly the mask. `fillpoly_polygon` says how the polygon survives Ultralytics' resampling.
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

import cv2
import numpy as np

# Pairs of vertices compared at once when looking for the shortest bridge (bounds memory).
_PAIRS_PER_STEP = 1 << 21
# The nearest vertex pairs among which a bridge takes the path with the fewest pixels outside the mask.
_BRIDGE_CANDIDATES = 8


@dataclass
class Component:
    """One connected part of a mask: its outer ring and the rings of its holes, each an
    (n, 2) int64 array of x, y pixel-corner coordinates (closed: the last vertex joins the
    first)."""

    outer: np.ndarray
    holes: List[np.ndarray]


EDGES, CENTRES = "edges", "centres"


def components(mask: np.ndarray, simplify: float = 0.0, outline: str = EDGES) -> List[Component]:
    """The parts of a bool (H, W) mask, in OpenCV's order, their rings on the pixel `EDGES` or
    through the boundary pixels' `CENTRES` (pixel indices). `simplify` > 0: each ring is
    simplified by `cv2.approxPolyDP` with that tolerance in pixels (a ring it would shrink
    below 3 vertices stays as it was). On the edges, up to 0.5 px only drops staircase
    corners, every pixel centre staying on its side; from 1 px on, parts 1 or 2 px wide can
    collapse."""
    check_tolerance(simplify)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return []
    y0, x0 = int(rows[0]), int(cols[0])
    crop = mask[y0:rows[-1] + 1, x0:cols[-1] + 1].astype(np.uint8)
    if outline == EDGES:
        crop = np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1)
    contours, hierarchy = cv2.findContours(crop, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    offset = np.array([x0, y0])
    traced = [c[:, 0, :].astype(np.int64) for c in contours]
    rings = [_ring((t + 1) // 2 + offset if outline == EDGES else t + offset, simplify) for t in traced]
    parents = hierarchy[0][:, 3]
    parts = {i: Component(rings[i], []) for i in range(len(rings)) if parents[i] < 0}
    for i, parent in enumerate(parents):
        if parent >= 0:
            parts[int(parent)].holes.append(rings[i])
    return list(parts.values())


def check_tolerance(simplify: float) -> None:
    """ValueError unless `simplify` is a finite number of pixels >= 0."""
    if not np.isfinite(simplify) or simplify < 0:
        raise ValueError(f"--simplify must be a finite number of pixels >= 0, got {simplify}")


def coco_polygons(mask: np.ndarray, simplify: float = 0.0) -> Optional[List[List[int]]]:
    """The mask as a COCO polygon segmentation, `[[x1, y1, x2, y2, ...], ...]` (one polygon per
    part), or None when it has holes, which COCO polygons cannot hold."""
    parts = components(mask, simplify)
    if any(part.holes for part in parts):
        return None
    return [part.outer.ravel().tolist() for part in parts]


def fillpoly_polygon(mask: np.ndarray, simplify: float = 0.0) -> np.ndarray:
    """The whole mask as one (n, 2) polygon of pixel-centre indices, for YOLO-seg: one polygon
    per object, which Ultralytics draws with `cv2.fillPoly` (see `CENTRES`). Empty (0, 2) for
    an empty mask.

    Each hole is joined to its part's outer ring, and the parts to each other (the part nearest
    to the polygon so far first, from the largest), by a zero-width bridge, out and back along
    a path of a diagonal and a straight run between two of their nearest vertices (in pixels
    drawn: the larger of the x and y distances), the path crossing the fewest pixels outside
    the mask. `fillPoly` draws the bridge's pixels: inside the mask, between a hole and its
    ring, they change nothing; across the background between parts they are one line of
    pixels, the fewest the format allows.

    Ultralytics resamples each polygon to 1,000 points (more for longer ones) by linear
    interpolation between consecutive vertices, keeping the vertices, and truncates them to
    integers. Points on the straight and diagonal runs between pixel centres, placed at
    ``index + 0.5`` (`label_line` in the YOLO export), truncate back onto the run, except a
    point exactly halfway along a diagonal step, which leaves it. With an odd number of
    vertices (a vertex repeated where needed) no point falls there: the spacing is
    V / (1000 - V - 2) vertices, with an odd denominator for odd V, and a halfway point
    would need an even one.
    """
    parts = components(mask, simplify, CENTRES)
    if not parts:
        return np.zeros((0, 2), np.int64)
    joined = [_with_holes(part, mask) for part in parts]
    areas = [cv2.contourArea(part.outer.reshape(-1, 1, 2).astype(np.int32)) for part in parts]
    polygon = joined.pop(int(np.argmax(areas)))
    while joined:
        nearest = int(np.argmin([_nearest_pairs(polygon, part, 1)[0][2] for part in joined]))
        polygon = _bridge(polygon, joined.pop(nearest), mask)
    return polygon if len(polygon) % 2 else np.concatenate([polygon[:1], polygon])


def _with_holes(part: Component, mask: np.ndarray) -> np.ndarray:
    polygon = part.outer
    for hole in part.holes:
        polygon = _bridge(polygon, hole, mask)
    return polygon


def _bridge(polygon: np.ndarray, ring: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`polygon` with `ring` spliced in: ..., p_i, turn, r_j, ..., r_j, turn, p_i, ..., along
    the path, of the few nearest vertex pairs' and of their two ways (the diagonal run first
    or the straight one), that crosses the fewest pixels outside the mask, then the shortest."""
    best: Optional[Tuple[Tuple[int, int], int, int, np.ndarray]] = None
    for i, j, distance in _nearest_pairs(polygon, ring, _BRIDGE_CANDIDATES):
        start, end = polygon[i], ring[j]
        step = end - start
        diagonal = np.sign(step) * np.abs(step).min()
        for turn in (start + diagonal, end - diagonal):
            key = (_pixels_outside(mask, start, turn) + _pixels_outside(mask, turn, end), distance)
            if best is None or key < best[0]:
                best = (key, i, j, turn)
    assert best is not None
    _, i, j, turn = best
    corner = [turn] if (turn != polygon[i]).any() and (turn != ring[j]).any() else []
    path = np.array(corner, np.int64).reshape(-1, 2)
    return np.concatenate([polygon[:i + 1], path, ring[j:], ring[:j + 1], path, polygon[i:]])


def _pixels_outside(mask: np.ndarray, start: np.ndarray, end: np.ndarray) -> int:
    """Pixels outside `mask` on the straight or diagonal run from `start` to `end` (x, y)."""
    length = int(np.abs(end - start).max())
    steps = np.arange(length + 1)[:, None] * np.sign(end - start)[None, :] + start
    return int((~mask[steps[:, 1], steps[:, 0]]).sum())


def _nearest_pairs(a: np.ndarray, b: np.ndarray, count: int) -> List[Tuple[int, int, int]]:
    """The `count` pairs (i, j, distance) of vertices a[i], b[j] nearest in the larger of the x
    and y distances (the pixels a bridge between them draws, less one), nearest first."""
    pairs: List[Tuple[int, int, int]] = []
    step = max(1, _PAIRS_PER_STEP // len(a))
    for start in range(0, len(b), step):
        d = np.abs(a[:, None, :] - b[None, start:start + step, :]).max(axis=2).ravel()
        nearest = np.argpartition(d, count - 1)[:count] if len(d) > count else np.arange(len(d))
        for k in nearest:
            i, j = divmod(int(k), len(b[start:start + step]))
            pairs.append((int(d[k]), i, start + j))
        pairs = sorted(pairs)[:count]
    return [(i, j, distance) for distance, i, j in pairs]


def _ring(points: np.ndarray, simplify: float) -> np.ndarray:
    """A traced ring without repeated or collinear vertices, simplified if asked."""
    # The rounding repeats vertices; a single pixel's centre is one vertex, repeated by none.
    points = points[np.any(points != np.roll(points, 1, axis=0), axis=1)] if len(points) > 1 else points
    if len(points) >= 3:
        incoming, outgoing = points - np.roll(points, 1, axis=0), np.roll(points, -1, axis=0) - points
        cross = incoming[:, 0] * outgoing[:, 1] - incoming[:, 1] * outgoing[:, 0]
        straight = (cross == 0) & ((incoming * outgoing).sum(axis=1) > 0)
        points = points[~straight]
    if simplify > 0:
        simplified = cv2.approxPolyDP(points.reshape(-1, 1, 2).astype(np.int32), simplify, True)[:, 0, :]
        if len(simplified) >= 3:
            return simplified.astype(np.int64)
    return points


__all__ = ["CENTRES", "EDGES", "Component", "check_tolerance", "coco_polygons", "components", "fillpoly_polygon"]
