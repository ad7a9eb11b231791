"""The crops of automatic mask generation: layer 0 is the whole image; layer i (1, 2, ...) tiles
it with 2^i x 2^i overlapping crops, the overlap shrinking with the layer."""

import math
from typing import List, Tuple

# A crop box (x0, y0, x1, y1) in pixels of the image, x1 and y1 exclusive.
CropBox = Tuple[int, int, int, int]


def crop_boxes(image_size: Tuple[int, int], crop_n_layers: int, overlap_ratio: float) -> Tuple[List[CropBox], List[int]]:
    """Every crop of an image, layer by layer.

    Arguments:
      image_size (tuple(int, int)): the image's (H, W).
      crop_n_layers (int): the layers after layer 0 (the whole image).
      overlap_ratio (float): in layer 1, neighbouring crops overlap by this fraction of the
        image's shorter side; layer i overlaps by 2 / 2^i of that.

    Returns:
      (list(tuple(int, int, int, int))): the crop boxes (x0, y0, x1, y1), the whole image
        first, then each layer's crops by column of x0, then y0.
      (list(int)): each crop's layer.
    """
    height, width = image_size
    boxes: List[CropBox] = [(0, 0, width, height)]
    layers = [0]
    for layer in range(1, crop_n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * min(height, width) * (2 / per_side))
        crop_w, crop_h = _crop_length(width, per_side, overlap), _crop_length(height, per_side, overlap)
        starts_x = [int((crop_w - overlap) * i) for i in range(per_side)]
        starts_y = [int((crop_h - overlap) * i) for i in range(per_side)]
        for x0 in starts_x:
            for y0 in starts_y:
                boxes.append((x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)))
                layers.append(layer)
    return boxes, layers


def _crop_length(length: int, per_side: int, overlap: int) -> int:
    """The side of each of per_side crops that cover `length` with `overlap` between neighbours."""
    return int(math.ceil((overlap * (per_side - 1) + length) / per_side))


def xyxy_to_xywh(box: CropBox) -> List[int]:
    """A box as (x, y, width, height), as the generator's records give boxes.

    Arguments:
      box (tuple(int, int, int, int)): (x0, y0, x1, y1).

    Returns:
      (list(int)): [x0, y0, x1 - x0, y1 - y0].
    """
    x0, y0, x1, y1 = box
    return [x0, y0, x1 - x0, y1 - y0]
