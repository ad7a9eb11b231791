"""A synthetic job's output and input for the review page's tests: result Parquet as the job
writes it (with its description and manifest), spread over several files, with scores known in advance,
failed rows of several kinds, and an input Parquet of small PNGs in many row groups; optionally
with segment-everything's masks after the box masks (`add_everything`)."""

import io
import json
import os
from typing import Any, Dict, List

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.config import parse_config
from pipeline.masks import rle
from pipeline.output import JobDescription, JobOutput, Manifest, config_digest
from pipeline.schema import RESULT_FIELDS, row_error

CATEGORIES = ("cat", "dog", "bird")
FAILURES = {7: ("image_read", "FileNotFoundError: gone"), 19: ("image_decode", "cannot identify image file"),
            23: ("image_decode", "truncated"), 41: ("boxes", "boxes must be a list of [4 numbers]")}
HEIGHT, WIDTH = 24, 32


def png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.full((HEIGHT, WIDTH, 3), rng.integers(0, 256, 3), np.uint8)
    pixels[4:20, 6:26] = rng.integers(0, 256, 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def result_row(i: int) -> Dict[str, Any]:
    """Row i: failed (FAILURES), or 0-3 rectangle masks with scores that depend on i."""
    row_id = f"im{i:04d}"
    if i in FAILURES:
        return {"id": row_id, "labels": ["cat"], "image_size": None, "masks": [], "iou_scores": [],
                "stability_scores": [], "mask_areas": [], "mask_bboxes": [], "box_errors": [],
                "error": row_error(*FAILURES[i]), "num_boxes": 1}
    num = i % 4
    masks, areas, bboxes = [], [], []
    for k in range(num):
        mask = np.zeros((HEIGHT, WIDTH), bool)
        mask[2 + k: 12 + k, 3 + 5 * k: 13 + 5 * k] = True
        masks.append(rle.encode(mask))
        areas.append(int(mask.sum()))
        bboxes.append([3.0 + 5 * k, 2.0 + k, 10.0, 10.0])
    # Distinct, scattered scores (a permutation of i), so that the lowest are known exactly.
    ious = [((i * 37 + 11 * k) % 997) / 997 for k in range(num)]
    stabilities = [min(1.0, s + 0.05) for s in ious]
    return {"id": row_id, "labels": [CATEGORIES[(i + k) % 3] for k in range(num)], "image_size": [HEIGHT, WIDTH],
            "masks": masks, "iou_scores": ious, "stability_scores": stabilities, "mask_areas": areas,
            "mask_bboxes": bboxes, "box_errors": [None] * num, "error": None, "num_boxes": num}


def add_everything(row: Dict[str, Any], i: int) -> Dict[str, Any]:
    """Row i (a `result_row`) as a job with `everything.rows: all` writes it: its box masks found
    by "box" ("box+points" in every fifth row), then i % 3 segment-everything masks, squares
    below the box masks with the grid point at their centre."""
    num = len(row["masks"])
    row.update(found_by=["box+points" if i % 5 == 0 else "box"] * num, prompt_index=list(range(num)),
               point_coords=[None] * num, crop_boxes=[None] * num)
    if row["error"] is not None:
        return row
    for j in range(i % 3):
        mask = np.zeros((HEIGHT, WIDTH), bool)
        mask[16:22, 2 + 10 * j: 8 + 10 * j] = True
        score = ((i * 53 + 7 * j) % 991) / 991
        for name, value in (("masks", rle.encode(mask)), ("iou_scores", score), ("stability_scores", min(1.0, score + 0.02)),
                            ("mask_areas", int(mask.sum())), ("mask_bboxes", [2.0 + 10 * j, 16.0, 6.0, 6.0]),
                            ("prompt_index", None), ("found_by", "everything"), ("point_coords", [5.0 + 10 * j, 19.0]),
                            ("crop_boxes", [0, 0, WIDTH, HEIGHT])):
            row[name].append(value)
    return row


def write_job(root: str, num_rows: int, files: int = 3, image_files: bool = False,
              everything: bool = False) -> Dict[str, Any]:
    """output/ (result files, `_samhq_job.json`, `_SUCCESS`) and input/images.parquet under `root`;
    returns the rows written. The input holds the images themselves, or with `image_files` their
    paths (column "uri", carried into the results as the job does) to PNGs under
    input/photos/2024-batch-07/. With `everything`, the rows also hold segment-everything's
    masks (`add_everything`)."""
    output, inputs = os.path.join(root, "output"), os.path.join(root, "input")
    os.makedirs(output)
    os.makedirs(inputs)
    rows = [add_everything(result_row(i), i) if everything else result_row(i) for i in range(num_rows)]
    paths = [os.path.join(inputs, "photos", "2024-batch-07", f"{r['id']}.png") for r in rows]
    extra = [pa.field("uri", pa.string())] if image_files else []
    if image_files:
        os.makedirs(os.path.dirname(paths[0]))
        for i, (row, path) in enumerate(zip(rows, paths, strict=True)):
            row["uri"] = path
            with open(path, "wb") as f:
                f.write(png(i))
    schema = pa.schema([pa.field("id", pa.string()), pa.field("labels", pa.list_(pa.string())), *extra, *RESULT_FIELDS])
    per_file = -(-num_rows // files)
    names = [f"masks-{f:032x}-{f:06d}.parquet" for f in range(files)]
    for f, name in enumerate(names):
        chunk = rows[f * per_file:(f + 1) * per_file]
        pq.write_table(pa.Table.from_pylist(chunk, schema=schema), os.path.join(output, name))
    image_column = "uri" if image_files else "image"
    input_rows = [{"id": r["id"], image_column: paths[i] if image_files else png(i),
                   "boxes": [b[:2] + [b[0] + b[2], b[1] + b[3]] for b in r["mask_bboxes"][:r["num_boxes"]]]}
                  for i, r in enumerate(rows)]
    images = os.path.join(inputs, "images.parquet")
    pq.write_table(pa.Table.from_pylist(input_rows), images, row_group_size=16)
    source = {"image_uri_column": "uri"} if image_files else {"image_column": "image"}
    config = parse_config({"input": {"path": images, "id_column": "id", **source, "boxes_column": "boxes",
                                     "box_format": "xyxy", "category_column": "labels"},
                           "output": {"path": output}, "model": {"checkpoint": "unused"},
                           "everything": {"rows": "all" if everything else "none"}})
    job_output = JobOutput(output)
    job_output.write_description(JobDescription(config, num_rows))
    job_output.write_manifest(Manifest(config_digest(config), num_rows, num_rows, names))
    return {"rows": rows, "output": output, "images": images, "paths": dict(zip([r["id"] for r in rows], paths, strict=True))}


def page_data(page: str) -> Dict[str, Any]:
    """The JSON data a review page carries."""
    text = open(page, encoding="utf-8").read()
    start = text.index('<script id="review-data" type="application/json">') + len('<script id="review-data" '
                                                                                  'type="application/json">')
    return json.loads(text[start:text.index("</script>", start)])


def expected_lowest(rows: List[Dict[str, Any]], n: int) -> List[str]:
    """Ids of the n rows with the lowest review score (min IoU / stability over the masks)."""
    scored = [(min(r["iou_scores"] + r["stability_scores"]), i, r["id"]) for i, r in enumerate(rows)
              if r["error"] is None and r["iou_scores"]]
    return [row_id for _, _, row_id in sorted(scored)[:n]]
