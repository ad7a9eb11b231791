"""Result Parquet as the pipeline writes it, made from numpy masks, for the export tests."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pycocotools import mask as mask_utils

from pipeline.config import parse_config
from pipeline.output import JobDescription, JobOutput
from pipeline.schema import RESULT_FIELDS


def rect_mask(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def disk_mask(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


def encode(m):
    rle = mask_utils.encode(np.asfortranarray(m))
    return rle, {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def result_row(row_id, size, masks, scores, box_errors=None, categories=None, error=None, stabilities=None):
    """One result row as the pipeline writes it; `masks` are numpy masks (None: an unusable box,
    written as an empty mask); the stability scores are the IoU scores minus 0.1 unless given."""
    h, w = size if size is not None else (0, 0)
    box_errors = box_errors or [None] * len(masks)
    rles, areas, bboxes = [], [], []
    for m in masks:
        rle, stored = encode(m if m is not None else np.zeros((h, w), np.uint8))
        rles.append(stored)
        areas.append(int(mask_utils.area(rle)))
        bboxes.append([float(v) for v in mask_utils.toBbox(rle)])
    stabilities = stabilities if stabilities is not None else [s - 0.1 for s in scores]
    row = {"id": row_id, "image_size": list(size) if size is not None else None, "masks": rles,
           "iou_scores": scores, "stability_scores": stabilities, "mask_areas": areas, "mask_bboxes": bboxes,
           "prompt_index": list(range(len(masks))), "box_errors": box_errors, "error": error}
    if categories is not None:
        row["cat"] = categories
    return row


def write_results(path, rows, id_type=None, category_type=None):
    fields = [pa.field("id", id_type or pa.string())]
    if "cat" in rows[0]:
        fields.append(pa.field("cat", category_type or pa.list_(pa.string())))
    schema = pa.schema(fields + RESULT_FIELDS)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def describe_job(output, rows_in, input_keys, model_keys=None, output_keys=None):
    """The job description (`_samhq_job.json`) beside results at `output`: a job config with
    `input_keys` (path and boxes column filled in when not given), `model_keys` and `output_keys`."""
    config = parse_config({"input": {"path": "unused.parquet", "boxes_column": "boxes", **input_keys},
                           "output": {"path": output, **(output_keys or {})},
                           "model": {"checkpoint": "unused", **(model_keys or {})}})
    JobOutput(output).write_description(JobDescription(config, rows_in))
