"""Masks by what found them (found_by) in the job's closing summary and in `status`, on small
outputs written here: counted per value, an unusable prompt's empty mask not counted, nothing
said for outputs written before found_by."""

import math
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from helpers.result_data import describe_job
from pycocotools import mask as mask_utils

from pipeline.cli import main
from pipeline.job.summary import summarize_output
from pipeline.output import JobOutput
from pipeline.schema import RESULT_FIELDS
from pipeline.status.audit import audit_output

H, W = 16, 20
INPUT = {"id_column": "id", "image_column": "image"}


def mask(y0, y1, x0, x1):
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    encoded = mask_utils.encode(np.asfortranarray(m))
    return {"size": [H, W], "counts": encoded["counts"].decode("ascii")}


def row(row_id, found, box_errors=(), error=None):
    """A result row; `found`: per mask (found_by, prompt index or None, score)."""
    n = len(found)
    return {"id": row_id, "image_size": [H, W] if error is None else None, "masks": [mask(1, 5, 1, 5)] * n,
            "iou_scores": [score for _, _, score in found], "stability_scores": [0.9] * n, "mask_areas": [16] * n,
            "mask_bboxes": [[1.0, 1.0, 4.0, 4.0]] * n, "prompt_index": [p for _, p, _ in found],
            "found_by": [kind for kind, _, _ in found], "point_coords": [None] * n, "crop_boxes": [None] * n,
            "box_errors": list(box_errors), "error": error, "num_boxes": len(box_errors)}


ROWS = [
    # a box, a box with points, a box that could not be used (its empty mask, score NaN), then segment-everything
    row("a", [("box", 0, 0.9), ("box+points", 1, 0.8), ("box", 2, math.nan), ("everything", None, 0.7),
              ("everything", None, 0.6)], box_errors=[None, None, "inverted box"]),
    row("b", [("everything", None, 0.95)]),  # no prompts
    row("c", [("points", 0, 0.5)], box_errors=[None]),
    row("d", [], error="image_decode: cannot identify image file"),
]
EXPECTED = {"box": 1, "points": 1, "box+points": 1, "everything": 3}
LINE = "masks by what found them: box 1, box+points 1, points 1, everything 3"


def write_output(directory, files, drop=()):
    """A job's output: its description and one result file per list of rows."""
    os.makedirs(directory)
    schema = pa.schema([pa.field("id", pa.string())] + [f for f in RESULT_FIELDS if f.name not in drop])
    for k, rows in enumerate(files):
        table = pa.Table.from_pylist(rows, schema=schema)
        pq.write_table(table, os.path.join(directory, f"masks-0a1b-{k:06d}-0.parquet"))
    describe_job(str(directory), sum(len(rows) for rows in files), INPUT, output_keys={"mode": "overwrite"})
    return str(directory)


def summary_of(output):
    handle = JobOutput(output)
    description = handle.read_description()
    return summarize_output(description.config, handle, handle.result_files().files, description.rows_in)


def test_summary_and_status_count_masks_by_what_found_them(tmp_path, capsys):
    output = write_output(tmp_path / "out", [ROWS[:2], ROWS[2:]])  # two files: counts add up
    summary = summary_of(output)
    assert summary.found_by == EXPECTED
    assert f"  {LINE}" in summary.render().splitlines()
    status = audit_output(JobOutput(output))
    assert status.found_by == EXPECTED and LINE in status.render()
    main(["status", output])
    assert LINE in capsys.readouterr().out.splitlines()


def test_outputs_without_found_by_say_nothing_of_it(tmp_path):
    old = write_output(tmp_path / "old", [ROWS], drop=("found_by", "point_coords", "crop_boxes"))
    summary, status = summary_of(old), audit_output(JobOutput(old))
    assert summary.found_by is None and status.found_by is None
    assert "found them" not in summary.render() and not any("found them" in line for line in status.render())
    assert summary.rows_out == 4 and summary.masks == 3  # the rest as before

    # A file of an earlier version beside one with found_by: the latter's masks are counted.
    mixed = tmp_path / "mixed"
    write_output(mixed, [ROWS[2:]])
    shutil.copy(os.path.join(old, "masks-0a1b-000000-0.parquet"), os.path.join(mixed, "masks-0a1b-000001-0.parquet"))
    assert audit_output(JobOutput(str(mixed))).found_by == {"points": 1}

    # found_by with no mask at all: said, as none.
    empty = write_output(tmp_path / "empty", [[ROWS[3]]])
    assert summary_of(empty).found_by == {} and "masks by what found them: none" in summary_of(empty).render()
