"""The polygon, YOLO-seg and Label Studio exports, read back with the formats' own tools:
pycocotools' COCO, Label Studio's converter, and YOLO-seg's documented layout."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers.result_data import describe_job, rect_mask, result_row, write_results
from helpers.ultralytics_rule import ultralytics_masks
from label_studio_converter.brush import decode_rle
from pycocotools.coco import COCO

from pipeline.cli import main
from pipeline.exports.coco import export_coco
from pipeline.exports.image_refs import ImageSources, NoImageToPointAt
from pipeline.exports.label_studio import write_label_studio
from pipeline.exports.yolo import write_yolo_seg
from pipeline.output import JobOutput
from pipeline.output.results import ResultColumns, ResultReader
from pipeline.schema import RESULT_FIELDS
from pipeline.storage import Location

H, W = 40, 50


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def ring():
    yy, xx = np.mgrid[:H, :W]
    d2 = (yy - 20) ** 2 + (xx - 25) ** 2
    return ((d2 <= 15**2) & (d2 > 6**2)).astype(np.uint8)


def two_parts():
    m = rect_mask(H, W, 2, 10, 3, 12)
    m[20:30, 30:45] = 1
    return m


def line():
    m = np.zeros((H, W), np.uint8)
    m[5, 2:48] = 1
    return m


@pytest.fixture
def results(tmp_path):
    """Three images (the second a duplicate file name, the third without masks), a failed row."""
    images = tmp_path / "pictures"
    (images / "b").mkdir(parents=True)
    for name in ("a/x.png", "b/x.png", "c.jpg"):
        (images / name).parent.mkdir(exist_ok=True)
        (images / name).write_bytes(b"not read")
    rows = [
        result_row("r0", (H, W), [ring(), two_parts()], [0.9, 0.6], categories=["donut", "box"]),
        result_row("r1", (H, W), [line(), None], [0.8, 0.1], categories=["wire", "box"], box_errors=[None, "inverted"]),
        result_row("r2", (H, W), [], [], categories=[]),
        result_row("r3", None, [], [], categories=["donut"], error="image_read: timed out"),
    ]
    paths = [str(images / "a/x.png"), str(images / "b/x.png"), "s3://bucket/c.jpg?versionId=3", str(images / "c.jpg")]
    rows = [{**row, "path": path} for row, path in zip(rows, paths, strict=True)]
    schema = pa.schema([pa.field("id", pa.string()), pa.field("cat", pa.list_(pa.string())),
                        pa.field("path", pa.string()), *RESULT_FIELDS])
    out = tmp_path / "results"
    out.mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), out / "masks-0-000000-0.parquet")  # named as a job names its files
    return str(out)


def reader(path, **kw):
    return ResultReader(JobOutput(path), ResultColumns("id", "cat", "path"), **kw)


def test_coco_polygons(results, tmp_path):
    out = str(tmp_path / "polygons.json")
    counts = export_coco(results, out, id_column="id", category_column="cat", image_path_column="path",
                         as_polygons=True)
    assert counts == {"images": 3, "annotations": 3, "skipped_rows": 1, "skipped_boxes": 1, "categories": 3,
                      "kept_rle": 1}
    coco = COCO(out)
    anns = coco.loadAnns(coco.getAnnIds())
    assert isinstance(anns[0]["segmentation"], dict)  # the ring has a hole: RLE kept
    assert len(anns[1]["segmentation"]) == 2 and isinstance(anns[1]["segmentation"][0], list)  # two parts
    for ann, mask in zip(anns, [ring(), two_parts(), line()], strict=True):
        assert iou(coco.annToMask(ann).astype(bool), mask.astype(bool)) >= 0.98
        np.testing.assert_array_equal(coco.annToMask(ann), mask)  # at simplify 0, exact
        assert ann["area"] == mask.sum()
    assert "polygons" in coco.dataset["info"]["segmentation"]
    simplified = str(tmp_path / "simplified.json")
    export_coco(results, simplified, id_column="id", as_polygons=True, simplify=1.0)
    coco = COCO(simplified)
    assert iou(coco.annToMask(coco.loadAnns([2])[0]).astype(bool), two_parts().astype(bool)) >= 0.98


def read_label_polygons(path, height, width):
    """(class, mask) per line of a YOLO-seg label file, drawn as Ultralytics draws them."""
    lines = open(path).read().splitlines()
    for text in lines:
        coords = np.array(text.split()[1:], dtype=float)
        assert len(coords) >= 6 and len(coords) % 2 == 0, text
        assert ((0 <= coords) & (coords <= 1)).all(), text
    masks = ultralytics_masks(lines, height, width) if lines else []
    return [(int(text.split()[0]), mask) for text, mask in zip(lines, masks, strict=True)]


def test_yolo_seg_layout(results, tmp_path):
    out = tmp_path / "yolo"
    counts = write_yolo_seg(reader(results), str(out), images=ImageSources([str(tmp_path / "pictures"), "s3://bucket/"]))
    assert counts == {"images": 3, "objects": 3, "linked": 2, "to_fetch": 1, "no_image_uri": 0, "outside_prefixes": 0,
                      "empty_labels": 1, "skipped_rows": 1, "skipped_boxes": 1, "categories": 3}
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data == {"path": str(out), "train": "images", "val": "images", "names": {0: "donut", 1: "box", 2: "wire"}}
    # Each image under images/ has its labels where Ultralytics looks: images/ -> labels/, .txt.
    assert sorted(os.listdir(out / "images")) == ["x.png", "x_" + _digest(results, 1) + ".png"]
    assert sorted(os.listdir(out / "labels")) == ["c.txt", "x.txt", "x_" + _digest(results, 1) + ".txt"]
    assert os.readlink(out / "images" / "x.png") == str(tmp_path / "pictures" / "a" / "x.png")
    assert (out / "images_to_fetch.jsonl").read_text() == '{"uri": "s3://bucket/c.jpg?versionId=3", "path": "images/c.jpg"}\n'
    assert not (out / "images_in_input.jsonl").exists()
    assert (out / "labels" / "c.txt").read_text() == ""  # no masks: background

    first = read_label_polygons(out / "labels" / "x.txt", H, W)
    assert [cls for cls, _ in first] == [0, 1]
    np.testing.assert_array_equal(first[0][1], ring().astype(bool))  # a hole: exact
    drawn, parts = first[1][1], two_parts().astype(bool)  # two parts in one line: plus their bridge's pixels
    assert (drawn >= parts).all() and 0 < (drawn & ~parts).sum() <= max(H, W), (drawn & ~parts).sum()
    second = read_label_polygons(out / "labels" / f"x_{_digest(results, 1)}.txt", H, W)
    assert [cls for cls, _ in second] == [2]
    np.testing.assert_array_equal(second[0][1], line().astype(bool))

    with pytest.raises(ValueError, match="not an empty directory"):
        write_yolo_seg(reader(results), str(out))
    with pytest.raises(ValueError, match="local directory"):
        write_yolo_seg(reader(results), "s3://bucket/yolo")


def _digest(results, index):
    import hashlib

    path = pq.read_table(results).column("path").to_pylist()[index]
    return hashlib.sha1(path.encode()).hexdigest()[:8]


def test_yolo_seg_integer_categories_and_a_bad_input(tmp_path):
    path = write_results(str(tmp_path / "in" / "p.parquet"), [
        result_row("a", (H, W), [ring(), line()], [0.9, 0.8], categories=[3, 1])],
        category_type=pa.list_(pa.int64()))
    out = tmp_path / "yolo"
    with pytest.raises(NoImageToPointAt, match="named by id: 1"):  # no image column: nothing to link
        write_yolo_seg(ResultReader(JobOutput(path), ResultColumns("id", "cat")), str(out))
    assert not out.exists()
    table = pq.read_table(path)
    pq.write_table(table.append_column("path", pa.array(["s3://bucket/a.png"])), path)
    write_yolo_seg(ResultReader(JobOutput(path), ResultColumns("id", "cat", "path")), str(out),
                   images=ImageSources(["s3://bucket/"]))
    assert yaml.safe_load((out / "data.yaml").read_text())["names"] == {0: "0", 1: "1", 2: "2", 3: "3"}
    assert [cls for cls, _ in read_label_polygons(out / "labels" / "a.txt", H, W)] == [3, 1]
    assert os.listdir(out / "images") == [] and not (out / "images_in_input.jsonl").exists()
    assert (out / "images_to_fetch.jsonl").read_text() == '{"uri": "s3://bucket/a.png", "path": "images/a.png"}\n'

    bad = write_results(str(tmp_path / "bad" / "p.parquet"), [
        result_row("a", (H, W), [ring()], [0.9], categories=["x"]),
        result_row("b", (H, W), [ring(), line()], [0.9, 0.8], categories=["x"]),  # lists of different lengths
        result_row("c", (H, W), [np.ones((H + 1, W), np.uint8)], [0.9], categories=["x"])])  # a mask of another size
    reader_of_bad = ResultReader(JobOutput(bad), ResultColumns("id", "cat"))
    with pytest.raises(ValueError, match=r"row id='c': mask 0 has size \[41, 50\], not the image_size \[40, 50\]"):
        write_yolo_seg(reader_of_bad, str(tmp_path / "bad_yolo"))
    # a and c were read as images (c failed on its mask), b was skipped and counted
    assert (reader_of_bad.num_images, reader_of_bad.skipped_rows, reader_of_bad.failed_rows) == (2, 1, {"per_box": 1})
    assert not (tmp_path / "bad_yolo").exists()
    assert [p for p in os.listdir(tmp_path) if "partial" in p] == []


def test_label_studio_tasks_decode_to_the_masks(results, tmp_path):
    out = str(tmp_path / "ls" / "tasks.json")
    counts = write_label_studio(reader(results, min_score=0.7), Location(str(out)), model_version="demo")
    assert counts == {"tasks": 3, "regions": 2, "local_files": 0, "skipped_rows": 1, "skipped_boxes": 2,
                      "categories": 3}
    tasks = json.load(open(out))
    assert [t["data"]["image"] for t in tasks] == [str(tmp_path / "pictures" / "a" / "x.png"),
                                                  str(tmp_path / "pictures" / "b" / "x.png"),
                                                  "s3://bucket/c.jpg?versionId=3"]
    assert [t["data"]["source_id"] for t in tasks] == ["r0", "r1", "r2"]
    expected = [[(ring(), "donut", 0.9)], [(line(), "wire", 0.8)], []]  # two_parts (0.6) is below --min-score
    for task, masks in zip(tasks, expected, strict=True):
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "demo"
        if masks:
            assert prediction["score"] == pytest.approx(min(score for _, _, score in masks))
        else:
            assert "score" not in prediction and prediction["result"] == []
        for region, (mask, name, score) in zip(prediction["result"], masks, strict=True):
            assert (region["type"], region["from_name"], region["to_name"]) == ("brushlabels", "label", "image")
            assert (region["original_height"], region["original_width"], region["image_rotation"]) == (H, W, 0)
            assert region["value"]["format"] == "rle" and region["value"]["brushlabels"] == [name]
            assert region["score"] == pytest.approx(score)
            rgba = decode_rle(region["value"]["rle"]).reshape(H, W, 4)  # the converter's own decoder
            np.testing.assert_array_equal(rgba[:, :, 3], mask * 255)
    config = open(str(tmp_path / "ls" / "tasks.labeling_config.xml")).read()
    assert '<BrushLabels name="label" toName="image">' in config and '<Image name="image" value="$image"' in config
    assert [f'<Label value="{n}"/>' in config for n in ("donut", "box", "wire")] == [True] * 3


def test_cli_every_format(results, tmp_path, capsys):
    describe_job(results, 4, {"id_column": "id", "category_column": "cat", "image_uri_column": "path",
                              "allowed_uri_prefixes": [str(tmp_path / "pictures"), "s3://bucket/"]},
                 {"checkpoint": "models/samhq-demo-synthetic"})
    for fmt, out in (("coco-rle", "rle.json"), ("coco-polygons", "poly.json"), ("yolo-seg", "yolo"),
                     ("label-studio", "ls.json")):
        assert main(["export", "--format", fmt, "--input", results, "--output", str(tmp_path / out)]) == 0, fmt
        assert f"wrote {tmp_path / out}" in capsys.readouterr().out
    assert json.load(open(tmp_path / "ls.json"))[0]["predictions"][0]["model_version"] == "samhq-demo-synthetic"
    # export-coco is export --format coco-rle.
    assert main(["export-coco", "--input", results, "--output", str(tmp_path / "alias.json")]) == 0
    strip = lambda p: {k: v for k, v in json.load(open(p)).items() if k != "info"}  # noqa: E731
    assert strip(tmp_path / "alias.json") == strip(tmp_path / "rle.json")
    assert main(["export", "--format", "coco-rle", "--input", results, "--output", str(tmp_path / "s.json"),
                 "--min-stability", "0.75"]) == 0  # r0's masks have stability 0.8 and 0.5, r1's usable one 0.7
    kept = json.load(open(tmp_path / "s.json"))["annotations"]
    assert [(a["image_id"], round(a["score"], 4)) for a in kept] == [(1, 0.9)]

    for argv, message in (
        (["--format", "label-studio", "--simplify", "1"], "--simplify applies to the polygon formats"),
        (["--format", "yolo-seg", "--simplify", "-1"], "--simplify must be"),
        (["--format", "yolo-seg", "--min-score", "nan"], "min_score must be a finite number"),
        (["--format", "yolo-seg", "--id-column", "nope"], "missing column(s) 'nope'"),
    ):
        assert main(["export", *argv, "--input", results, "--output", str(tmp_path / "bad")]) == 2, argv
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_images_root_and_label_studio_root_name_images_as_the_tools_open_them(results, tmp_path, capsys):
    pictures = tmp_path / "pictures"
    describe_job(results, 4, {"id_column": "id", "category_column": "cat", "image_uri_column": "path",
                              "allowed_uri_prefixes": [str(pictures), "s3://bucket/"]})
    export = ["export", "--input", results, "--output"]
    assert main([*export, str(tmp_path / "coco.json"), "--format", "coco-rle", "--images-root", str(pictures)]) == 0
    assert "outside_images_root: 1" in capsys.readouterr().out
    names = [image["file_name"] for image in json.load(open(tmp_path / "coco.json"))["images"]]
    assert names == ["a/x.png", "b/x.png", "s3://bucket/c.jpg?versionId=3"]

    assert main([*export, str(tmp_path / "yolo"), "--format", "yolo-seg", "--images-root", str(pictures)]) == 0
    link = tmp_path / "yolo" / "images" / "x.png"
    assert os.readlink(link) == os.path.join("..", "..", "pictures", "a", "x.png")  # moves with the images
    assert os.path.realpath(link) == str(pictures / "a" / "x.png")

    assert main([*export, str(tmp_path / "ls.json"), "--format", "label-studio", "--label-studio-root",
                 str(pictures)]) == 0
    assert "local_files: 2" in capsys.readouterr().out
    shown = [task["data"]["image"] for task in json.load(open(tmp_path / "ls.json"))]
    assert shown == ["/data/local-files/?d=a/x.png", "/data/local-files/?d=b/x.png", "s3://bucket/c.jpg?versionId=3"]

    for argv, message in (
        (["--format", "label-studio", "--images-root", str(pictures)], "--images-root applies to coco-rle"),
        (["--format", "coco-rle", "--label-studio-root", str(pictures)], "--label-studio-root applies to label-studio"),
        (["--format", "coco-rle", "--images-root", str(tmp_path / "nope")], "must be an existing local directory"),
    ):
        assert main([*export, str(tmp_path / "bad"), *argv]) == 2, argv
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_an_export_that_can_point_at_no_image_names_the_column_that_would(tmp_path, capsys):
    """Exit 2, nothing written, and the advice: a column of the output that holds image paths,
    else one of the job's input that the output does not keep."""
    input_file = tmp_path / "input" / "rows.parquet"
    input_file.parent.mkdir()
    pq.write_table(pa.table({"id": ["a"], "image": [b"png bytes"], "image_path": ["/data/pictures/a.png"]}), input_file)
    rows = [result_row("a", (H, W), [ring()], [0.9], categories=["donut"])]
    for keep_paths in (True, False):
        output = tmp_path / f"output_{keep_paths}"
        output.mkdir()
        fields = [pa.field("id", pa.string()), pa.field("cat", pa.list_(pa.string()))]
        extra = [{"image_path": "/data/pictures/a.png"}] if keep_paths else [{}]
        fields += [pa.field("image_path", pa.string())] if keep_paths else []
        pq.write_table(pa.Table.from_pylist([{**r, **e} for r, e in zip(rows, extra, strict=True)],
                                            schema=pa.schema(fields + RESULT_FIELDS)),
                       output / "masks-0-000000-0.parquet")
        describe_job(str(output), 1, {"path": str(input_file), "id_column": "id", "category_column": "cat",
                                      "image_column": "image"})
        for fmt in ("yolo-seg", "label-studio"):
            target = tmp_path / f"{fmt}_{keep_paths}"
            assert main(["export", "--format", fmt, "--input", str(output), "--output", str(target)]) == 2
            err = capsys.readouterr().err
            assert "the job read its images as bytes (input.image_column 'image')" in err, err
            if keep_paths:
                assert "the output's column 'image_path' holds image paths: --image-column image_path" in err, err
            else:
                assert ("the job's input column 'image_path' holds image paths, which the output does not keep: run "
                        "the job with input.image_uri_column: image_path") in err, err
            assert not os.path.exists(target)
