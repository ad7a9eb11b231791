"""Segment-everything through the whole job on a real local Ray cluster: rows without prompts
(everything.rows: without_prompts) and every row (all), without and with crop layers, against
the official SAM-HQ automatic mask generator on the same weights (the demo model's official
twin, bench/automatic_masks.py), image by image: the same number of masks, matched one to one
with IoU >= 0.99, in the same order, with the same boxes, crop boxes and areas, the same points
(to float32) and scores within 1e-3."""

import io
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from helpers import official
from helpers.paths import ROOT
from PIL import Image

from pipeline.config import ConfigError, parse_config
from pipeline.job.run import run_job
from pipeline.masks import rle
from pipeline.output import JobOutput
from pipeline.output.results import ResultColumns, ResultReader
from samhq_core import SamHQModel

sys.path.insert(0, ROOT)  # bench/
from bench.automatic_masks import DEMO, DEMO_THRESHOLDS, compare, official_twin, scenes

POINTS_PER_SIDE = 12
BOX = [20.0, 30.0, 150.0, 140.0]


@pytest.fixture(scope="module")
def twin():
    return official_twin(SamHQModel.from_pretrained(DEMO).eval(), official.segment_anything_hq)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def write_input(directory) -> dict:
    """Three scenes of different sizes: two without prompts (a null and an empty box list),
    one with a box."""
    images = {"plain": scenes(1, 256, 5)[0], "wide": scenes(1, 320, 6)[0][:200], "boxed": scenes(1, 256, 7)[0]}
    boxes = {"plain": None, "wide": [], "boxed": [BOX]}
    os.makedirs(directory)
    table = pa.table({"id": list(images), "image": [png(image) for image in images.values()],
                      "boxes": pa.array([boxes[k] for k in images], pa.list_(pa.list_(pa.float64())))})
    pq.write_table(table, os.path.join(directory, "part-0.parquet"))
    return images


def job_config(tmp_path, output, rows, crop_n_layers):
    return parse_config({
        "input": {"path": str(tmp_path / "input"), "id_column": "id", "image_column": "image", "boxes_column": "boxes"},
        "output": {"path": str(output)},
        # the official generator's mask (its predictor's hq_token_only=False), not the demo's hq_only
        "model": {"checkpoint": DEMO, "mask_source": "sam_plus_hq"},
        "everything": {"rows": rows, "points_per_side": POINTS_PER_SIDE, "crop_n_layers": crop_n_layers,
                       "crop_n_points_downscale_factor": 2, "multimask_output": False, **DEMO_THRESHOLDS},
        "compute": {"num_actors": 1, "batch_size": 2, "decode_batch_size": 2, "torch_threads": 2},
    })


def our_records(row):
    """The row's segment-everything masks as the official generator's binary_mask records."""
    records = []
    for i, found_by in enumerate(row["found_by"]):
        if found_by != "everything":
            continue
        x, y, w, h = row["mask_bboxes"][i]
        records.append({"segmentation": rle.decode(row["masks"][i], row["id"], f"mask {i}"),
                        "area": row["mask_areas"][i], "bbox": [int(x), int(y), int(w) - 1, int(h) - 1],
                        "predicted_iou": row["iou_scores"][i], "stability_score": row["stability_scores"][i],
                        "point_coords": [row["point_coords"][i]], "crop_box": [int(v) for v in row["crop_boxes"][i]]})
    return records


@pytest.mark.parametrize("rows, crop_n_layers", [("without_prompts", 0), ("all", 1)])
def test_everything_through_the_job_matches_the_official_generator(ray_cluster, twin, tmp_path, rows, crop_n_layers):
    images = write_input(tmp_path / "input")
    output = tmp_path / "output"
    lines = []
    summary = run_job(job_config(tmp_path, output, rows, crop_n_layers), log=lines.append)
    assert summary.closing.passed and summary.errors == {}, summary.render()
    assert any(line.startswith("model:") and f"segment-everything on rows {rows.replace('_', ' ')}" in line
               for line in lines), lines
    out = {row["id"]: row for row in pq.read_table(output).to_pylist()}
    generator = official.SamAutomaticMaskGenerator(twin, points_per_side=POINTS_PER_SIDE, crop_n_layers=crop_n_layers,
                                                   crop_n_points_downscale_factor=2, **DEMO_THRESHOLDS)
    total = 0
    for name, image in images.items():
        row = out[name]
        ours = our_records(row)
        if name == "boxed":
            assert row["found_by"][0] == "box" and row["prompt_index"][0] == 0 and row["point_coords"][0] is None
        if name == "boxed" and rows == "without_prompts":
            assert ours == [] and row["found_by"] == ["box"]
            continue
        assert all(p is None for p, f in zip(row["prompt_index"], row["found_by"], strict=True) if f == "everything")
        with torch.inference_mode():
            expected = generator.generate(image, False)
        agreement = compare(expected, ours)
        assert agreement["official"] == agreement["ours"] == agreement["matched"], (name, agreement)
        assert agreement["min_iou"] >= 0.99 and agreement["max_score_diff"] <= 1e-3, (name, agreement)
        for theirs, mine in zip(expected, ours, strict=True):  # in the same order; points stored as float32
            assert [theirs[k] for k in ("bbox", "area", "crop_box")] == [mine[k] for k in ("bbox", "area", "crop_box")]
            assert np.allclose(theirs["point_coords"], mine["point_coords"], atol=1e-4), name
        total += len(ours)
    assert total >= 5, "the scenes must yield masks for the comparison to mean something"
    if crop_n_layers:
        assert any(r["crop_box"] != [0, 0, 256, 256] for r in our_records(out["plain"])), "no mask from a crop"

    # The exports' reader takes every segment-everything mask, in the default category.
    reader = ResultReader(JobOutput(str(output)), ResultColumns("id", default_category="thing"))
    exported = {image.row_id: [(m.found_by, m.category_id, m.box_index) for m in image.masks]
                for image in reader.images()}
    assert reader.categories() == [{"id": 1, "name": "thing"}]
    for name in images:
        found = [f for f, a in zip(out[name]["found_by"], out[name]["mask_areas"], strict=True) if a > 0]
        assert [f for f, _, _ in exported[name]] == found
        assert all(box is None for f, _, box in exported[name] if f == "everything")


def test_a_job_without_prompt_columns_needs_everything(tmp_path):
    config = {"input": {"path": "in", "id_column": "id", "image_column": "image"}, "output": {"path": "out"},
              "model": {"checkpoint": DEMO}}
    with pytest.raises(ConfigError, match="set at least one prompt column"):
        parse_config(config)
    parsed = parse_config({**config, "everything": {"rows": "without_prompts"}})
    assert parsed.everything.enabled and parsed.everything.crops_per_image == 1
    with pytest.raises(ConfigError, match="crop layer 3 would have no points"):
        parse_config({**config, "everything": {"rows": "all", "points_per_side": 4, "crop_n_layers": 3,
                                               "crop_n_points_downscale_factor": 2}})
