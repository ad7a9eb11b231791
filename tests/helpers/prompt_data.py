"""Input rows with every kind of prompt, and the official SAM-HQ predictor as their reference,
one prompt at a time, for the tests of prompts through the job."""

import functools
import io

import numpy as np
import pyarrow as pa
import torch
from PIL import Image, ImageOps

from helpers import official

# An input with every prompt column: boxes, points, point labels, and mask prompts as COCO RLE
# (masks) or as low-res logits (logits).
PROMPT_SCHEMA = pa.schema([
    pa.field("id", pa.string()),
    pa.field("image", pa.binary()),
    pa.field("boxes", pa.list_(pa.list_(pa.float64()))),
    pa.field("points", pa.list_(pa.list_(pa.list_(pa.float64())))),
    pa.field("labels", pa.list_(pa.list_(pa.int64()))),
    pa.field("masks", pa.list_(pa.struct([("size", pa.list_(pa.int32())), ("counts", pa.string())]))),
    pa.field("logits", pa.list_(pa.binary())),
])


def prompt_table(rows, schema=PROMPT_SCHEMA):
    """`rows` as a table of `schema`, the columns a row leaves out null."""
    return pa.Table.from_pylist([{**{f.name: None for f in schema}, **row} for row in rows], schema=schema)


def blob(height, width, cy, cx, ry, rx):
    """A bool (height, width) ellipse centred at (cy, cx) with radii (ry, rx)."""
    yy, xx = np.mgrid[:height, :width]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


# Logits agree with the official implementation's within this (tests/core/test_parity.py): a
# pixel whose official logit lies this close to the threshold may fall on either side of it.
LOGIT_TOL = 1e-3


def assert_same_mask(got, logits, where):
    """A bool mask equal to `logits` > 0 (the official mask), but for pixels whose official
    logit lies within LOGIT_TOL of the threshold."""
    assert got.shape == logits.shape, where
    differ = got != (logits > 0)
    assert (np.abs(logits[differ]) <= LOGIT_TOL).all(), (
        f"{where}: {differ.sum()} pixels differ, official logits {logits[differ][:5]}")
    return int(differ.sum())


class Official:
    """The official SamPredictor, one prompt at a time, on decoded RGB images."""

    def __init__(self, model):
        self.predictor = official.SamPredictor(model)
        self.image = None

    def predict(self, image, box=None, points=None, labels=None, mask_input=None, multimask=False):
        """(logits (H, W) at the image's size, predicted IoU, stability, low-res logits) of one
        prompt; its mask is logits > 0."""
        if self.image is not image:
            self.predictor.set_image(image)
            self.image = image
        kwargs = {}
        if box is not None:
            kwargs["box"] = np.array(box)
        if points:
            kwargs["point_coords"] = np.array(points)
            kwargs["point_labels"] = np.array(labels if labels is not None else [1] * len(points))
        if mask_input is not None:
            kwargs["mask_input"] = mask_input[None]
        with torch.no_grad():
            logits, iou, low_res = self.predictor.predict(multimask_output=multimask, return_logits=True, **kwargs)
        stability = official.calculate_stability_score(torch.from_numpy(logits), 0.0, 1.0)
        return logits[0], float(iou[0]), float(stability[0]), low_res[0]


@functools.lru_cache(maxsize=4)
def decoded(image_bytes):
    """The image as the job decodes it (EXIF orientation applied), as RGB: one array per image,
    which the official predictor embeds once."""
    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(image_bytes))).convert("RGB"))
