"""`import`: our own Label Studio and COCO exports, edited as a reviewer edits them, read back
into the labelled Parquet: masks pixel-exact, ids kept, changed flags and counts right, bad
annotations skipped and counted, bad inputs refused before anything is written; and the
Parquet read by fine-tuning's own data loader."""

import copy
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers.result_data import describe_job, disk_mask, rect_mask, result_row
from label_studio_converter.brush import mask2rle
from pycocotools import mask as mask_utils

from pipeline.cli import main
from pipeline.masks import rle
from pipeline.schema import RESULT_FIELDS

H, W = 30, 40
LABELLED_COLUMNS = ["id", "image_uri", "boxes", "masks", "categories", "changed"]


def masks_of_job():
    """Per row id: the job's masks and categories."""
    return {"r0": ([rect_mask(H, W, 2, 10, 3, 12), disk_mask(H, W, 18, 25, 6)], ["box", "disk"]),
            "r1": ([rect_mask(H, W, 5, 20, 5, 30)], ["box"]),
            "r2": ([rect_mask(H, W, 0, 4, 0, 4), rect_mask(H, W, 25, 30, 30, 40)], ["box", "box"])}


@pytest.fixture
def job(tmp_path):
    """A job's output: three rows with masks (their images under root/pictures) and a failed row."""
    pictures = tmp_path / "root" / "pictures"
    pictures.mkdir(parents=True)
    rows = []
    for row_id, (masks, categories) in masks_of_job().items():
        (pictures / f"{row_id}.png").write_bytes(b"not read")
        rows.append({**result_row(row_id, (H, W), masks, [0.9] * len(masks), categories=categories),
                     "path": str(pictures / f"{row_id}.png")})
    rows.append({**result_row("r3", None, [], [], categories=[], error="image_read: timed out"), "path": None})
    output = tmp_path / "results"
    write_results_with_paths(str(output / "masks-0-000000-0.parquet"), rows)
    describe_job(str(output), 4, {"id_column": "id", "category_column": "cat", "image_uri_column": "path",
                                  "allowed_uri_prefixes": [str(pictures)]})
    return {"output": str(output), "root": str(tmp_path / "root"), "pictures": str(pictures)}


def write_results_with_paths(path, rows):
    schema = pa.schema([pa.field("id", pa.string()), pa.field("cat", pa.list_(pa.string())),
                        pa.field("path", pa.string()), *RESULT_FIELDS])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def brush(mask):
    return mask2rle(mask.astype(np.uint8) * 255)


def polygon_region(region_id, points, label):
    return {"id": region_id, "type": "polygonlabels", "from_name": "poly", "to_name": "image", "original_width": W,
            "original_height": H, "image_rotation": 0, "value": {"points": points, "polygonlabels": [label]}}


def polygon_pixels(points):
    """What a polygon in percent rasterises to, by pycocotools directly."""
    flat = [c for x, y in points for c in (x * W / 100, y * H / 100)]
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([flat], H, W))).astype(bool)


def as_label_studio_exports(tasks, results_by_id):
    """The exported tasks as Label Studio 1.23's JSON export returns them once reviewed: each with
    its id, its predictions listed by id, and one annotation per `results_by_id` entry that
    nests the prediction it started from."""
    exported = []
    for number, task in enumerate(tasks, start=1):
        prediction = {**task["predictions"][0], "id": number}
        annotations = [{"id": 10 * number + k, "result": result, "was_cancelled": False, "ground_truth": False,
                        "created_at": f"2026-01-0{k + 1}T00:00:00.000000Z",
                        "updated_at": f"2026-01-0{k + 1}T00:00:00.000000Z", "prediction": prediction,
                        "parent_prediction": number}
                       for k, result in enumerate(results_by_id.get(task["data"]["source_id"], []))]
        exported.append({"id": number, "data": task["data"], "predictions": [number], "annotations": annotations})
    return exported


def read_labelled(path):
    table = pq.read_table(path)
    assert table.column_names == LABELLED_COLUMNS
    return {row["id"]: row for row in table.to_pylist()}


def printed_keys(out):
    return yaml.safe_load(out[out.index("data:\n"):])["data"]


def decoded(row):
    return [rle.decode(m, "test", "mask") for m in row["masks"]]


def test_label_studio_round_trip_keeps_edits_pixel_exact(job, tmp_path, capsys):
    tasks_path = tmp_path / "tasks.json"
    assert main(["export", "--format", "label-studio", "--input", job["output"], "--output", str(tasks_path),
                 "--label-studio-root", job["root"]]) == 0
    tasks = json.loads(tasks_path.read_text())
    regions = {t["data"]["source_id"]: t["predictions"][0]["result"] for t in tasks}
    edited_r0 = masks_of_job()["r0"][0][0].astype(bool)
    edited_r0[12:15, 0:4] = True  # a person paints more of the first object
    r0 = copy.deepcopy(regions["r0"])
    r0[0]["value"]["rle"] = brush(edited_r0)
    r0[1]["value"]["brushlabels"] = ["ring"]  # the second object's category changed, its pixels kept
    added_points = [[10, 10], [50, 10], [50, 50], [10, 50]]
    r1 = [polygon_region("drawn", added_points, "box")]  # the prediction deleted, a polygon drawn instead
    r2 = copy.deepcopy(regions["r2"])  # accepted as predicted, plus regions that cannot be read
    truncated = copy.deepcopy(regions["r2"][0])
    truncated.update(id="cut", value={**truncated["value"], "rle": truncated["value"]["rle"][:6]})
    r2 += [polygon_region("line", [[0, 0], [50, 50]], "box"), truncated,
           {**copy.deepcopy(regions["r2"][0]), "id": "bad", "value": {"format": "rle", "rle": [0, 0, 0, 9, 1],
                                                                      "brushlabels": ["box"]}}]
    older = [polygon_region("old", added_points, "box")]  # r2's first annotation, superseded by the later one
    export = as_label_studio_exports(tasks, {"r0": [r0], "r1": [r1], "r2": [older, r2]})
    export[2]["annotations"].append({**export[2]["annotations"][0], "id": 99, "was_cancelled": True,
                                     "updated_at": "2026-02-01T00:00:00Z"})  # skipped, though the latest
    export.append({"id": 4, "data": {"image": "/data/local-files/?d=pictures/r0.png"}, "predictions": [],
                   "annotations": []})  # added in Label Studio, never annotated
    reviewed = tmp_path / "reviewed.json"
    reviewed.write_text(json.dumps(export))
    labelled = tmp_path / "labelled" / "train.parquet"
    capsys.readouterr()
    assert main(["import", "--format", "label-studio", "--input", str(reviewed), "--output", str(labelled),
                 "--label-studio-root", job["root"]]) == 0
    out = capsys.readouterr().out

    rows = read_labelled(labelled)
    assert list(rows) == ["r0", "r1", "r2"]
    job_masks = masks_of_job()
    expected = {"r0": [edited_r0, job_masks["r0"][0][1].astype(bool)], "r1": [polygon_pixels(added_points)],
                "r2": [m.astype(bool) for m in job_masks["r2"][0]]}
    for row_id, masks in expected.items():
        assert all(np.array_equal(a, b) for a, b in zip(decoded(rows[row_id]), masks, strict=True)), row_id
        for box, mask in zip(rows[row_id]["boxes"], masks, strict=True):
            ys, xs = np.nonzero(mask)
            assert box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert rows[row_id]["image_uri"] == os.path.join(job["pictures"], f"{row_id}.png")
    assert rows["r0"]["categories"] == ["box", "ring"] and rows["r1"]["categories"] == ["box"]
    assert rows["r0"]["changed"] == [True, True] and rows["r1"]["changed"] == [True]
    assert rows["r2"]["changed"] == [False, False]
    assert "read 4 tasks: 5 annotations imported into 3 rows" in out
    assert "2 changed by a person, 2 unchanged, 1 added; 1 predicted region deleted" in out
    assert ("regions skipped: 3 (brush rle cannot be decoded: 1, brush rle of another size than original_width x "
            "original_height: 1, polygon of fewer than 3 points: 1)") in out
    assert "tasks without a row: 1 (no annotation: 1)" in out
    assert "annotations not used: 2 (cancelled: 1, older than the task's latest: 1)" in out
    keys = printed_keys(out)
    assert keys == {"train": str(labelled), "id_column": "id", "image_uri_column": "image_uri", "boxes_column": "boxes",
                    "masks_column": "masks"}


def test_coco_round_trip_with_the_predictions_given_to_reviewers(job, tmp_path, capsys):
    given = tmp_path / "given.json"
    assert main(["export", "--format", "coco-polygons", "--input", job["output"], "--output", str(given),
                 "--images-root", job["root"]]) == 0
    coco = json.loads(given.read_text())
    assert [image["file_name"] for image in coco["images"]] == [f"pictures/r{k}.png" for k in range(3)]
    by_image = {image["id"]: image["source_id"] for image in coco["images"]}
    annotations = coco["annotations"]
    categories = {c["name"]: c["id"] for c in coco["categories"]}
    # r0: the first mask repainted (as RLE, with its new bbox), the second's category changed;
    # r1: its mask deleted, a polygon drawn instead (no bbox); r2 as given, plus an unreadable one.
    edited = masks_of_job()["r0"][0][0].copy()
    edited[20:28, 30:38] = 1
    encoded = rle.encode(edited.astype(bool))
    first, second = (a for a in annotations if by_image[a["image_id"]] == "r0")
    first.update(segmentation=encoded, bbox=[2.0, 1.0, 37.0, 28.0])  # a rectangle a little wider than the mask
    second["category_id"] = categories["box"]
    r1_image = next(k for k, v in by_image.items() if v == "r1")
    r2_image = next(k for k, v in by_image.items() if v == "r2")
    annotations[:] = [a for a in annotations if a["image_id"] != r1_image]
    annotations.append({"id": 100, "image_id": r1_image, "category_id": categories["box"], "iscrowd": 0,
                        "segmentation": [[4, 4, 20, 4, 20, 16, 4, 16]]})
    annotations.append({"id": 101, "image_id": r2_image, "category_id": categories["box"], "segmentation": [[1, 1, 5, 5]]})
    annotations.append({"id": 102, "image_id": r2_image, "category_id": categories["box"],
                        "segmentation": {"size": [H + 1, W], "counts": encoded["counts"]}})
    reviewed = tmp_path / "reviewed.json"
    reviewed.write_text(json.dumps(coco))
    labelled = tmp_path / "deep" / "er" / "train.parquet"  # its default URI prefix (deep/) does not hold the images
    capsys.readouterr()
    assert main(["import", "--format", "coco", "--input", str(reviewed), "--output", str(labelled),
                 "--images-root", job["root"], "--predictions", str(given)]) == 0
    out = capsys.readouterr().out

    rows = read_labelled(labelled)
    assert list(rows) == ["r0", "r1", "r2"]
    drawn = rect_mask(H, W, 4, 16, 4, 20).astype(bool)
    expected = {"r0": [edited.astype(bool), masks_of_job()["r0"][0][1].astype(bool)], "r1": [drawn],
                "r2": [m.astype(bool) for m in masks_of_job()["r2"][0]]}
    for row_id, masks in expected.items():
        assert all(np.array_equal(a, b) for a, b in zip(decoded(rows[row_id]), masks, strict=True)), row_id
    assert rows["r0"]["boxes"][0] == [2.0, 1.0, 39.0, 29.0]  # the file's bbox
    assert rows["r1"]["boxes"] == [[4.0, 4.0, 20.0, 16.0]]  # no bbox: the mask's own
    assert rows["r0"]["categories"] == ["box", "box"]
    assert [rows[k]["changed"] for k in ("r0", "r1", "r2")] == [[True, True], [True], [False, False]]
    assert "read 3 images: 5 annotations imported into 3 rows" in out
    assert "2 changed by a person, 2 unchanged, 1 added; 1 predicted region deleted" in out
    assert ("regions skipped: 2 (RLE of another size than the image's height x width: 1, polygon of fewer than 3 "
            "points (or an odd number of coordinates): 1)") in out
    keys = printed_keys(out)
    assert keys["allowed_uri_prefixes"] == [job["pictures"]] and keys["image_uri_column"] == "image_uri"


def test_coco_without_predictions_leaves_changed_null(job, tmp_path, capsys):
    given = tmp_path / "given.json"
    assert main(["export", "--format", "coco-rle", "--input", job["output"], "--output", str(given)]) == 0
    labelled = tmp_path / "train.parquet"
    assert main(["import", "--format", "coco", "--input", str(given), "--output", str(labelled)]) == 0
    out = capsys.readouterr().out
    rows = read_labelled(labelled)
    assert [row["changed"] for row in rows.values()] == [[None, None], [None], [None, None]]
    assert rows["r1"]["image_uri"] == os.path.join(job["pictures"], "r1.png")  # file_name: the job's absolute path
    assert "no predictions in the input to compare with: `changed` is null" in out


def test_label_studio_tasks_without_source_ids_get_their_task_ids(tmp_path, capsys):
    image = tmp_path / "a.png"
    image.write_bytes(b"not read")
    mask = rect_mask(H, W, 1, 5, 1, 5).astype(bool)
    region = {"id": "x", "type": "brushlabels", "original_width": W, "original_height": H,
              "value": {"format": "rle", "rle": brush(mask), "brushlabels": ["box"]}}
    export = [{"id": 7, "data": {"image": str(image)}, "annotations": [{"id": 1, "result": [region]}]}]
    (tmp_path / "export.json").write_text(json.dumps(export))
    assert main(["import", "--format", "label-studio", "--input", str(tmp_path / "export.json"), "--output",
                 str(tmp_path / "out.parquet")]) == 0
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column("id").to_pylist() == [7] and str(table.schema.field("id").type) == "int64"
    assert table.column("changed").to_pylist() == [[None]]
    assert "no predictions in the input" in capsys.readouterr().out


@pytest.mark.parametrize("args, content, message", [
    (["--format", "label-studio"], "{not json", "--input {input} is not JSON (Expecting property name"),
    (["--format", "label-studio"], {"images": [], "annotations": []},
     "--input {input} is not a Label Studio JSON export: export the project with Export → JSON"),
    (["--format", "label-studio"], [{"id": 3, "annotations": []}], "--input {input}: task 3 has no data object"),
    (["--format", "coco"], [{"data": {}, "annotations": []}], "--input {input} is not a COCO instances file"),
    (["--format", "coco"], {"images": [{"id": 1, "file_name": "a.png", "height": 0, "width": 5}], "annotations": []},
     "--input {input}: image #1 ({{'id': 1, 'file_name': 'a.png', 'height': 0, 'width': 5}}) lacks an id or a "
     "positive height and width"),
    (["--format", "label-studio", "--predictions", "p.json"], [], "--images-root and --predictions apply to --format coco"),
    (["--format", "coco", "--label-studio-root", "."], {}, "--label-studio-root applies to --format label-studio"),
])
def test_bad_inputs_are_refused(tmp_path, capsys, args, content, message):
    source = tmp_path / "export.json"
    source.write_text(content if isinstance(content, str) else json.dumps(content))
    assert main(["import", *args, "--input", str(source), "--output", str(tmp_path / "out.parquet")]) == 2
    assert f"error: {message.format(input=source)}" in capsys.readouterr().err
    assert not (tmp_path / "out.parquet").exists()


def test_images_that_cannot_be_located_stop_the_import(job, tmp_path, capsys):
    tasks_path = tmp_path / "tasks.json"
    assert main(["export", "--format", "label-studio", "--input", job["output"], "--output", str(tasks_path),
                 "--label-studio-root", job["root"]]) == 0
    tasks = json.loads(tasks_path.read_text())
    export = as_label_studio_exports(tasks, {t["data"]["source_id"]: [t["predictions"][0]["result"]] for t in tasks})
    reviewed = tmp_path / "reviewed.json"
    reviewed.write_text(json.dumps(export))
    output = tmp_path / "out.parquet"
    assert main(["import", "--format", "label-studio", "--input", str(reviewed), "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert "error: 3 images cannot be located (task 1: /data/local-files/?d=pictures/r0.png is a file Label Studio " \
           "serves from its document root: give that directory as --label-studio-root" in err
    assert not output.exists()
    os.remove(os.path.join(job["pictures"], "r1.png"))
    assert main(["import", "--format", "label-studio", "--input", str(reviewed), "--output", str(output),
                 "--label-studio-root", job["root"]]) == 2
    assert (f"error: 1 image cannot be located (task 2: no file /data/local-files/?d=pictures/r1.png (read as "
            f"{job['pictures']}/r1.png)), so nothing was written") in capsys.readouterr().err
    assert not output.exists()


def test_an_existing_output_is_never_replaced(tmp_path, capsys):
    source = tmp_path / "export.json"
    source.write_text("[]")
    existing = tmp_path / "out.parquet"
    existing.write_bytes(b"someone's file")
    assert main(["import", "--format", "label-studio", "--input", str(source), "--output", str(existing)]) == 2
    assert "exists; import writes a new file and replaces none" in capsys.readouterr().err
    assert existing.read_bytes() == b"someone's file"
    assert main(["import", "--format", "label-studio", "--input", str(source), "--output", str(tmp_path / "x")]) == 2
    assert "name a new .parquet file" in capsys.readouterr().err


def test_fine_tuning_reads_an_imported_label_studio_export(tmp_path, capsys):
    """The demo's scenes and exact masks, exported for review, accepted as predicted and
    imported: fine-tuning's data loader, configured with the keys the import printed (and the
    allowed URI prefixes fine-tuning defaults to), uses every row and box, masks as given."""
    from pipeline.checks.paths import with_uri_prefixes
    from pipeline.config import DataConfig, StorageConfig
    from pipeline.demo.dataset import write_sample_dataset
    from pipeline.finetune.data import LabelledImages
    from samhq_core import SamHQModel
    from samhq_core.training.demo_model import demo_config

    truth_path = tmp_path / "truth.parquet"
    write_sample_dataset(str(tmp_path / "input.parquet"), 2, ground_truth_path=str(truth_path),
                         images_dir=str(tmp_path / "images"), side=64)
    truth = {row["image_id"]: row for row in pq.read_table(truth_path).to_pylist()}
    exact = {row_id: [rle.decode(m, "truth", "mask") for m in row["masks"]] for row_id, row in truth.items()}
    rows = [{**result_row(row_id, (64, 64), [m.astype(np.uint8) for m in exact[row_id]], [0.9] * len(exact[row_id]),
                          categories=row["labels"]), "path": str(tmp_path / "images" / f"{row_id}.png")}
            for row_id, row in truth.items()]
    output = tmp_path / "results"
    write_results_with_paths(str(output / "masks-0-000000-0.parquet"), rows)
    describe_job(str(output), 2, {"id_column": "id", "category_column": "cat", "image_uri_column": "path",
                                  "allowed_uri_prefixes": [str(tmp_path / "images")]})
    tasks_path = tmp_path / "tasks.json"
    assert main(["export", "--format", "label-studio", "--input", str(output), "--output", str(tasks_path),
                 "--label-studio-root", str(tmp_path)]) == 0
    tasks = json.loads(tasks_path.read_text())
    export = as_label_studio_exports(tasks, {t["data"]["source_id"]: [t["predictions"][0]["result"]] for t in tasks})
    (tmp_path / "reviewed.json").write_text(json.dumps(export))
    labelled = tmp_path / "labelled" / "train.parquet"
    capsys.readouterr()
    assert main(["import", "--format", "label-studio", "--input", str(tmp_path / "reviewed.json"), "--output",
                 str(labelled), "--label-studio-root", str(tmp_path)]) == 0
    keys = printed_keys(capsys.readouterr().out)

    data, problems = with_uri_prefixes(DataConfig(**keys), [keys["train"]], "data", None)
    assert not problems
    loader = LabelledImages(data.train, data, StorageConfig(), SamHQModel(demo_config()))
    examples = {example.id: example for example in loader.examples(None)}
    assert not loader.skipped and sorted(examples) == sorted(truth)
    for row_id, example in examples.items():
        assert example.original_hw == (64, 64) and len(example.boxes) == len(exact[row_id])
        assert all(np.array_equal(rle.decode(t, "loaded", "mask"), m)
                   for t, m in zip(example.truth, exact[row_id], strict=True))


def test_regions_pair_by_id_then_by_iou():
    from pipeline.imports.matching import compare
    from pipeline.imports.records import Region

    def region(region_id, y0, y1, x0, x1, category="box"):
        return Region(region_id, rect_mask(H, W, y0, y1, x0, x1).astype(bool), category)

    predicted = [region("a", 0, 10, 0, 10), region("b", 15, 25, 15, 25), region("c", 0, 5, 30, 40),
                 region("d", 20, 30, 0, 10)]
    annotated = [region("a", 12, 20, 30, 40),  # its id kept, moved far: changed, not added
                 region("new", 15, 25, 16, 26),  # a new id over b (IoU 0.82): b changed
                 region("c", 0, 5, 30, 40),  # as predicted
                 region("other", 25, 30, 0, 5)]  # over a quarter of d only: added, and d deleted
    result = compare(annotated, predicted)
    assert (result.changed, result.unchanged, result.added, result.deleted) == ([True, True, False, True], 1, 1, 1)
    # d's region was annotated but could not be imported: it is not counted as deleted
    assert compare(annotated, predicted, kept_ids={"d"}).deleted == 0
