"""COCO run-length encoding, the package's mask format, through pycocotools (whose layout it
is: column-major pixels, the first run counts zeros): uncompressed run lengths compressed into
COCO RLE strings, whole masks encoded and decoded, and COCO polygons rasterised as COCO tools
read them. No torch: the run lengths themselves are found on the model's device by
`pipeline.stages.run_lengths`.

A stored mask is `{"size": [h, w], "counts": str}` (`pipeline.schema.RLE_TYPE`).
"""

from typing import Any, Dict, List, Union

import numpy as np
from pycocotools import mask as mask_utils

Rle = Dict[str, Any]
RunLengths = Union[np.ndarray, List[int]]  # uncompressed counts of one mask


def empty_run_lengths(height: int, width: int) -> List[int]:
    """The run lengths of an all-background mask."""
    return [height * width]


def compress(counts: List[RunLengths], height: int, width: int) -> List[Rle]:
    """Uncompressed run lengths of masks of one image → their stored COCO RLEs."""
    if not counts:
        return []
    encoded = mask_utils.frPyObjects([{"counts": c, "size": [height, width]} for c in counts], height, width)
    return [{"size": [height, width], "counts": m["counts"].decode("ascii")} for m in encoded]


def encode(mask: np.ndarray) -> Rle:
    """A bool (H, W) mask → its stored COCO RLE."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}


def for_pycocotools(value: Any, where: str, what: str) -> Rle:
    """A stored mask as pycocotools takes it (counts as bytes); ValueError naming `where`
    and `what` when it is not a COCO RLE."""
    size, counts = value.get("size"), value.get("counts")
    if size is None or len(size) != 2 or any(s is None or s < 0 for s in size) or counts is None:
        raise ValueError(f"{where}: {what} must be a COCO RLE {{size: [h, w], counts}}, got {value!r}")
    return {"size": [int(size[0]), int(size[1])], "counts": counts.encode() if isinstance(counts, str) else counts}


def decode(value: Any, where: str, what: str) -> np.ndarray:
    """A stored mask → bool (H, W); ValueError when it is not a COCO RLE."""
    return mask_utils.decode(for_pycocotools(value, where, what)).astype(bool)


def rasterise_polygons(polygons: List[List[float]], height: int, width: int) -> np.ndarray:
    """COCO polygons ([x0, y0, x1, y1, ...] each, at least 3 points, in pixel coordinates) →
    the bool (H, W) mask of their union, rasterised by pycocotools (`frPyObjects`), as COCO's
    own tools and evaluation read them."""
    parts = mask_utils.frPyObjects([[float(v) for v in polygon] for polygon in polygons], height, width)
    return mask_utils.decode(mask_utils.merge(parts)).astype(bool)


def counts_text(counts: Any) -> str:
    """Compressed counts as the text COCO JSON holds."""
    return counts.decode("ascii") if isinstance(counts, bytes) else str(counts)
