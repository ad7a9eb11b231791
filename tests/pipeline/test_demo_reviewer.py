"""`demo-correct`, the demo's stand-in reviewer: every predicted region of the Label Studio
tasks comes back, under its own id, as the exact mask of its box; objects without a prediction
are added; the result reads like Label Studio's JSON export of a reviewed project."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from helpers.result_data import disk_mask, rect_mask, result_row
from label_studio_converter.brush import decode_rle

from pipeline.cli import main
from pipeline.masks import rle
from pipeline.schema import RESULT_FIELDS

H, W = 24, 32


def brush(region):
    return np.asarray(decode_rle(region["value"]["rle"])).reshape(H, W, 4)[:, :, 3] > 0


def test_stand_in_redraws_each_region_exactly_under_its_id_and_adds_the_missing(tmp_path, capsys):
    exact = {"a": [rect_mask(H, W, 2, 10, 3, 12), disk_mask(H, W, 15, 20, 5)], "b": [rect_mask(H, W, 0, 5, 0, 5)],
             "c": [rect_mask(H, W, 1, 3, 1, 3)]}
    predicted_a = [exact["a"][0], rect_mask(H, W, 10, 20, 15, 25)]  # the first exact, the second wrong
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    rows = [
        result_row("a", (H, W), predicted_a, [0.9, 0.8], categories=["box", "disk"]),
        # b's only box was skipped by the job: its exact mask is added by the review
        result_row("b", (H, W), [None], [0.0], box_errors=["degenerate box"], categories=["box"]),
        result_row("d", (H, W), [rect_mask(H, W, 0, 2, 0, 2)], [0.7], categories=["box"]),  # no ground truth
    ]
    for row in rows:
        row["path"] = str(pictures / f"{row['id']}.png")
        (pictures / f"{row['id']}.png").write_bytes(b"not read")
    schema = pa.schema([pa.field("id", pa.string()), pa.field("cat", pa.list_(pa.string())),
                        pa.field("path", pa.string()), *RESULT_FIELDS])
    output = tmp_path / "out"
    output.mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), output / "masks-0-000000-0.parquet")
    truth = tmp_path / "truth.parquet"
    pq.write_table(pa.Table.from_pylist([{"image_id": k, "masks": [rle.encode(m.astype(bool)) for m in v],
                                          "labels": ["box", "disk"][: len(v)]} for k, v in exact.items()]), truth)
    tasks = tmp_path / "tasks.json"
    assert main(["export", "--format", "label-studio", "--input", str(output), "--output", str(tasks),
                 "--id-column", "id", "--category-column", "cat", "--image-column", "path"]) == 0
    reviewed = tmp_path / "reviewed.json"
    assert main(["demo-correct", "--tasks", str(tasks), "--ground-truth", str(truth), "--output", str(reviewed)]) == 0
    assert "1 masks redrawn, 1 kept as predicted, 1 added, 1 tasks without ground truth" in capsys.readouterr().out

    export = {t["data"]["source_id"]: t for t in json.loads(reviewed.read_text())}
    assert [t["id"] for t in export.values()] == [1, 2, 3]
    a_predicted = export["a"]["predictions"][0]["result"]
    (annotation,) = export["a"]["annotations"]
    assert not annotation["was_cancelled"]
    assert [r["id"] for r in annotation["result"]] == [r["id"] for r in a_predicted]
    for region, mask in zip(annotation["result"], exact["a"], strict=True):
        assert np.array_equal(brush(region), mask.astype(bool))
    assert [r["value"]["brushlabels"] for r in annotation["result"]] == [["box"], ["disk"]]
    (added,) = export["b"]["annotations"][0]["result"]
    assert np.array_equal(brush(added), exact["b"][0].astype(bool))
    assert export["d"]["annotations"] == []

    # a second run replaces its own export; a file it did not write stays
    assert main(["demo-correct", "--tasks", str(tasks), "--ground-truth", str(truth), "--output", str(reviewed)]) == 0
    assert main(["demo-correct", "--tasks", str(tasks), "--ground-truth", str(truth), "--output", str(tasks)]) == 2
    assert "is not an earlier demo-correct output" in capsys.readouterr().err
    assert json.loads(tasks.read_text())[0]["data"]["source_id"] == "a"
