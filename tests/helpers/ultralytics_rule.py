"""How Ultralytics draws YOLO-seg labels, as a rule the tests can run without Ultralytics (whose
torchvision does not import beside this project's torch): bench/ultralytics_fidelity.py
measures the export against Ultralytics itself, in a virtual environment of its own."""

from typing import List

import cv2
import numpy as np


def ultralytics_masks(lines: List[str], height: int, width: int) -> List[np.ndarray]:
    """The masks Ultralytics' YOLODataset draws of one image's label lines at the image's size:
    each polygon parsed as float32, resampled to 1,000 points (one more than the image's
    longest polygon, when that is longer) by linear interpolation between consecutive vertices
    with the vertices kept, scaled to pixels in float32, truncated to int32 and drawn with
    `cv2.fillPoly` (ultralytics.utils.ops.resample_segments, data.utils.polygon2mask)."""
    segments = [np.array(line.split()[1:], np.float32).reshape(-1, 2) for line in lines]
    longest = max(len(s) for s in segments)
    n = longest + 1 if longest > 1000 else 1000
    masks = []
    for segment in segments:
        if len(segment) != n:
            closed = np.concatenate([segment, segment[:1]])
            at = np.linspace(0, len(closed) - 1, n - len(closed) if len(closed) < n else n)
            if len(closed) < n:
                at = np.insert(at, np.searchsorted(at, np.arange(len(closed))), np.arange(len(closed)))
            segment = np.stack([np.interp(at, np.arange(len(closed)), closed[:, k]) for k in (0, 1)],
                               axis=1).astype(np.float32)
        segment = segment * np.array([width, height], np.float32)
        drawn = np.zeros((height, width), np.uint8)
        cv2.fillPoly(drawn, [segment.astype(np.int32)], 1)
        masks.append(drawn.astype(bool))
    return masks
