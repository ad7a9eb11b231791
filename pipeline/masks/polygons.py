"""Masks as polygons, for the polygon exports: the one place masks become polygons.

The rings come from OpenCV's `cv2.findContours` with its two-level hierarchy (`RETR_CCOMP`:
outer boundaries and the holes directly inside them; an island inside a hole is an outer
boundary of its own). Coordinates are pixel corners, the convention of COCO polygons and
pycocotools' rasteriser: pixel (x, y) is the square [x, x + 1] x [y, y + 1], and a polygon
covers the pixels whose centres it contains. A ring runs along the mask's pixel edges, so
every pixel centre lies half a pixel away from it and rasterising the ring gives the mask
back exactly (1-pixel lines and diagonal steps included).

OpenCV traces the centres of the boundary pixels, half a pixel inside those edges. Traced on
the mask upsampled 2x, each traced centre is a quarter pixel from an edge, and rounding it to
the nearest pixel corner, ``(p + 1) // 2`` in upsampled pixels, puts it on the edge.
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

import cv2
import numpy as np

# Pairs of vertices compared at once when looking for the shortest bridge (bounds memory).
_PAIRS_PER_STEP = 1 << 21


@dataclass
class Component:
    """One connected part of a mask: its outer ring and the rings of its holes, each an
    (n, 2) int64 array of x, y pixel-corner coordinates (closed: the last vertex joins the
    first)."""

    outer: np.ndarray
    holes: List[np.ndarray]


def components(mask: np.ndarray, simplify: float = 0.0) -> List[Component]:
    """The parts of a bool (H, W) mask, in OpenCV's order. `simplify` > 0: each ring is
    simplified by `cv2.approxPolyDP` with that tolerance in pixels (a ring it would shrink
    below 3 vertices stays as it was). Up to 0.5 px it only drops staircase corners, every
    pixel centre staying on its side; from 1 px on, parts 1 or 2 px wide can collapse."""
    check_tolerance(simplify)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return []
    y0, x0 = int(rows[0]), int(cols[0])
    crop = mask[y0:rows[-1] + 1, x0:cols[-1] + 1].astype(np.uint8)
    upsampled = np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1)
    contours, hierarchy = cv2.findContours(upsampled, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    offset = np.array([x0, y0])
    rings = [_ring((c[:, 0, :].astype(np.int64) + 1) // 2 + offset, simplify) for c in contours]
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


def single_polygon(mask: np.ndarray, simplify: float = 0.0) -> np.ndarray:
    """The whole mask as one (n, 2) polygon, for formats with one polygon per object (YOLO):
    each hole is joined to its part's outer ring, and each further part to the polygon so far,
    by a zero-width bridge (out along the shortest segment between their vertices and back),
    so that the polygon keeps the holes under an even-odd fill. Empty (0, 2) for an empty mask."""
    parts = components(mask, simplify)
    if not parts:
        return np.zeros((0, 2), np.int64)
    polygon = _with_holes(parts[0])
    for part in parts[1:]:
        polygon = _bridge(polygon, _with_holes(part))
    return polygon


def _with_holes(part: Component) -> np.ndarray:
    polygon = part.outer
    for hole in part.holes:
        polygon = _bridge(polygon, hole)
    return polygon


def _bridge(polygon: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """`polygon` with `ring` spliced in at their closest vertices: ..., p_i, r_j, ..., r_j, p_i, ..."""
    i, j = _closest_vertices(polygon, ring)
    return np.concatenate([polygon[:i + 1], ring[j:], ring[:j + 1], polygon[i:]])


def _closest_vertices(a: np.ndarray, b: np.ndarray) -> Tuple[int, int]:
    best, best_i, best_j = np.inf, 0, 0
    step = max(1, _PAIRS_PER_STEP // len(a))
    for start in range(0, len(b), step):
        d = ((a[:, None, :] - b[None, start:start + step, :]) ** 2).sum(axis=2)
        k = int(d.argmin())
        i, j = divmod(k, d.shape[1])
        if d[i, j] < best:
            best, best_i, best_j = d[i, j], i, start + j
    return best_i, best_j


def _ring(points: np.ndarray, simplify: float) -> np.ndarray:
    """A traced ring without repeated or collinear vertices, simplified if asked."""
    points = points[np.any(points != np.roll(points, 1, axis=0), axis=1)]  # the rounding repeats vertices
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


__all__ = ["Component", "check_tolerance", "coco_polygons", "components", "single_polygon"]
