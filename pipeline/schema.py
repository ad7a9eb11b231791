"""Arrow types of the pipeline's result columns.

One output row per input row: the id column, the passthrough columns (and the category
column, when configured), then:
- image_size: [h, w] of the decoded image (EXIF orientation applied); null if it failed
- masks: per input box, a COCO RLE {size: [h, w], counts: compressed string}, aligned with
  the boxes; a box that could not be used (see box_errors) gets an empty mask
- iou_scores: per box, the model's predicted IoU (NaN for unusable boxes)
- mask_areas: per box, the mask's pixel count
- mask_bboxes: per box, the mask's tight bounding box in COCO xywh ([0, 0, 0, 0] if empty)
- box_errors: per box, null, or why the box was not used (non-finite, inverted, empty
  after clipping to the image); boxes partly outside the image are clipped and used
- num_boxes: how many boxes the input row had (also for a failed row, whose per-box lists
  are empty); null when the row's boxes could not be read
- error: null when the row succeeded, else "<kind>: <message>" (kinds: image_read,
  image_decode, boxes, model); a failed row keeps its id and passthrough columns with
  empty per-box lists
"""

import pyarrow as pa

RLE_TYPE = pa.struct([("size", pa.list_(pa.int32())), ("counts", pa.string())])

RESULT_FIELDS = [
    pa.field("image_size", pa.list_(pa.int32())),
    pa.field("masks", pa.list_(RLE_TYPE)),
    pa.field("iou_scores", pa.list_(pa.float32())),
    pa.field("mask_areas", pa.list_(pa.int64())),
    pa.field("mask_bboxes", pa.list_(pa.list_(pa.float32()))),
    pa.field("box_errors", pa.list_(pa.string())),
    pa.field("error", pa.string()),
    pa.field("num_boxes", pa.int32()),
]
RESULT_COLUMNS = [f.name for f in RESULT_FIELDS]
ERROR_KINDS = ("image_read", "image_decode", "boxes", "model")
