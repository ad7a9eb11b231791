"""Label Studio's brush RLE, the one codec of it: a mask as the run-length stream of an RGBA
image of 0 / 255, row-major (`label_studio_converter.brush`), and back. The converter is slow
to import (pandas, nltk), so it is imported when first used."""

from typing import List

import numpy as np

_OPAQUE = 128  # alpha above this is in the mask (label_studio_converter's threshold of brush images)


def encode(mask: np.ndarray) -> List[int]:
    """A bool (H, W) mask → Label Studio's brush RLE (a list of byte values)."""
    from label_studio_converter.brush import mask2rle

    return [int(v) for v in mask2rle(mask.astype(np.uint8) * 255)]


def decode(data: object, height: int, width: int) -> np.ndarray:
    """A brush RLE of a height x width image → its bool mask. ValueError saying why when it is
    not one."""
    from label_studio_converter.brush import decode_rle

    if not isinstance(data, list) or not all(isinstance(v, int) and 0 <= v <= 255 for v in data):
        raise ValueError("brush rle is not a list of bytes")
    # The stream begins with its value count (32 bits, big-endian): checked before decode_rle
    # allocates that many bytes.
    if len(data) < 4 or int.from_bytes(bytes(data[:4]), "big") != height * width * 4:
        raise ValueError("brush rle of another size than original_width x original_height")
    try:
        rgba = decode_rle(data)
    except Exception:  # noqa: BLE001 - the converter's bit reader fails as a corrupt stream leads it (IndexError, ...)
        raise ValueError("brush rle cannot be decoded") from None
    return np.asarray(rgba).reshape(height, width, 4)[:, :, 3] > _OPAQUE
