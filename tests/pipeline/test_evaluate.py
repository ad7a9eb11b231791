"""Mask-quality evaluation (`pipeline.evaluation`): hand-computed IoU / boundary IoU, the boundary against a
scipy reference, COCO AP against pycocotools' COCOeval run directly, the streaming join, S3 and the CLI."""

import dataclasses
import io
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy import ndimage

from pipeline.cli import main
from pipeline.config import StorageConfig
from pipeline.evaluation.evaluate import evaluate_masks
from pipeline.evaluation.join import Spool
from pipeline.evaluation.report import write_report
from pipeline.masks.metrics import boundary, dilation_pixels, erode, mask_scores
from pipeline.schema import RESULT_FIELDS, RLE_TYPE
from pipeline.storage import Location

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------------------ test data


def square(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def disk(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def rle(m):
    encoded = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(s) for s in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def pred_row(row_id, size, masks, scores, box_errors=None, error=None, categories=None):
    """A result row as the pipeline writes it; a None mask is an unusable box (written as an empty mask)."""
    h, w = size
    rles = [rle(m if m is not None else np.zeros((h, w), bool)) for m in masks]
    row = {"id": row_id, "image_size": [h, w] if error is None else None, "masks": rles, "iou_scores": scores,
           "mask_areas": [int(mask_utils.area({**r, "counts": r["counts"].encode()})) for r in rles],
           "mask_bboxes": [[float(v) for v in mask_utils.toBbox({**r, "counts": r["counts"].encode()})] for r in rles],
           "box_errors": box_errors or [None] * len(masks), "error": error}
    if categories is not None:
        row["cat"] = categories
    return row


def gt_row(row_id, masks, categories=None):
    row = {"id": row_id, "masks": None if masks is None else [None if m is None else rle(m) for m in masks]}
    if categories is not None:
        row["cat"] = categories
    return row


def write_predictions(path, rows, with_categories=False):
    fields = [pa.field("id", pa.string())] + ([pa.field("cat", pa.list_(pa.string()))] if with_categories else [])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(fields + RESULT_FIELDS)), path)
    return path


def write_ground_truth(path, rows, with_categories=False):
    fields = [pa.field("id", pa.string()), pa.field("masks", pa.list_(RLE_TYPE))]
    if with_categories:
        fields.append(pa.field("cat", pa.list_(pa.string())))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(fields)), path)
    return path


def random_scene(rng, num_rows, prefix="img"):
    """[(id, (h, w), gt masks, categories)] with disks and rectangles, some touching the image border."""
    scenes = []
    for r in range(num_rows):
        h, w = int(rng.integers(30, 70)), int(rng.integers(30, 70))
        masks, cats = [], []
        for _ in range(int(rng.integers(1, 5))):
            if rng.random() < 0.5:
                masks.append(disk(h, w, rng.integers(0, h), rng.integers(0, w), rng.integers(4, 12)))
                cats.append("disk")
            else:
                y0, x0 = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
                masks.append(square(h, w, y0, y0 + int(rng.integers(5, 25)), x0, x0 + int(rng.integers(5, 25))))
                cats.append("rect")
        scenes.append((f"{prefix}-{r:03d}", (h, w), masks, cats))
    return scenes


def degrade(rng, m):
    kind = int(rng.integers(0, 4))
    if kind == 0:
        return m
    if kind == 1:
        return np.roll(m, (int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), axis=(0, 1))
    if kind == 2:
        return ndimage.binary_dilation(m, iterations=2)
    return ndimage.binary_erosion(m, iterations=1)


def reference_boundary(m, d):
    """Boundary IoU's mask_to_boundary with scipy instead of cv2: d erosions by a 3x3 square, zero border."""
    return m & ~ndimage.binary_erosion(m, structure=np.ones((3, 3), bool), iterations=d, border_value=0)


def reference_biou(g, p):
    d = dilation_pixels(*g.shape)
    bg, bp = reference_boundary(g, d), reference_boundary(p, d)
    union = (bg | bp).sum()
    return (bg & bp).sum() / union if union else 1.0


def direct_cocoeval(items, cat_ids=None, max_dets=None):
    """COCOeval run the plain way (JSON-like dicts, loadRes) on [(image key, (h, w), gt, pred, score, category)]."""
    keys = sorted({k for k, *_ in items})
    image_ids = {k: i + 1 for i, k in enumerate(keys)}
    sizes = {k: s for k, s, *_ in items}
    categories = sorted({c for *_, c in items})
    cat_id = {c: i + 1 for i, c in enumerate(categories)}
    anns, dets = [], []
    for key, _, g, p, score, category in items:
        g_rle = mask_utils.encode(np.asfortranarray(g.astype(np.uint8)))
        anns.append({"id": len(anns) + 1, "image_id": image_ids[key], "category_id": cat_id[category],
                     "segmentation": {"size": g_rle["size"], "counts": g_rle["counts"].decode()},
                     "area": float(mask_utils.area(g_rle)), "bbox": list(mask_utils.toBbox(g_rle)), "iscrowd": 0})
        p_rle = mask_utils.encode(np.asfortranarray(p.astype(np.uint8)))
        dets.append({"image_id": image_ids[key], "category_id": cat_id[category], "score": score,
                     "segmentation": {"size": p_rle["size"], "counts": p_rle["counts"].decode()}})
    gt = COCO()
    gt.dataset = {"images": [{"id": image_ids[k], "height": sizes[k][0], "width": sizes[k][1]} for k in keys],
                  "annotations": anns, "categories": [{"id": i, "name": c} for c, i in cat_id.items()]}
    gt.createIndex()
    ev = COCOeval(gt, gt.loadRes(dets), "segm")
    if cat_ids is not None:
        ev.params.catIds = [cat_id[c] for c in cat_ids]
    if max_dets is not None:
        ev.params.maxDets = max_dets
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats


# ------------------------------------------------------------------------------------ per-box metrics


def test_hand_computed_shifted_square():
    g = square(10, 10, 2, 6, 2, 6)  # 4x4
    p = square(10, 10, 2, 6, 3, 7)  # shifted right by one
    assert dilation_pixels(10, 10) == 1  # round(0.02 * 14.14) = 0 -> 1
    ring = g & ~square(10, 10, 3, 5, 3, 5)  # 4x4 minus its inner 2x2: 12 pixels
    np.testing.assert_array_equal(boundary(g), ring)
    # IoU: 12 / 20. Boundaries (12 pixels each) share rows 2 and 5 at columns 3..5: 6 / (12 + 12 - 6).
    assert mask_scores(g, p) == (12 / 20, 6 / 18)
    assert mask_scores(p, g) == (0.6, 1 / 3)


def test_full_image_mask_border_is_boundary_and_empty_masks():
    full = np.ones((10, 10), bool)
    border = full & ~square(10, 10, 1, 9, 1, 9)
    np.testing.assert_array_equal(boundary(full), border)  # outside the image is background
    assert boundary(full).sum() == 36
    assert mask_scores(full, full) == (1.0, 1.0)
    # Prediction misses the last row: boundary = row 0, row 8, columns 0 and 9 of rows 1..7 (34 pixels).
    # Shared with the full mask's 36: row 0 (10), columns 0 and 9 of rows 1..7 (14), (8, 0) and (8, 9): 26.
    short = square(10, 10, 0, 9, 0, 10)
    assert boundary(short).sum() == 34
    assert mask_scores(full, short) == (90 / 100, 26 / (36 + 34 - 26))

    empty = np.zeros((10, 10), bool)
    assert mask_scores(empty, empty) == (1.0, 1.0)
    assert mask_scores(empty, square(10, 10, 2, 6, 2, 6)) == (0.0, 0.0)
    assert mask_scores(square(10, 10, 2, 6, 2, 6), empty) == (0.0, 0.0)


def test_dilation_from_the_diagonal():
    assert [dilation_pixels(h, w) for h, w in ((3, 3), (10, 10), (100, 100), (1000, 1000), (480, 640))] == [1, 1, 3, 28, 16]
    # d = 3 on a 100x100 image: a 10x10 square keeps its inner 4x4 after erosion by a 7x7 square.
    m = square(100, 100, 40, 50, 40, 50)
    assert boundary(m).sum() == 100 - 16
    np.testing.assert_array_equal(boundary(m), m & ~square(100, 100, 43, 47, 43, 47))
    assert boundary(m, d=1).sum() == 100 - 64


def test_boundary_matches_scipy_reference_on_random_masks():
    rng = np.random.default_rng(7)
    for h, w in ((37, 53), (101, 67), (23, 151), (9, 7), (255, 129)):
        blobs = ndimage.gaussian_filter(rng.random((h, w)), sigma=3)
        masks = [blobs > np.quantile(blobs, q) for q in (0.3, 0.6, 0.9)] + [rng.random((h, w)) < 0.7]
        for m in masks:
            for d in {dilation_pixels(h, w), 1, 2, 5}:
                np.testing.assert_array_equal(boundary(m, d), reference_boundary(m, d), err_msg=f"{h}x{w} d={d}")
        for g, p in zip(masks, masks[1:] + masks[:1], strict=True):
            iou, biou = mask_scores(g, p)
            assert iou == pytest.approx((g & p).sum() / (g | p).sum(), abs=1e-15)
            assert biou == pytest.approx(reference_biou(g, p), abs=1e-15)


def test_erosion_equals_the_max_pool_formulation():
    """erode(M, d) = 1 - max_pool2d(pad(1 - M, d, value=1), kernel 2d+1, stride 1), the one-step form of
    d iterated 3x3 erosions with the outside as background."""
    rng = np.random.default_rng(11)
    for h, w in ((31, 45), (64, 17), (5, 5)):
        m = ndimage.gaussian_filter(rng.random((h, w)), sigma=2) > 0.45
        for d in (1, 3, 8):
            background = F.pad(1 - torch.from_numpy(m).float()[None, None], (d, d, d, d), value=1.0)
            expected = (1 - F.max_pool2d(background, kernel_size=2 * d + 1, stride=1))[0, 0].bool().numpy()
            np.testing.assert_array_equal(erode(m, d), expected, err_msg=f"{h}x{w} d={d}")


# ------------------------------------------------------------------------------------ whole datasets


def write_scenes(tmp_path, scenes, predictions, name, with_categories=True, scores=None):
    gt = write_ground_truth(str(tmp_path / f"{name}_gt" / "gt.parquet"),
                            [gt_row(i, masks, cats if with_categories else None) for i, _, masks, cats in scenes],
                            with_categories)
    rows = [pred_row(i, size, preds, scores[i] if scores else [0.9] * len(preds))
            for (i, size, _, _), preds in zip(scenes, predictions, strict=True)]
    return write_predictions(str(tmp_path / f"{name}_pred" / "part-0.parquet"), rows), gt


def test_perfect_and_degraded_predictions_against_cocoeval(tmp_path):
    rng = np.random.default_rng(0)
    scenes = random_scene(rng, 12)
    scores = {i: [float(rng.choice([0.5, 0.7, 0.9])) for _ in masks] for i, _, masks, _ in scenes}  # with ties

    pred, gt = write_scenes(tmp_path, scenes, [masks for _, _, masks, _ in scenes], "perfect", scores=scores)
    perfect = evaluate_masks(pred, gt, category_column="cat")
    n = sum(len(masks) for _, _, masks, _ in scenes)
    assert perfect.evaluated_boxes == n and perfect.matched_rows == 12
    assert (perfect.miou, perfect.mbiou) == (1.0, 1.0)
    assert (perfect.ap, perfect.ap50, perfect.ap75) == (pytest.approx(1.0), pytest.approx(1.0), pytest.approx(1.0))
    assert all(w.iou == 1.0 for w in perfect.worst)

    degraded_masks = [[degrade(rng, m) for m in masks] for _, _, masks, _ in scenes]
    pred, gt = write_scenes(tmp_path, scenes, degraded_masks, "degraded", scores=scores)
    degraded = evaluate_masks(pred, gt, category_column="cat", worst=5)
    by_box = {(i, k): (i, size, g, p, s, c) for (i, size, masks, cats), preds in zip(scenes, degraded_masks, strict=True)
              for k, (g, p, s, c) in enumerate(zip(masks, preds, scores[i], cats, strict=True))}
    items = list(by_box.values())
    assert degraded.ap < perfect.ap - 0.05
    stats = direct_cocoeval(items)
    assert (degraded.ap, degraded.ap50, degraded.ap75) == pytest.approx(tuple(stats[:3]), abs=1e-12)

    # pycocotools' own IoU as the independent check of ours
    ious = [mask_utils.iou([mask_utils.encode(np.asfortranarray(p.astype(np.uint8)))],
                           [mask_utils.encode(np.asfortranarray(g.astype(np.uint8)))], [0])[0, 0]
            if (g | p).any() else 1.0 for _, _, g, p, _, _ in items]
    bious = [reference_biou(g, p) for _, _, g, p, _, _ in items]
    assert degraded.miou == pytest.approx(np.mean(ious), abs=1e-12)
    assert degraded.mbiou == pytest.approx(np.mean(bious), abs=1e-12)
    assert degraded.miou < 1 and degraded.mbiou < degraded.miou  # boundaries are the harder part

    # Worst boxes: the 5 lowest IoUs, ascending.
    assert [w.iou for w in degraded.worst] == pytest.approx(sorted(ious)[:5], abs=1e-12)
    for w in degraded.worst:
        _, _, g, p, _, c = by_box[(w.id, w.box_index)]
        assert (w.iou, w.boundary_iou, w.category) == (pytest.approx(mask_scores(g, p)[0]),
                                                        pytest.approx(reference_biou(g, p)), c)

    # Per category: counts, means and AP equal to a COCOeval restricted to the category.
    assert set(degraded.per_category) == {"disk", "rect"}
    for category, m in degraded.per_category.items():
        mine = [k for k, it in enumerate(items) if it[5] == category]
        assert m.count == len(mine)
        assert m.miou == pytest.approx(np.mean([ious[k] for k in mine]), abs=1e-12)
        assert m.mbiou == pytest.approx(np.mean([bious[k] for k in mine]), abs=1e-12)
        assert m.ap == pytest.approx(direct_cocoeval(items, cat_ids=[category])[0], abs=1e-12)
    report = degraded.render_markdown()
    for text in ("| mIoU |", "| AP50 |", "## Worst 5 boxes by IoU", "| disk |", "| rect |"):
        assert text in report


def test_more_than_100_boxes_per_image_are_all_counted(tmp_path):
    h, w = 60, 72
    masks = [square(h, w, 5 * r, 5 * r + 4, 6 * c, 6 * c + 4) for r in range(12) for c in range(12)][:130]
    scenes = [("crowded", (h, w), masks, ["object"] * len(masks))]
    pred, gt = write_scenes(tmp_path, scenes, [masks], "crowded")
    result = evaluate_masks(pred, gt)
    assert result.evaluated_boxes == 130 and result.ap == pytest.approx(1.0)
    items = [("crowded", (h, w), m, m, 0.9, "object") for m in masks]
    assert direct_cocoeval(items)[0] < 0.8  # COCOeval's default keeps only 100 detections per image
    assert direct_cocoeval(items, max_dets=[1, 10, 130])[8] == pytest.approx(1.0)  # AR at maxDets[2]


def mixed_inputs(tmp_path, with_categories=True):
    """Rows on one side only, a failed row, box errors, a null ground-truth mask, a null category, a null id."""
    h, w = 20, 30
    a0, a1, a2 = square(h, w, 2, 10, 3, 12), disk(h, w, 12, 20, 5), square(h, w, 0, 20, 25, 30)
    b0, b1 = disk(h, w, 8, 8, 6), square(h, w, 10, 18, 15, 28)
    garbage = square(h, w, 0, 20, 0, 30)
    cats = {"a": ["cat", "dog", "cat"], "b": ["dog", "dog"], "c": ["cat", "cat"], "d": [None], "gt-only": ["cat"]}
    gt_rows = [gt_row("a", [a0, a1, a2], cats["a"]), gt_row("b", [b0, None], cats["b"]),
               gt_row("c", [a0, a1], cats["c"]), gt_row("d", [b1], cats["d"]), gt_row("gt-only", [a0], cats["gt-only"])]
    preds = {
        "a": [a0, garbage, np.roll(a2, 2, axis=1)],  # box 1 has a box error: its garbage must not count
        "b": [np.roll(b0, (1, 1), axis=(0, 1)), garbage],  # box 1: null ground truth
        "d": [b1],
    }
    pred_rows = [
        pred_row("a", (h, w), preds["a"], [0.9, float("nan"), 0.8], box_errors=[None, "inverted box", None]),
        pred_row("pred-only", (h, w), [a0], [0.9]),
        pred_row("b", (h, w), preds["b"], [0.7, 0.6]),
        pred_row("c", (h, w), [], [], error="image_decode: cannot identify image file"),
        pred_row(None, (h, w), [a0], [0.9]),
        pred_row("d", (h, w), preds["d"], [0.95]),
    ]
    gt = write_ground_truth(str(tmp_path / "gt" / "gt.parquet"), gt_rows, with_categories)
    pred = write_predictions(str(tmp_path / "pred" / "part-0.parquet"), pred_rows)
    evaluated = {("a", 0): (a0, preds["a"][0], 0.9, "cat"), ("a", 2): (a2, preds["a"][2], 0.8, "cat"),
                 ("b", 0): (b0, preds["b"][0], 0.7, "dog"), ("d", 0): (b1, b1, 0.95, None)}
    return pred, gt, evaluated


def test_unmatched_rows_errors_and_categories(tmp_path):
    pred, gt, evaluated = mixed_inputs(tmp_path)
    result = evaluate_masks(pred, gt, category_column="cat")
    assert (result.prediction_rows, result.ground_truth_rows, result.matched_rows) == (6, 5, 4)
    assert (result.predictions_without_ground_truth, result.ground_truth_without_predictions) == (1, 1)
    assert result.unmatched_examples == {"predictions": ["pred-only"], "ground_truth": ["gt-only"]}
    assert (result.error_rows, result.null_id_rows) == (1, 1)
    assert result.skipped_boxes == {"row_error": 2, "box_error": 1, "null_ground_truth": 1, "null_prediction": 0,
                                    "non_finite_score": 0, "null_category": 1}
    assert result.evaluated_boxes == 3
    boxes = {k: v for k, v in evaluated.items() if v[3] is not None}
    scores = {k: mask_scores(g, p) for k, (g, p, _, _) in boxes.items()}
    assert result.miou == pytest.approx(np.mean([s[0] for s in scores.values()]), abs=1e-15)
    assert result.mbiou == pytest.approx(np.mean([s[1] for s in scores.values()]), abs=1e-15)
    assert scores[("a", 0)] == (1.0, 1.0) and result.miou < 1

    items = [(k[0], (20, 30), g, p, s, c) for k, (g, p, s, c) in boxes.items()]
    assert (result.ap, result.ap50, result.ap75) == pytest.approx(tuple(direct_cocoeval(items)[:3]), abs=1e-12)
    assert list(result.per_category) == ["cat", "dog"]
    cat, dog = result.per_category["cat"], result.per_category["dog"]
    assert (cat.count, dog.count) == (2, 1)
    assert cat.miou == pytest.approx((scores[("a", 0)][0] + scores[("a", 2)][0]) / 2, abs=1e-15)
    assert (dog.miou, dog.mbiou) == scores[("b", 0)]
    for name, m in result.per_category.items():
        assert m.ap == pytest.approx(direct_cocoeval(items, cat_ids=[name])[0], abs=1e-12)
    assert [(w.id, w.box_index) for w in result.worst] == sorted(boxes, key=lambda k: scores[k])

    # Without a category column the null-category box is evaluated, and there is no per-category table.
    plain = evaluate_masks(pred, gt)
    assert plain.evaluated_boxes == 4 and plain.skipped_boxes["null_category"] == 0 and plain.per_category == {}
    all_ious = [mask_scores(g, p)[0] for g, p, _, _ in evaluated.values()]
    assert plain.miou == pytest.approx(np.mean(all_ious), abs=1e-15)
    text = plain.metrics_table()
    assert "| predictions without ground truth | 1 (e.g. 'pred-only') |" in text
    assert "| box not used by the pipeline (`box_errors` set) | 1 |" in text


def test_categories_from_the_predictions_when_the_ground_truth_has_none(tmp_path):
    h, w = 16, 16
    m0, m1 = square(h, w, 0, 8, 0, 8), disk(h, w, 10, 10, 4)
    gt = write_ground_truth(str(tmp_path / "gt.parquet"), [gt_row("x", [m0, m1])])
    pred = write_predictions(str(tmp_path / "pred.parquet"),
                             [pred_row("x", (h, w), [m0, np.roll(m1, 1, axis=0)], [0.9, 0.8], categories=["p", "q"])],
                             with_categories=True)
    result = evaluate_masks(pred, gt, category_column="cat")
    assert {c: m.count for c, m in result.per_category.items()} == {"p": 1, "q": 1}
    assert result.per_category["p"].miou == 1.0 and result.per_category["q"].miou < 1
    with pytest.raises(ValueError, match="'label' is in neither"):
        evaluate_masks(pred, gt, category_column="label")


def test_bad_inputs_raise(tmp_path):
    h, w = 12, 12
    m = square(h, w, 2, 6, 2, 6)
    pred = write_predictions(str(tmp_path / "pred.parquet"), [pred_row("x", (h, w), [m, m], [0.9, 0.9])])
    one = write_ground_truth(str(tmp_path / "one.parquet"), [gt_row("x", [m])])
    with pytest.raises(ValueError, match=r"row id='x'.*differ in length.*aligned with the boxes"):
        evaluate_masks(pred, one)
    dup = write_ground_truth(str(tmp_path / "dup.parquet"), [gt_row("x", [m, m]), gt_row("x", [m, m])])
    with pytest.raises(ValueError, match="ground truth: duplicate id 'x'"):
        evaluate_masks(pred, dup)
    other_size = write_ground_truth(str(tmp_path / "size.parquet"), [gt_row("x", [m, np.zeros((12, 13), bool)])])
    with pytest.raises(ValueError, match=r"mask 1 has size \[12, 12\], the ground truth \[12, 13\]"):
        evaluate_masks(pred, other_size)
    with pytest.raises(ValueError, match="missing column.*'image_id'"):
        evaluate_masks(pred, one, id_column="image_id")
    with pytest.raises(ValueError, match="overlays_dir and images go together"):
        evaluate_masks(pred, one, overlays_dir=str(tmp_path / "o"))
    assert main(["evaluate", "--predictions", pred, "--ground-truth", one, "--images", pred]) == 2


def test_streaming_join_does_not_change_results(tmp_path):
    rng = np.random.default_rng(3)
    scenes = random_scene(rng, 30)
    preds = [[degrade(rng, m) for m in masks] for _, _, masks, _ in scenes]
    scores = {i: [float(rng.choice([0.6, 0.8])) for _ in masks] for i, _, masks, _ in scenes}
    rows = [pred_row(i, size, p, scores[i]) for (i, size, _, _), p in zip(scenes, preds, strict=True)]
    order = rng.permutation(len(rows))
    pred_dir = tmp_path / "pred"
    for part, chunk in enumerate(np.array_split(order, 3)):  # three files, rows shuffled
        write_predictions(str(pred_dir / f"part-{part}.parquet"), [rows[k] for k in chunk])
    gt_dir = tmp_path / "gt"
    gt_rows = [gt_row(i, masks, cats) for i, _, masks, cats in scenes]
    write_ground_truth(str(gt_dir / "a.parquet"), gt_rows[::2], True)
    write_ground_truth(str(gt_dir / "b.parquet"), gt_rows[1::2][::-1], True)

    default = evaluate_masks(str(pred_dir), str(gt_dir), category_column="cat", worst=7)
    assert default.evaluated_boxes == sum(len(m) for _, _, m, _ in scenes) and default.ap < 1
    for partitions, batch_rows in ((3, 1), (1, 1), (5, 2)):
        other = evaluate_masks(str(pred_dir), str(gt_dir), category_column="cat", worst=7,
                               num_partitions=partitions, batch_rows=batch_rows)
        assert other == default, (partitions, batch_rows)  # exactly equal, floats included

    # The spool splits rows by a stable hash: every id in exactly one partition, the same one every time.
    ids = [i for i, _, _, _ in scenes]
    homes = []
    for _ in range(2):
        with Spool(str(tmp_path), f"probe{len(homes)}", 4) as spool:
            for i in ids:
                spool.write((i, None))
        homes.append({row[0]: part for part in range(4) for row in spool.read(part)})
    assert homes[0] == homes[1] and sorted(homes[0]) == sorted(ids) and len(set(homes[0].values())) > 1


def test_s3_inputs_and_report(s3_endpoint, tmp_path):
    import boto3

    pred, gt, _ = mixed_inputs(tmp_path)
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="eval")
    client.upload_file(pred, "eval", "run1/output/part-0.parquet")
    client.upload_file(gt, "eval", "truth/gt.parquet")
    storage = StorageConfig(endpoint_url=s3_endpoint)
    remote = evaluate_masks("s3://eval/run1/output", "s3://eval/truth/gt.parquet", category_column="cat",
                            storage=storage, num_partitions=2)
    local = evaluate_masks(pred, gt, category_column="cat")
    assert dataclasses.replace(remote, predictions=pred, ground_truth=gt) == local
    write_report(remote, Location("s3://eval/reports/quality.md", storage))
    text = client.get_object(Bucket="eval", Key="reports/quality.md")["Body"].read().decode()
    assert text == remote.render_markdown() and "Predictions: `s3://eval/run1/output`" in text


def test_cli_report_and_overlays(tmp_path):
    h, w = 24, 32
    g0, g1 = square(h, w, 4, 14, 4, 16), disk(h, w, 12, 24, 6)
    p0, p1 = square(h, w, 6, 16, 8, 20), g1
    gt = write_ground_truth(str(tmp_path / "gt.parquet"), [gt_row("im/1", [g0, g1], ["a", "b"])], True)
    write_predictions(str(tmp_path / "out" / "part-0.parquet"),
                      [pred_row("im/1", (h, w), [p0, p1], [0.8, 0.9])])
    buffer = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(buffer, format="PNG")
    images = str(tmp_path / "input.parquet")
    pq.write_table(pa.table({"id": ["im/1"], "image": [buffer.getvalue()]}), images)
    report, overlays = tmp_path / "report" / "quality.md", tmp_path / "overlays"

    proc = subprocess.run([sys.executable, "-m", "pipeline", "evaluate", "--predictions", str(tmp_path / "out"),
                           "--ground-truth", gt, "--report", str(report), "--category-column", "cat", "--worst", "2",
                           "--overlays-dir", str(overlays), "--images", images],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    iou0, biou0 = mask_scores(g0, p0)
    assert f"| mIoU | {(iou0 + 1) / 2:.4f} |" in proc.stdout and "| boxes evaluated | 2 |" in proc.stdout
    assert f"wrote {report}" in proc.stdout
    text = report.read_text()
    paths = [str(overlays / "worst_001_im_1_box0.png"), str(overlays / "worst_002_im_1_box1.png")]
    for path in paths:
        assert f"`{path}`" in text and os.path.exists(path)
    assert f"| 1 | im/1 | 0 | a | {iou0:.4f} | {biou0:.4f} |" in text

    png = np.asarray(Image.open(paths[0]).convert("RGB"))
    assert png.shape == (h, w, 3)
    np.testing.assert_array_equal(png[~(g0 | p0)], 128)  # untouched outside both masks
    np.testing.assert_array_equal(png[g0 & ~p0], [[64, 164, 64]] * int((g0 & ~p0).sum()))  # ground truth only: green
    np.testing.assert_array_equal(png[p0 & ~g0], [[179, 64, 64]] * int((p0 & ~g0).sum()))  # prediction only: red
    np.testing.assert_array_equal(png[g0 & p0], [[192, 172, 64]] * int((g0 & p0).sum()))  # overlap: yellow
