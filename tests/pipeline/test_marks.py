"""A reviewer's marks files (as the review page downloads them, or made by hand) and the
exports that take them: which masks `--exclude` and `--only` leave, the counts they print,
the warning for marks of another job, and clear errors for malformed files. The page's own
downloads are taken by export in tests/e2e/test_review.py."""

import json
import os

import pytest
from helpers.review_data import write_job

from pipeline.cli import main
from pipeline.output import JobOutput
from pipeline.output.marks import EXCLUDE, ONLY, MarkFilter, read_marks
from pipeline.output.results import ResultColumns, ResultReader
from pipeline.storage import Location

NUM_ROWS = 24


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    return write_job(str(tmp_path_factory.mktemp("marks")), NUM_ROWS)


def masks_of(job, marks=None):
    """(id, box) of every mask the reader exports, and the reader."""
    reader = ResultReader(JobOutput(job["output"]), ResultColumns("id", "labels"), marks=marks)
    return {(image.row_id, m.box_index) for image in reader.images() for m in image.masks}, reader


def write(path, text: str) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


def test_json_and_csv_name_the_same_masks(tmp_path):
    as_json = write(tmp_path / "m.json", json.dumps({"results": "x", "marks": [
        {"id": "im0001", "box": 0, "mark": "good", "file": "a.png"}, {"id": 12, "box": 2.0, "mark": "Bad"},
        {"id": "im0003", "box": "1"}]}))
    as_csv = write(tmp_path / "m.csv", "id,box,mark,file\r\nim0001,0,good,a.png\r\n12,2,bad,\r\nim0003,1,,\r\n")
    bare = write(tmp_path / "bare.json", json.dumps([{"id": "im0001", "box": 0, "mark": "good"},
                                                      {"id": "12", "box": 2, "mark": "bad"}, {"id": "im0003", "box": 1}]))
    for path in (as_json, as_csv, bare):
        marks = read_marks(Location(path))
        assert (marks.good, marks.bad, marks.unmarked) == ({("im0001", 0)}, {("12", 2)}, {("im0003", 1)}), path


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ('{"marks": 3}', "a list of marks"),
    ('[{"box": 1}]', r"marks\[0\]: no id"),
    ('[{"id": "a", "box": -1}]', "box must be the mask's box index"),
    ('[{"id": "a", "box": 1.5}]', "box must be the mask's box index"),
    ('[{"id": "a", "box": true}]', "box must be the mask's box index"),
    ('[{"id": "a", "box": 0, "mark": "maybe"}]', 'mark must be "good" or "bad"'),
    ('[{"id": "a", "box": 0, "mark": "good"}, {"id": "a", "box": 0, "mark": "bad"}]', "marked both good and bad"),
    ("id,mark\na,good\n", "missing box"),
    ("id,box\na,x\n", "line 2: box must be"),
])
def test_malformed_marks_are_named(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        read_marks(Location(write(tmp_path / "marks", text)))


def test_missing_marks_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="the review page's Download"):
        read_marks(Location(str(tmp_path / "nope.json")))


def test_exclude_and_only_over_the_results(job, tmp_path):
    everything, plain = masks_of(job)
    listed = sorted(everything)
    bad, good, unmarked = set(listed[:4]), set(listed[4:9]), {listed[9]}
    entries = ([{"id": i, "box": b, "mark": "bad"} for i, b in bad] + [{"id": i, "box": b, "mark": "good"} for i, b in good]
               + [{"id": i, "box": b} for i, b in unmarked])
    marks = read_marks(Location(write(tmp_path / "marks.json", json.dumps(entries))))

    kept, reader = masks_of(job, MarkFilter(marks, EXCLUDE))
    assert kept == everything - bad - unmarked
    assert reader.marked_out_boxes == 5 and reader.num_images == plain.num_images

    only = MarkFilter(marks, ONLY)
    kept, reader = masks_of(job, only)
    assert kept == good | unmarked and only.unmet() == []
    images = {row_id for row_id, _ in good | unmarked}
    assert reader.num_images == len(images)
    assert reader.unmarked_images == plain.num_images - len(images)
    assert reader.marked_out_boxes == sum(1 for key in everything if key[0] in images) - len(good | unmarked)


def test_export_reports_marks_and_warns_of_another_jobs(job, tmp_path, capsys):
    everything, _ = masks_of(job)
    (row_id, box) = sorted(everything)[0]
    marks = write(tmp_path / "marks.csv", f"id,box,mark\n{row_id},{box},bad\nim9999,0,bad\n")
    out = str(tmp_path / "coco.json")
    assert main(["export", "--format", "coco-rle", "--input", job["output"], "--output", out, "--exclude", marks]) == 0
    printed = capsys.readouterr()
    assert "1 masks marked bad left out" in printed.out
    assert "1 of the 2 masks the marks file lists are not among these results" in printed.err and "'im9999'" in printed.err
    with open(out) as f:
        assert len(json.load(f)["annotations"]) == len(everything) - 1

    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--format", "coco-rle", "--input", job["output"], "--output", out, "--exclude", marks,
              "--only", marks])
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert main(["export", "--format", "coco-rle", "--input", job["output"], "--output", out, "--only",
                 os.path.join(str(tmp_path), "missing.json")]) != 0
    assert "marks file not found" in capsys.readouterr().err
    # Marks that would export nothing (--only, no mask marked good) refuse before any work.
    assert main(["export", "--format", "coco-rle", "--input", job["output"], "--output", out, "--only", marks]) == 2
    assert "marks no mask good (0 good, 2 bad)" in capsys.readouterr().err
