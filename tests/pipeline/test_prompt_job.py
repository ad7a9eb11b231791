"""Points, mask prompts and boxes through the whole job on a real local Ray cluster, with
model.multimask_keep: all, and what reads its output: the summary, the COCO and Label Studio
exports, the review page and the evaluation (which takes each prompt's best candidate)."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
from helpers.pipeline_data import png_bytes
from helpers.prompt_data import PROMPT_SCHEMA, Official, assert_same_mask, blob, decoded, prompt_table
from helpers.review_data import page_data

from pipeline.config import parse_config
from pipeline.evaluation.evaluate import evaluate_masks
from pipeline.exports.coco import export_coco
from pipeline.exports.label_studio import write_label_studio
from pipeline.job.run import run_job
from pipeline.masks import rle
from pipeline.output import JobOutput
from pipeline.output.results import ResultColumns, ResultReader
from pipeline.review.page import write_review
from pipeline.storage import Location
from samhq_core import SamHQProcessor

CANDIDATES = 3


def prompt_rows():
    """Three images: points only (with background points), points with boxes, mask prompts
    (alone and with a box); per prompt a category; one unusable prompt."""
    mask = blob(120, 160, 60, 80, 30, 45)
    return [
        {"id": "points", "image": png_bytes(120, 160, 21), "points": [[[40.0, 50.0]], [[100.0, 60.0], [30.0, 30.0]]],
         "labels": [[1], [1, 0]], "category": ["a", "b"]},
        {"id": "points_and_boxes", "image": png_bytes(100, 140, 22), "boxes": [[10.0, 10.0, 90.0, 80.0], None],
         "points": [[[50.0, 40.0]], [[120.0, 70.0]]], "labels": [[1], [1]], "category": ["b", "a"]},
        {"id": "masks", "image": png_bytes(120, 160, 23), "boxes": [None, [30.0, 20.0, 140.0, 110.0], None],
         "points": [None, None, [[999.0, 5.0]]], "masks": [rle.encode(mask), rle.encode(mask), None],
         "category": ["a", "a", "b"]},
    ]


def test_every_prompt_kind_through_the_job_with_all_candidates(ray_cluster, vit_pair, tmp_path):
    rows = prompt_rows()
    os.makedirs(tmp_path / "input")
    os.makedirs(tmp_path / "images")
    for row in rows:  # by URI, which the Label Studio tasks point at
        row["uri"] = str(tmp_path / "images" / f"{row['id']}.png")
        (tmp_path / "images" / f"{row['id']}.png").write_bytes(row["image"])
    schema = pa.schema([*(f for f in PROMPT_SCHEMA if f.name != "image"), pa.field("uri", pa.string()),
                        pa.field("category", pa.list_(pa.string()))])
    pq.write_table(prompt_table([{k: v for k, v in row.items() if k != "image"} for row in rows], schema),
                   tmp_path / "input" / "part-0.parquet")
    output = str(tmp_path / "output")
    config = parse_config({
        "input": {"path": str(tmp_path / "input"), "id_column": "id", "image_uri_column": "uri", "boxes_column": "boxes",
                  "points_column": "points", "point_labels_column": "labels", "mask_prompts_column": "masks",
                  "category_column": "category"},
        "output": {"path": output},
        "model": {"checkpoint": vit_pair.pth, "multimask_output": True, "multimask_keep": "all"},
        "compute": {"num_actors": 1, "batch_size": 2, "decode_batch_size": 2, "torch_threads": 2},
    })
    lines = []
    summary = run_job(config, log=lines.append)
    assert any(line.startswith("decode:") and "check prompts (boxes xyxy, points, point_labels, mask_prompts)" in line
               for line in lines), lines
    assert any(line.startswith("model:") and "multimask_keep: all" in line for line in lines), lines
    assert summary.closing.passed and summary.boxes == 7 and summary.masks == 6 and summary.errors == {}
    assert "prompts: 7 (masks: 6 x 3, unusable: 1)" in summary.render()
    assert "prompts without a mask: point 0 (999, 5) lies outside the 160 x 120 image (width x height): 1" in \
        summary.render()

    out = {row["id"]: row for row in pq.read_table(output).to_pylist()}
    reference, processor = Official(vit_pair.official), SamHQProcessor(256)
    best = {}  # id -> the official predictor's mask per prompt (None: unusable)
    for row in rows:
        got = out[row["id"]]
        count = len(row["category"])
        assert got["prompt_index"] == [p for p in range(count) for _ in range(CANDIDATES)]
        assert len(got["masks"]) == len(got["iou_scores"]) == len(got["mask_bboxes"]) == CANDIDATES * count
        assert got["category"] == row["category"] and len(got["box_errors"]) == got["num_boxes"] == count
        best[row["id"]] = []
        for p in range(count):
            if got["box_errors"][p] is not None:
                best[row["id"]].append(None)
                continue
            box, points = (row.get("boxes") or [None] * count)[p], (row.get("points") or [None] * count)[p]
            labels, mask = (row.get("labels") or [None] * count)[p], (row.get("masks") or [None] * count)[p]
            mask_input = None if mask is None else processor.mask_prompt_logits(rle.decode(mask, "test", "mask"))
            logits, iou, _, _ = reference.predict(decoded(row["image"]), box, points, labels, mask_input, True)
            mask = rle.decode(got["masks"][CANDIDATES * p], row["id"], "mask")
            assert_same_mask(mask, logits, f"{row['id']} prompt {p}")
            assert abs(got["iou_scores"][CANDIDATES * p] - iou) <= 1e-3
            best[row["id"]].append(mask)

    # Exports: every candidate of every usable prompt (but empty ones), with its prompt's
    # category and a region id of its own.
    exported = [(row["id"], i, row["category"][p]) for row in rows for i, p in enumerate(out[row["id"]]["prompt_index"])
                if out[row["id"]]["box_errors"][p] is None and out[row["id"]]["mask_areas"][i] > 0]
    assert len(exported) > 6  # more than the best candidates
    coco = export_coco(output, str(tmp_path / "coco.json"), id_column="id", category_column="category")
    assert coco["annotations"] == len(exported) and coco["skipped_boxes"] == 7 * CANDIDATES - len(exported)
    written = json.loads((tmp_path / "coco.json").read_text())
    names = {c["id"]: c["name"] for c in written["categories"]}
    row_of = {image["id"]: image["source_id"] for image in written["images"]}
    # per image, in its masks' order (the order of the output's rows is Ray's)
    by_row = {row["id"]: [category for row_id, _, category in exported if row_id == row["id"]] for row in rows}
    assert {row_id: [names[a["category_id"]] for a in written["annotations"] if row_of[a["image_id"]] == row_id]
            for row_id in by_row} == by_row
    reader = ResultReader(JobOutput(output), ResultColumns("id", "category", "uri"))
    write_label_studio(reader, Location(str(tmp_path / "tasks.json")))
    regions = [r["id"] for task in json.loads((tmp_path / "tasks.json").read_text())
               for r in task["predictions"][0]["result"]]
    assert len(regions) == len(set(regions)) == len(exported)

    # The review page: one entry per mask, marked by its place among the row's masks, drawn
    # with its prompt's box where the prompt has one.
    review = write_review(JobOutput(output), str(tmp_path / "page"))
    cards = {c["id"]: c for c in page_data(review.page)["cards"]}
    segments = cards["points_and_boxes"]["segments"]
    shown = [i for row_id, i, _ in exported if row_id == "points_and_boxes"]
    assert [s["box"] for s in segments] == shown and shown[0] == 0
    assert [s["prompt"] for s in segments] == [[10.0, 10.0, 90.0, 80.0] if i < CANDIDATES else None for i in shown]

    # Evaluation against one ground-truth mask per prompt: each prompt's best candidate, here
    # that mask itself, so a perfect score.
    truth = [{"id": row_id, "masks": [None if m is None else rle.encode(m) for m in masks]}
             for row_id, masks in best.items()]
    pq.write_table(pa.Table.from_pylist(truth), tmp_path / "truth.parquet")
    result = evaluate_masks(output, str(tmp_path / "truth.parquet"), id_column="id")
    assert result.evaluated_boxes == 6 and result.miou == 1.0, result
