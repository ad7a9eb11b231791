"""Segment-everything in `evaluate`: its masks as detections against the rows' ground-truth objects
(class-agnostic COCO mask AP), checked against pycocotools' COCOeval run here on COCO dicts built by
hand; rows without prompts, whose ground truth is the image's objects; prompt masks beside them
evaluated as before; outputs without found_by as before. (test_evaluate.py holds the per-prompt
evaluation's tests; it is past the size of one file.)"""

import dataclasses
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipeline.cli import main
from pipeline.config import parse_config
from pipeline.evaluation.evaluate import evaluate_masks
from pipeline.masks.metrics import mask_scores
from pipeline.output import JobDescription, JobOutput
from pipeline.schema import RESULT_FIELDS, RLE_TYPE

H, W = 48, 64


def square(y0, y1, x0, x1, h=H, w=W):
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def rle(m):
    encoded = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(s) for s in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def result_row(row_id, prompt_masks=(), prompt_scores=(), everything=(), everything_scores=(), box_errors=None,
               error=None, size=(H, W)):
    """A result row as the job writes it: the prompts' masks (one per prompt, found by a box) then
    segment-everything's, with found_by, prompt_index, point_coords and crop_boxes."""
    masks = [rle(m) for m in (*prompt_masks, *everything)]
    n_prompt, n_all = len(prompt_masks), len(masks)
    stored = [{**r, "counts": r["counts"].encode()} for r in masks]
    return {"id": row_id, "image_size": list(size) if error is None else None, "masks": masks,
            "iou_scores": [*prompt_scores, *everything_scores],
            "stability_scores": [0.9] * n_all,
            "mask_areas": [int(a) for a in mask_utils.area(stored)] if stored else [],
            "mask_bboxes": [[float(v) for v in b] for b in mask_utils.toBbox(stored)] if stored else [],
            "prompt_index": [*range(n_prompt), *[None] * (n_all - n_prompt)],
            "found_by": ["box"] * n_prompt + ["everything"] * (n_all - n_prompt),
            "point_coords": [None] * n_prompt + [[1.0, 2.0]] * (n_all - n_prompt),
            "crop_boxes": [None] * n_prompt + [[0.0, 0.0, float(size[1]), float(size[0])]] * (n_all - n_prompt),
            "box_errors": box_errors if box_errors is not None else [None] * n_prompt, "error": error,
            "num_boxes": n_prompt}


def write_results(directory, rows, drop=()):
    schema = pa.schema([pa.field("id", pa.string())] + [f for f in RESULT_FIELDS if f.name not in drop])
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "masks-0a1b-000000-0.parquet")  # named as the job names its files
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return str(directory)


def write_ground_truth(path, rows):
    """rows: {id: list of masks (None: a null entry) or None (a null list)}."""
    table = pa.Table.from_pylist(
        [{"id": i, "masks": None if ms is None else [None if m is None else rle(m) for m in ms]} for i, ms in rows.items()],
        schema=pa.schema([pa.field("id", pa.string()), pa.field("masks", pa.list_(RLE_TYPE))]))
    pq.write_table(table, str(path))
    return str(path)


def describe(output, everything_rows):
    """The job's description beside results, with its everything.rows."""
    config = parse_config({"input": {"path": "unused.parquet", "id_column": "id", "image_column": "image",
                                     "boxes_column": "boxes"}, "output": {"path": output},
                           "model": {"checkpoint": "unused"}, "everything": {"rows": everything_rows}})
    JobOutput(output).write_description(JobDescription(config, 1))


def cocoeval_by_hand(images):
    """AP, AP50, AP75 and AR@100 of COCOeval's summary (default parameters), class-agnostic, for
    [(objects, [(mask, score)])] per image: with fewer than 100 masks per image, every mask counts,
    as at the evaluation's maxDets 1000."""
    coco_images, anns, dets = [], [], []
    for image_id, (objects, found) in enumerate(images, 1):
        coco_images.append({"id": image_id, "height": H, "width": W})
        for m in objects:
            encoded = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                         "segmentation": {"size": encoded["size"], "counts": encoded["counts"].decode()},
                         "area": float(mask_utils.area(encoded)), "bbox": list(mask_utils.toBbox(encoded))})
        for m, score in found:
            encoded = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            dets.append({"image_id": image_id, "category_id": 1, "score": score,
                         "segmentation": {"size": encoded["size"], "counts": encoded["counts"].decode()}})
    gt = COCO()
    gt.dataset = {"images": coco_images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}
    gt.createIndex()
    ev = COCOeval(gt, gt.loadRes(dets), "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats[0], ev.stats[1], ev.stats[2], ev.stats[8]


def grid(count, size=4, step=5):
    """`count` disjoint squares on a grid (all fit in H x W for count <= 108)."""
    per_row = W // step
    return [square(step * (k // per_row), step * (k // per_row) + size, step * (k % per_row),
                   step * (k % per_row) + size) for k in range(count)]


def test_everything_masks_equal_to_the_ground_truth_have_ap_1(tmp_path):
    """Rows without prompts, ground truth in another order than the masks: AP 1 at every threshold.
    150 masks on one image (a larger image): none is cut by COCO's usual 100 detections."""
    rng = np.random.default_rng(0)
    objects = {"a": grid(7), "b": grid(12)[3:], "c": [square(5, 40, 10, 60)]}
    rows = []
    for i, ms in objects.items():
        order = rng.permutation(len(ms))
        rows.append(result_row(i, everything=[ms[k] for k in order],
                               everything_scores=[float(s) for s in rng.uniform(0.5, 1.0, len(ms))]))
    crowded = [square(5 * (k // 15), 5 * (k // 15) + 4, 5 * (k % 15), 5 * (k % 15) + 4, 60, 80) for k in range(150)]
    rows.append(result_row("crowded", everything=crowded, everything_scores=[0.9] * 150, size=(60, 80)))
    objects["crowded"] = crowded
    pred = write_results(tmp_path / "out", rows)
    gt = write_ground_truth(tmp_path / "gt.parquet", objects)

    result = evaluate_masks(pred, gt)
    e = result.everything
    assert e is not None
    assert (e.ap, e.ap50, e.ap75, e.ar) == (pytest.approx(1.0), pytest.approx(1.0), pytest.approx(1.0),
                                            pytest.approx(1.0))
    assert (e.images, e.rows_without_prompts, e.masks, e.objects, e.max_dets) == (4, 4, 167, 167, 1000)
    # No prompts: no per-prompt metrics (rather than n/a or a misalignment error).
    assert result.prompt_rows == 0 and result.evaluated_boxes == 0 and not result.has_prompt_metrics
    table = result.metrics_table()
    assert "| mIoU |" not in table and "## Segment-everything" in table and "| AR@1000 | 1.0000 |" in table
    assert "- Segment-everything:" in result.render_markdown() and "- IoU:" not in result.render_markdown()


def test_a_miss_and_false_positives_give_the_ap_cocoeval_gives(tmp_path):
    """Image a (no prompts): one object found exactly, one found shifted, one missed, and a false
    positive scored highest. Image b (no prompts): its object found roughly, then a duplicate (a
    false positive). Image c (a box prompt and segment-everything): the prompt's mask is evaluated
    per prompt as before; segment-everything's, against the prompt's object."""
    g0, g1, g2 = square(2, 12, 2, 14), square(20, 34, 4, 20), square(30, 44, 40, 60)
    g3, g4 = square(10, 30, 30, 50), square(5, 25, 5, 25)
    shifted = np.roll(g1, 2, axis=1)
    rough = np.roll(g3, (2, 3), axis=(0, 1))
    stray = square(40, 46, 2, 8)
    p4 = np.roll(g4, 1, axis=0)
    found = {"a": [(stray, 0.95), (g0, 0.9), (shifted, 0.8)], "b": [(rough, 0.7), (g3, 0.4)],
             "c": [(g4, 0.85), (stray, 0.3)]}
    objects = {"a": [g2, g0, g1], "b": [g3], "c": [g4]}
    rows = [result_row(i, everything=[m for m, _ in f], everything_scores=[s for _, s in f])
            for i, f in found.items() if i != "c"]
    rows.append(result_row("c", prompt_masks=[p4], prompt_scores=[0.8], everything=[m for m, _ in found["c"]],
                           everything_scores=[s for _, s in found["c"]]))
    pred = write_results(tmp_path / "out", rows)
    gt = write_ground_truth(tmp_path / "gt.parquet", objects)

    result = evaluate_masks(pred, gt)
    e = result.everything
    expected = cocoeval_by_hand([(objects[i], found[i]) for i in ("a", "b", "c")])
    assert (e.ap, e.ap50, e.ap75, e.ar) == pytest.approx(expected, abs=1e-12)
    assert 0 < e.ap < e.ap50 < 1 and e.ar < 1  # the miss and the false positives cost
    assert (e.images, e.rows_without_prompts, e.masks, e.objects) == (3, 2, 7, 5)
    # The prompt's mask: per prompt, against the prompt's ground truth, as before.
    assert result.prompt_rows == 1 and result.evaluated_boxes == 1 and result.has_prompt_metrics
    assert result.miou == pytest.approx(mask_scores(g4, p4)[0], abs=1e-15)
    table = result.metrics_table()
    assert "| mIoU |" in table and "## Segment-everything" in table


def test_which_rows_take_part_and_what_is_left_out(tmp_path):
    """A row without prompts where segment-everything found nothing: its objects are misses once
    the job has segment-everything masks elsewhere or its description says it ran; without either,
    its ground truth is misaligned as before. Null lists and entries, and non-finite scores, are
    left out."""
    g0, g1 = square(2, 12, 2, 14), square(20, 34, 4, 20)
    nothing = result_row("nothing")  # no prompts, no masks
    found = result_row("found", everything=[g0, g1, g1], everything_scores=[0.9, 0.8, float("nan")])
    unannotated = result_row("unannotated", everything=[g0], everything_scores=[0.9])
    gt = write_ground_truth(tmp_path / "gt.parquet",
                            {"nothing": [g0, g1], "found": [g0, None, g1], "unannotated": None})

    result = evaluate_masks(write_results(tmp_path / "both", [nothing, found, unannotated]), gt)
    e = result.everything
    assert (e.images, e.masks, e.objects, e.skipped_masks, e.null_objects, e.unannotated_rows) == (2, 2, 4, 1, 1, 1)
    assert (e.ap, e.ar) == pytest.approx(cocoeval_by_hand([([g0, g1], []), ([g0, g1], [(g0, 0.9), (g1, 0.8)])])[::3])
    assert e.ar == pytest.approx(0.5)  # half the objects, those of "nothing", missed

    alone = write_results(tmp_path / "alone", [nothing])
    with pytest.raises(ValueError, match=r"id='nothing': no prompts and no segment-everything masks, but 2 "
                                         "ground-truth masks"):
        evaluate_masks(alone, gt)
    describe(alone, "without_prompts")
    ran = evaluate_masks(alone, gt).everything
    assert (ran.images, ran.objects, ran.masks, ran.ar) == (1, 2, 0, 0.0)


def test_a_row_with_prompts_joins_without_masks_only_under_rows_all(tmp_path):
    g0 = square(2, 12, 2, 14)
    rows = [result_row("boxed", prompt_masks=[g0], prompt_scores=[0.9]),
            result_row("open", everything=[g0], everything_scores=[0.9])]
    gt = write_ground_truth(tmp_path / "gt.parquet", {"boxed": [g0], "open": [g0]})
    for rows_setting, images, ar in (("without_prompts", 1, 1.0), ("all", 2, 0.5)):
        out = write_results(tmp_path / rows_setting, rows)
        describe(out, rows_setting)
        result = evaluate_masks(out, gt)
        assert (result.everything.images, result.everything.ar) == (images, pytest.approx(ar))
        assert result.evaluated_boxes == 1 and result.miou == 1.0


def test_outputs_without_found_by_evaluate_as_before(tmp_path):
    """Files without found_by (nor prompt_index, point_coords, crop_boxes): every mask a prompt's,
    no segment-everything section, a row without boxes whose ground truth has masks misaligned."""
    g0, g1 = square(2, 12, 2, 14), square(20, 34, 4, 20)
    rows = [result_row("x", prompt_masks=[g0, np.roll(g1, 1, axis=0)], prompt_scores=[0.9, 0.7])]
    gt = write_ground_truth(tmp_path / "gt.parquet", {"x": [g0, g1]})
    old = evaluate_masks(write_results(tmp_path / "old", rows, drop=("found_by", "prompt_index", "point_coords",
                                                                      "crop_boxes")), gt)
    new = evaluate_masks(write_results(tmp_path / "new", rows), gt)
    assert old.everything is None and old.has_prompt_metrics and old.evaluated_boxes == 2
    assert dataclasses.replace(old, predictions=new.predictions) == new
    assert "Segment-everything" not in old.render_markdown()
    empty = write_results(tmp_path / "empty", [result_row("x")], drop=("found_by",))
    with pytest.raises(ValueError, match="differ in length"):
        evaluate_masks(empty, gt)


def test_cli_prints_the_section(tmp_path, capsys):
    g0 = square(2, 12, 2, 14)
    pred = write_results(tmp_path / "out", [result_row("x", everything=[g0], everything_scores=[0.9])])
    gt = write_ground_truth(tmp_path / "gt.parquet", {"x": [g0]})
    report = tmp_path / "report.md"
    assert main(["evaluate", "--predictions", pred, "--ground-truth", gt, "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "## Segment-everything" in out and "| AP | 1.0000 |" in out and "| mIoU |" not in out
    assert "| AR@1000 | 1.0000 |" in report.read_text()
