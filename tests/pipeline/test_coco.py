"""COCO export of result Parquet files, checked with the real pycocotools (COCO, COCOeval)."""

import json
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.result_data import describe_job, disk_mask, encode, rect_mask, result_row, write_results
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipeline.config import StorageConfig
from pipeline.exports.coco import export_coco
from pipeline.schema import RESULT_FIELDS

H1, W1, H2, W2 = 20, 30, 16, 24
MASKS = {
    "a0": rect_mask(H1, W1, 2, 10, 3, 12),
    "a1": disk_mask(H1, W1, 12, 20, 5),
    "b1": rect_mask(H2, W2, 0, 16, 20, 24),  # touches the image border
    "b3": disk_mask(H2, W2, 6, 6, 3),
}


def string_category_rows():
    return [
        result_row("img-a", (H1, W1), [MASKS["a0"], MASKS["a1"]], [0.91, 0.75], categories=["cat", "dog"]),
        result_row("img-b", (H2, W2), [None, MASKS["b1"], None, MASKS["b3"]], [float("nan"), 0.5, 0.2, 0.8],
                   box_errors=["inverted box", None, None, None],
                   # box 0: error (its category still gets an id), box 2: empty mask, box 3: null category
                   categories=["fish", "dog", "cat", None]),
        result_row("img-c", None, [], [], categories=["bird"], error="image_decode: cannot identify image file"),
    ]


@pytest.fixture
def string_results(tmp_path):
    return write_results(str(tmp_path / "in" / "part-0.parquet"), string_category_rows())


def test_export_loads_in_pycocotools(string_results, tmp_path):
    out = str(tmp_path / "out" / "coco.json")
    counts = export_coco(string_results, out, id_column="id", category_column="cat")
    assert counts == {"images": 2, "annotations": 3, "skipped_rows": 1, "skipped_boxes": 3, "categories": 4}

    gt = COCO(out)
    assert sorted(gt.getImgIds()) == [1, 2]
    img_a, img_b = gt.loadImgs([1, 2])
    assert (img_a["file_name"], img_a["source_id"], img_a["height"], img_a["width"]) == ("img-a", "img-a", H1, W1)
    assert (img_b["file_name"], img_b["source_id"], img_b["height"], img_b["width"]) == ("img-b", "img-b", H2, W2)

    # Category ids in order of first appearance over all rows (failed rows, skipped boxes included).
    cats = {c["name"]: c["id"] for c in gt.loadCats(gt.getCatIds())}
    assert cats == {"cat": 1, "dog": 2, "fish": 3, "bird": 4}

    anns = gt.loadAnns(gt.getAnnIds())
    assert [a["id"] for a in anns] == [1, 2, 3]
    expected = [  # (image_id, mask, category, score)
        (1, MASKS["a0"], "cat", 0.91),
        (1, MASKS["a1"], "dog", 0.75),
        (2, MASKS["b1"], "dog", 0.5),
    ]
    for ann, (image_id, mask, category, score) in zip(anns, expected, strict=True):
        assert ann["image_id"] == image_id
        assert ann["category_id"] == cats[category]
        assert ann["iscrowd"] == 0
        np.testing.assert_array_equal(gt.annToMask(ann), mask)
        rle, _ = encode(mask)
        assert ann["area"] == float(mask.sum()) == float(mask_utils.area(rle))
        np.testing.assert_allclose(ann["bbox"], mask_utils.toBbox(rle))
        assert ann["score"] == pytest.approx(score, abs=1e-6)  # stored as float32
        assert ann["segmentation"]["size"] == list(mask.shape)
    assert anns[0]["bbox"] == [3.0, 2.0, 9.0, 8.0]

    with open(out) as f:
        assert list(json.load(f)) == ["info", "licenses", "images", "annotations", "categories"]


def test_cocoeval_scores_the_export_against_the_masks_it_came_from(string_results, tmp_path):
    """pycocotools' COCOeval of the exported annotations as detections against a ground truth
    made here from the masks the results were written from (not from the export): AP 1 only
    when every exported mask is its source mask, in its image, under its category."""
    out = str(tmp_path / "coco.json")
    export_coco(string_results, out, id_column="id", category_column="cat")
    exported = json.load(open(out))
    image_ids = {im["source_id"]: im["id"] for im in exported["images"]}
    category_ids = {c["name"]: c["id"] for c in exported["categories"]}
    # The usable masks: img-b's box 0 has an error, box 2 an empty mask, box 3 a null category.
    expected = [("img-a", "cat", MASKS["a0"]), ("img-a", "dog", MASKS["a1"]), ("img-b", "dog", MASKS["b1"])]
    truth = COCO()
    truth.dataset = {
        "images": [{"id": image_ids[row_id], "height": h, "width": w} for row_id, (h, w) in
                   (("img-a", (H1, W1)), ("img-b", (H2, W2)))],
        "annotations": [{"id": n + 1, "image_id": image_ids[row_id], "category_id": category_ids[name],
                         "segmentation": encode(mask)[1], "area": float(mask.sum()), "iscrowd": 0,
                         "bbox": [float(v) for v in mask_utils.toBbox(encode(mask)[0])]}
                        for n, (row_id, name, mask) in enumerate(expected)],
        "categories": [{"id": i, "name": name} for name, i in category_ids.items()],
    }
    truth.createIndex()

    def evaluate(dets):
        # loadRes adds keys (bbox, area, id) to the dicts it gets: give it copies.
        ev = COCOeval(truth, truth.loadRes([dict(d) for d in dets]), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        return ev.stats

    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
             "score": a["score"]} for a in exported["annotations"]]
    assert len(dets) == len(expected)
    assert evaluate(dets)[0] == pytest.approx(1.0)

    # The evaluation is sensitive: a wrong mask for one annotation lowers the AP.
    _, wrong = encode(rect_mask(H1, W1, 14, 20, 0, 4))
    dets[0] = {**dets[0], "segmentation": wrong}
    assert evaluate(dets)[0] < 0.9


def test_directory_of_files_with_integer_categories_and_small_batches(tmp_path):
    d = tmp_path / "results"
    write_results(str(d / "part-1.parquet"), [
        result_row(10, (H1, W1), [MASKS["a0"], MASKS["a1"]], [0.9, 0.8], categories=[7, 3]),
        result_row(11, None, [], [], categories=[]),  # null image_size without an error: skipped
    ], id_type=pa.int64(), category_type=pa.list_(pa.int64()))
    write_results(str(d / "sub" / "part-2.parquet"), [
        result_row(12, (H2, W2), [MASKS["b1"], MASKS["b3"]], [0.7, 0.6], categories=[7, None]),
        # A box with an error is skipped even with a non-empty mask.
        result_row(13, (H2, W2), [MASKS["b3"], MASKS["b1"]], [0.4, 0.3], box_errors=[None, "non-finite box"],
                   categories=[5, 5]),
        # A failed row is skipped even when its image_size is known.
        result_row(14, (H2, W2), [], [], categories=[9], error="model: CUDA out of memory"),
    ], id_type=pa.int64(), category_type=pa.list_(pa.int32()))
    (d / "_SUCCESS").write_text("")  # non-Parquet files are ignored

    out = str(tmp_path / "coco.json")
    counts = export_coco(str(d), out, id_column="id", category_column="cat", batch_rows=1)
    assert counts == {"images": 3, "annotations": 4, "skipped_rows": 2, "skipped_boxes": 2, "categories": 4}

    gt = COCO(out)
    images = gt.loadImgs(sorted(gt.getImgIds()))
    assert [(i["id"], i["source_id"], i["file_name"]) for i in images] == [(1, 10, "10"), (2, 12, "12"), (3, 13, "13")]
    assert gt.dataset["categories"] == [{"id": 3, "name": "3"}, {"id": 5, "name": "5"}, {"id": 7, "name": "7"},
                                        {"id": 9, "name": "9"}]
    anns = gt.loadAnns(gt.getAnnIds())
    assert [(a["id"], a["image_id"], a["category_id"]) for a in anns] == [(1, 1, 7), (2, 1, 3), (3, 2, 7), (4, 3, 5)]
    np.testing.assert_array_equal(gt.annToMask(anns[3]), MASKS["b3"])

    # The same export in one batch per file.
    out_big = str(tmp_path / "coco_big.json")
    assert export_coco(str(d), out_big, id_column="id", category_column="cat") == counts
    with open(out) as f, open(out_big) as g:
        a, b = json.load(f), json.load(g)
    assert {k: v for k, v in a.items() if k != "info"} == {k: v for k, v in b.items() if k != "info"}

    # A glob selects files too.
    counts_glob = export_coco(str(d / "sub" / "*.parquet"), str(tmp_path / "g.json"), id_column="id",
                              category_column="cat")
    assert (counts_glob["images"], counts_glob["annotations"]) == (2, 2)


def test_without_category_column(string_results, tmp_path):
    out = str(tmp_path / "coco.json")
    counts = export_coco(string_results, out, id_column="id")
    # Box 3 of img-b (null category before) is now exported.
    assert counts == {"images": 2, "annotations": 4, "skipped_rows": 1, "skipped_boxes": 2, "categories": 1}
    gt = COCO(out)
    assert gt.dataset["categories"] == [{"id": 1, "name": "object"}]
    anns = gt.loadAnns(gt.getAnnIds())
    assert {a["category_id"] for a in anns} == {1}
    np.testing.assert_array_equal(gt.annToMask(anns[3]), MASKS["b3"])


def test_s3_input_and_output(s3_endpoint, string_results, tmp_path):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="results")
    client.upload_file(string_results, "results", "run1/part-0.parquet")
    client.put_object(Bucket="results", Key="run1/manifest.json", Body=b"{}")
    storage = StorageConfig(endpoint_url=s3_endpoint)

    out = str(tmp_path / "coco.json")
    counts = export_coco("s3://results/run1", out, id_column="id", category_column="cat", storage=storage)
    assert (counts["images"], counts["annotations"]) == (2, 3)
    gt = COCO(out)
    np.testing.assert_array_equal(gt.annToMask(gt.loadAnns([2])[0]), MASKS["a1"])

    export_coco("s3://results/run1/part-0.parquet", "s3://results/export/coco.json", id_column="id",
                category_column="cat", storage=storage)
    remote = json.loads(client.get_object(Bucket="results", Key="export/coco.json")["Body"].read())
    with open(out) as f:
        local = json.load(f)
    assert remote["annotations"] == local["annotations"] and remote["images"] == local["images"]
    assert remote["info"]["source"] == "s3://results/run1/part-0.parquet"


def test_missing_columns(string_results, tmp_path):
    out = tmp_path / "coco.json"
    with pytest.raises(ValueError, match=r"missing column\(s\) 'image_id' \(--id-column: the run's input.id_column\) "):
        export_coco(string_results, str(out), id_column="image_id", category_column="cat")
    with pytest.raises(ValueError, match=r"'label' \(--category-column: the run's input.category_column\)"):
        export_coco(string_results, str(out), id_column="id", category_column="label")
    table = pq.read_table(string_results).drop_columns(["masks", "error"])
    pq.write_table(table, str(tmp_path / "partial.parquet"))
    with pytest.raises(ValueError, match=r"'masks', 'error'"):
        export_coco(str(tmp_path / "partial.parquet"), str(out), id_column="id")
    assert not out.exists()


def test_mixed_category_kinds_and_misaligned_lists(tmp_path):
    d = tmp_path / "mixed"
    write_results(str(d / "a.parquet"), string_category_rows())
    write_results(str(d / "b.parquet"), [result_row("x", (H1, W1), [MASKS["a0"]], [0.9], categories=[4])],
                  category_type=pa.list_(pa.int64()))
    out = tmp_path / "coco.json"
    with pytest.raises(ValueError, match="mixes category names"):
        export_coco(str(d), str(out), id_column="id", category_column="cat")
    assert not out.exists()  # nothing is written for a bad input

    # A row whose categories are not one per box is that row's problem, skipped and counted.
    bad = write_results(str(tmp_path / "bad.parquet"),
                        [result_row("y", (H1, W1), [MASKS["a0"], MASKS["a1"]], [0.9, 0.8], categories=["cat"]),
                         result_row("z", (H1, W1), [MASKS["a1"]], [0.7], categories=["dog"])])
    counts = export_coco(bad, str(out), id_column="id", category_column="cat")
    assert (counts["images"], counts["annotations"], counts["skipped_rows"]) == (1, 1, 1)
    assert [im["source_id"] for im in json.load(open(out))["images"]] == ["z"]
    os.remove(out)

    scalar = tmp_path / "scalar.parquet"
    pq.write_table(pq.read_table(bad).drop_columns(["cat"]).append_column("cat", pa.array(["cat", "dog"])), str(scalar))
    with pytest.raises(ValueError, match="must hold a list per row"):
        export_coco(str(scalar), str(out), id_column="id", category_column="cat")


def test_scores_are_finite_json(string_results, tmp_path):
    out = str(tmp_path / "coco.json")
    export_coco(string_results, out, id_column="id", category_column="cat")
    with open(out) as f:
        data = json.load(f, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert all(math.isfinite(a["score"]) for a in data["annotations"])


def test_export_knows_the_job_from_its_output(tmp_path, capsys):
    """With the job's description beside its results, the CLI needs no column flags; file_name
    is each image's path; --min-score leaves out the low-scored masks."""
    from pipeline.cli import main

    rows = [{**row, "image_id": row.pop("id"), "image_path": f"/data/images/{i}.jpg"}
            for i, row in enumerate(string_category_rows())]
    output = tmp_path / "results"
    schema = pa.schema([pa.field("image_id", pa.string()), pa.field("image_path", pa.string()),
                        pa.field("cat", pa.list_(pa.string())), *RESULT_FIELDS])
    output.mkdir()
    pq.write_table(pa.Table.from_pylist([{**r, "num_boxes": len(r["masks"])} for r in rows], schema=schema),
                   output / "masks-0-000000-0.parquet")
    describe_job(str(output), len(rows), {"id_column": "image_id", "category_column": "cat",
                                          "image_uri_column": "image_path"})
    coco_path = tmp_path / "coco.json"
    assert main(["export-coco", "--input", str(output), "--output", str(coco_path), "--min-score", "0.6"]) == 0
    assert "columns from" in capsys.readouterr().out
    coco = json.load(open(coco_path))
    assert [im["file_name"] for im in coco["images"]] == ["/data/images/0.jpg", "/data/images/1.jpg"]
    assert [a["score"] for a in coco["annotations"]] == pytest.approx([0.91, 0.75])  # 0.5 of img-b's box 1 is below 0.6

    os.remove(output / "_samhq_job.json")
    assert main(["export-coco", "--input", str(output), "--output", str(coco_path)]) == 2
    assert "error: --id-column: " in capsys.readouterr().err
