"""Every column the pipeline writes or passes between its stages: names, Arrow types, and the
kinds of row errors. Nothing else in the package spells a column name.

Result columns: one output row per input row: the id column, the passthrough columns (and
the category and image-URI columns, when configured), then:
- image_size: [h, w] of the decoded image (EXIF orientation applied); null if it failed
- masks: per prompt (its box, points and mask prompt, from the input's prompt columns), a
  COCO RLE {size: [h, w], counts: compressed string}; a prompt that could not be used (see
  box_errors) gets an empty mask. With model.multimask_keep: all, each prompt has its 3
  candidate masks one after the other, best predicted IoU first (prompt_index says whose)
- iou_scores: per mask, the model's predicted IoU (NaN for unusable prompts)
- stability_scores: per mask, SAM's stability score: the IoU of the mask logits thresholded
  at mask_threshold + 1 and at mask_threshold - 1, at the original size (NaN for unusable
  prompts)
- mask_areas: per mask, its pixel count
- mask_bboxes: per mask, its tight bounding box in COCO xywh ([0, 0, 0, 0] if empty)
- prompt_index: per mask, the index of its prompt in the row's prompt lists ([0, 1, ...]
  with one mask per prompt; [0, 0, 0, 1, 1, 1, ...] with multimask_keep: all); null for a
  mask segment-everything found
- found_by: per mask, what found it: its prompt's parts ("box", "points", "mask", joined by
  "+" in that order, e.g. "box+points"), or "everything" (FOUND_BY_EVERYTHING)
- point_coords: per mask, [x, y] of the grid point that found it (segment-everything, in the
  image's pixels), else null
- crop_boxes: per mask, the crop it was found in, COCO xywh (segment-everything), else null

Segment-everything (the `everything` config section) adds its masks after the row's prompt
masks, in the automatic generator's order; their iou_scores, stability_scores and mask_areas
are its records' predicted_iou, stability_score and area, and mask_bboxes is the masks' tight
box as for prompt masks (one pixel wider and taller than the official generator's records'
bbox, which is x1 - x0 of the inclusive box).
- box_errors: per prompt (not per mask), null, or why the prompt was not used (a box
  non-finite, inverted or empty after clipping to the image; a point outside the image;
  labels not 0/1 or not one per point; a mask prompt of the wrong size; nothing in the
  prompt); boxes partly outside the image are clipped and used
- error: null when the row succeeded, else "<kind>: <message>" (kinds: ERROR_KINDS); a
  failed row keeps its id and passthrough columns with empty per-prompt and per-mask lists
- num_boxes: how many prompts the input row had (also for a failed row, whose lists are
  empty); null when the row's prompts could not be read

Internal columns (prefixed `__`) exist only between stages and never reach the output.

The evaluation ground truth and fine-tuning data hold their masks in a `masks` column of the
same RLE type (`GROUND_TRUTH_MASKS`); `import` writes fine-tuning's data (`LABELLED_FIELDS`).
"""

from typing import Optional

import pyarrow as pa

IMAGE_SIZE = "image_size"
MASKS = "masks"
IOU_SCORES = "iou_scores"
STABILITY_SCORES = "stability_scores"
MASK_AREAS = "mask_areas"
MASK_BBOXES = "mask_bboxes"
PROMPT_INDEX = "prompt_index"
FOUND_BY = "found_by"
POINT_COORDS = "point_coords"
CROP_BOXES = "crop_boxes"
BOX_ERRORS = "box_errors"
ERROR = "error"
NUM_BOXES = "num_boxes"

RLE_TYPE = pa.struct([("size", pa.list_(pa.int32())), ("counts", pa.string())])
RESULT_FIELDS = [
    pa.field(IMAGE_SIZE, pa.list_(pa.int32())),
    pa.field(MASKS, pa.list_(RLE_TYPE)),
    pa.field(IOU_SCORES, pa.list_(pa.float32())),
    pa.field(STABILITY_SCORES, pa.list_(pa.float32())),
    pa.field(MASK_AREAS, pa.list_(pa.int64())),
    pa.field(MASK_BBOXES, pa.list_(pa.list_(pa.float32()))),
    pa.field(PROMPT_INDEX, pa.list_(pa.int32())),
    pa.field(FOUND_BY, pa.list_(pa.string())),
    pa.field(POINT_COORDS, pa.list_(pa.list_(pa.float32()))),
    pa.field(CROP_BOXES, pa.list_(pa.list_(pa.float32()))),
    pa.field(BOX_ERRORS, pa.list_(pa.string())),
    pa.field(ERROR, pa.string()),
    pa.field(NUM_BOXES, pa.int32()),
]
RESULT_COLUMNS = [f.name for f in RESULT_FIELDS]
RESULT_TYPES = {f.name: f.type for f in RESULT_FIELDS}
# Lists aligned with the row's masks, one entry per mask.
PER_MASK_COLUMNS = (MASKS, IOU_SCORES, STABILITY_SCORES, MASK_AREAS, MASK_BBOXES, PROMPT_INDEX)
# found_by's values: a prompt's parts, joined by PROMPT_PART_SEPARATOR in this order, or everything.
PROMPT_PARTS = ("box", "points", "mask")
PROMPT_PART_SEPARATOR = "+"
FOUND_BY_EVERYTHING = "everything"


def prompt_kind(has_box: bool, has_points: bool, has_mask: bool) -> str:
    """A prompt's found_by value from the parts it has ("" for none)."""
    parts = (part for part, present in zip(PROMPT_PARTS, (has_box, has_points, has_mask), strict=True) if present)
    return PROMPT_PART_SEPARATOR.join(parts)


PIXELS = "__pixels"  # resized uint8 RGB image bytes, row-major (h, w, 3)
RESIZED_HW = "__resized_hw"  # [h, w] of the resized image, in the model's input frame
# The usable prompts, in the model's input frame, in order (the prompts box_errors leaves null):
BOXES = "__boxes"  # their boxes, flattened xyxy; NaN x 4 for a prompt without a box
POINTS = "__points"  # per prompt, its points flattened [x0, y0, x1, y1, ...] (empty: none)
POINT_LABELS = "__point_labels"  # per prompt, its points' labels (1 foreground, 0 background)
MASK_INPUTS = "__mask_inputs"  # per prompt, float32 (S/4, S/4) low-res logits, row-major, or null
PROMPT_KINDS = "__prompt_kinds"  # per input prompt, its found_by value (`prompt_kind`)
EVERYTHING = "__everything"  # whether segment-everything runs on the row
# Segment-everything's crops after the first (the whole image, PIXELS), resized, each row-major
# (h, w, 3) uint8, with their [h, w]; empty without crop layers.
CROP_PIXELS = "__crop_pixels"
CROP_HW = "__crop_hw"
RUN_LENGTHS = "__run_lengths"  # per mask: uncompressed COCO RLE counts (an empty mask's for unusable prompts)
INTERNAL_TYPES = {
    PIXELS: pa.binary(),
    RESIZED_HW: pa.list_(pa.int32()),
    BOXES: pa.list_(pa.float32()),
    POINTS: pa.list_(pa.list_(pa.float32())),
    POINT_LABELS: pa.list_(pa.list_(pa.int32())),
    MASK_INPUTS: pa.list_(pa.binary()),
    PROMPT_KINDS: pa.list_(pa.string()),
    EVERYTHING: pa.bool_(),
    CROP_PIXELS: pa.list_(pa.binary()),
    CROP_HW: pa.list_(pa.list_(pa.int32())),
    RUN_LENGTHS: pa.list_(pa.list_(pa.int64())),
}
COLUMN_TYPES = {**RESULT_TYPES, **INTERNAL_TYPES}

GROUND_TRUTH_MASKS = MASKS

# The labelled Parquet `import` writes from reviewed annotations, which fine-tuning reads as its
# data (data.id_column, image_uri_column, boxes_column, masks_column). One row per image, and per
# annotation, aligned: its box (xyxy, absolute pixels), its mask (the ground truth's RLE type),
# its category name (null when the annotation has none), and whether a person changed it from
# the prediction it started from (true for one the person added; null where the source held no
# predictions to compare with).
LABELLED_ID = "id"  # the row's id: the job's row id when the annotations came from its export
LABELLED_IMAGE_URI = "image_uri"  # an absolute path or a URI, so that the Parquet can move
LABELLED_BOXES = "boxes"
LABELLED_MASKS = GROUND_TRUTH_MASKS
LABELLED_CATEGORIES = "categories"
LABELLED_CHANGED = "changed"
LABELLED_FIELDS = [
    pa.field(LABELLED_IMAGE_URI, pa.string()),
    pa.field(LABELLED_BOXES, pa.list_(pa.list_(pa.float64()))),
    pa.field(LABELLED_MASKS, pa.list_(RLE_TYPE)),
    pa.field(LABELLED_CATEGORIES, pa.list_(pa.string())),
    pa.field(LABELLED_CHANGED, pa.list_(pa.bool_())),
]  # after the id column, whose type is the ids' own (integers or strings)

# An input image column may also be a Hugging Face `datasets` Image column, which `datasets`
# writes to Parquet as struct<bytes: binary, path: string>: the encoded image, or, where bytes
# is null, a path or URI to read it from.
IMAGE_STRUCT_BYTES = "bytes"
IMAGE_STRUCT_PATH = "path"


def is_image_struct(t: pa.DataType) -> bool:
    """Whether an Arrow type is a `datasets` Image column's struct (bytes and path fields,
    binary and string; more fields are allowed, as later `datasets` versions may add some)."""
    if not pa.types.is_struct(t):
        return False
    names = [t.field(i).name for i in range(t.num_fields)]
    if IMAGE_STRUCT_BYTES not in names or IMAGE_STRUCT_PATH not in names:
        return False
    data, path = t.field(IMAGE_STRUCT_BYTES).type, t.field(IMAGE_STRUCT_PATH).type
    return ((pa.types.is_binary(data) or pa.types.is_large_binary(data) or pa.types.is_null(data))
            and (pa.types.is_string(path) or pa.types.is_large_string(path) or pa.types.is_null(path)))

# "id": the row's id is null; "boxes": the boxes column's value is not a list of 4-number boxes;
# "per_box": a list meant to hold an entry per prompt (the categories, another prompt column)
# holds another number; "stage": a stage failed on the row in a way it has no kind for.
ERROR_KINDS = ("id", "image_read", "image_decode", "boxes", "per_box", "model", "stage")


def row_error(kind: str, detail: str) -> str:
    """The `error` value of a row that failed: "<kind>: <detail>"."""
    assert kind in ERROR_KINDS, kind
    return f"{kind}: {detail}"


def exception_detail(exception: BaseException) -> str:
    """"<exception type>: <message>", the detail of most row errors, with the exception it was
    raised from, if any (fsspec's HTTP reads, for one, raise FileNotFoundError from a 503)."""
    detail = f"{type(exception).__name__}: {exception}"
    if exception.__cause__ is not None:
        detail += f" (from {type(exception.__cause__).__name__}: {exception.__cause__})"
    return detail


def error_kind(error: Optional[str]) -> Optional[str]:
    """The kind of a row's `error` (one of ERROR_KINDS, "other" for anything else), or None."""
    if error is None:
        return None
    kind = error.split(":", 1)[0]
    return kind if kind in ERROR_KINDS else "other"
