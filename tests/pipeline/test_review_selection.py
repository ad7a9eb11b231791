"""The review page's data, without a browser: the bounded selection (lowest-scored images, a
seeded sample of the rest, counts over everything) on an output larger than --max-images, the
targeted read of the images, placeholders and messages for bad input, and what found each mask
(segment-everything's with their points; outputs that do not say). The page itself is tested in
a real browser in tests/e2e/test_review.py."""

import json
import os
import shutil
import subprocess
import sys
import weakref
from collections import Counter
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.paths import ROOT
from helpers.review_data import FAILURES, expected_lowest, page_data, write_job

from pipeline.output import JobOutput
from pipeline.output.results import ResultColumns, ResultImage, ResultMask, ResultReader
from pipeline.review.page import MANIFEST, PICTURES, write_review
from pipeline.review.selection import found_by_kinds, select

NUM_ROWS, MAX_IMAGES, NEEDS_REVIEW = 300, 40, 10


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    return write_job(str(tmp_path_factory.mktemp("review")), NUM_ROWS)


def test_page_data_over_an_output_larger_than_max_images(job, tmp_path, monkeypatch):
    image_reads = []
    read_row_group = pq.ParquetFile.read_row_group

    def counting(self, i, columns=None, **kwargs):
        if columns is not None and "image" in columns:
            image_reads.append(i)
        return read_row_group(self, i, columns=columns, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counting)
    summary = write_review(JobOutput(job["output"]), str(tmp_path / "page"), max_images=MAX_IMAGES,
                           needs_review=NEEDS_REVIEW, seed=3)
    data, rows = page_data(summary.page), job["rows"]

    good = [r for r in rows if r["error"] is None]
    masks = Counter(label for r in good for label in r["labels"])
    assert data["totals"] == {"rows": NUM_ROWS, "images": len(good), "num_masks": sum(masks.values()),
                              "skipped_rows": len(FAILURES), "skipped_boxes": 0,
                              "failed_rows": dict(Counter(kind for kind, _ in FAILURES.values()))}
    assert {c["name"]: c["num_masks"] for c in data["categories"]} == masks
    for name in ("iou", "stability"):
        assert sum(data["histograms"][name]["bins"]) == sum(masks.values()) and data["histograms"][name]["missing"] == 0
    below_half = sum(1 for r in good for s in r["iou_scores"] if s < 0.5)
    assert sum(data["histograms"]["iou"]["bins"][:10]) == below_half

    # Exactly max_images rendered: the lowest first, in order, then a sample of the others.
    cards = data["cards"]
    assert summary.shown == len(cards) == MAX_IMAGES and summary.unreadable == 0
    lowest = [c["id"] for c in cards if c["section"] == "review"]
    assert lowest == expected_lowest(rows, NEEDS_REVIEW)
    assert [c["score"] for c in cards[:NEEDS_REVIEW]] == sorted(c["score"] for c in cards[:NEEDS_REVIEW])
    sample = [c["id"] for c in cards if c["section"] == "sample"]
    assert len(sample) == MAX_IMAGES - NEEDS_REVIEW == len(set(sample)) and not set(sample) & set(lowest)
    assert all(c["thumbnail"] and c["problem"] is None for c in cards)
    pictures = os.listdir(tmp_path / "page" / PICTURES)
    assert len([p for p in pictures if p.endswith(".jpg")]) == MAX_IMAGES
    assert len([p for p in pictures if p.endswith(".png")]) == sum(len(c["segments"]) for c in cards)
    prompts = {r["id"]: r for r in rows}
    for c in cards:
        for m in c["segments"]:
            x, y, w, h = prompts[c["id"]]["mask_bboxes"][m["box"]]
            assert m["prompt"] == [x, y, x + w, y + h]  # the input's boxes, by box index
    # Only the row groups that hold a chosen image had their image column read.
    holding = {int(r["id"][2:]) // 16 for r in rows if r["id"] in set(lowest + sample)}
    assert sorted(image_reads) == sorted(holding) and len(holding) < -(-NUM_ROWS // 16)

    # The sample is seeded: the same again with the same seed, another with another.
    again = page_data(write_review(JobOutput(job["output"]), str(tmp_path / "page"), max_images=MAX_IMAGES,
                                   needs_review=NEEDS_REVIEW, seed=3).page)
    assert [c["id"] for c in again["cards"]] == lowest + sample
    other = page_data(write_review(JobOutput(job["output"]), str(tmp_path / "other"), max_images=MAX_IMAGES,
                                   needs_review=NEEDS_REVIEW, seed=4).page)
    assert [c["id"] for c in other["cards"] if c["section"] == "review"] == lowest
    assert [c["id"] for c in other["cards"] if c["section"] == "sample"] != sample


def test_selection_holds_at_most_max_images(job):
    """By construction: the pass never keeps more than max_images of the images it was given
    alive (each is dropped once it leaves both the heap and the reservoir)."""
    reader = ResultReader(JobOutput(job["output"]), ResultColumns("id", "labels"))
    alive = []
    peak = 0

    def tracked():
        nonlocal peak
        for image in reader.images():
            alive.append(weakref.ref(image))
            yield image
            del image
            peak = max(peak, sum(1 for ref in alive if ref() is not None))

    selection = select(tracked(), MAX_IMAGES, NEEDS_REVIEW, seed=0)
    assert selection.images_seen == NUM_ROWS - len(FAILURES) > 5 * MAX_IMAGES
    assert peak <= MAX_IMAGES + 1  # + the one the reader yielded last, which it still holds
    assert len(selection.needs_review) + len(selection.sample) == MAX_IMAGES


def test_small_output_and_no_needs_review(job):
    images = list(ResultReader(JobOutput(job["output"]), ResultColumns("id", "labels")).images())[:5]
    everything = select(images, max_images=10, needs_review=3)
    assert len(everything.needs_review) == 3 and len(everything.sample) == 2
    only_sample = select(images, max_images=4, needs_review=0, seed=1)
    assert only_sample.needs_review == [] and len(only_sample.sample) == 4
    with pytest.raises(ValueError, match="needs_review <= max_images"):
        select(images, max_images=2, needs_review=3)


def test_fewer_scored_images_than_needs_review_leave_room_for_the_sample(job):
    """Every scored image is under "needs review" and the sample fills the rest of
    max_images, still holding at most max_images images."""
    images = list(ResultReader(JobOutput(job["output"]), ResultColumns("id", "labels")).images())
    scored = sum(1 for image in images if image.masks)
    selection = select(iter(images), max_images=scored + 20, needs_review=scored + 10)
    assert len(selection.needs_review) == scored
    assert len(selection.sample) == 20 and all(not image.masks for image in selection.sample)


def _image(index: int, score: Optional[float]) -> ResultImage:
    masks = [] if score is None else [ResultMask(0, {"size": [1, 1], "counts": "01"}, score, score, 1, [0, 0, 1, 1], 1, 0)]
    return ResultImage(index, f"im{index}", f"im{index}", 1, 1, masks)


def test_sample_stays_uniform_when_the_lowest_scored_come_last():
    """30 images without masks, then 5 scored ones that take their room: each unscored image
    is in the sample of 5 equally often over seeds."""
    images = [_image(i, None) for i in range(30)] + [_image(30 + i, 0.1 * i) for i in range(5)]
    seeds = 3000
    counts = Counter(image.index for seed in range(seeds) for image in select(iter(images), 10, 5, seed).sample)
    assert set(counts) == set(range(30)) and sum(counts.values()) == 5 * seeds
    expected = 5 * seeds / 30
    assert all(abs(n - expected) < 0.2 * expected for n in counts.values()), counts


def test_unreadable_images_are_placeholder_cards(job, tmp_path):
    table = pq.read_table(job["images"])
    ids = table.column("id").to_pylist()
    chosen = [c["id"] for c in page_data(write_review(JobOutput(job["output"]), str(tmp_path / "first"), max_images=6,
                                                      needs_review=2).page)["cards"]]
    images = table.column("image").to_pylist()
    images[ids.index(chosen[0])] = b"not an image"  # corrupt
    images[ids.index(chosen[1])] = None  # null
    keep = [i for i, row_id in enumerate(ids) if row_id != chosen[2]]  # not in the input at all
    broken = table.set_column(table.schema.get_field_index("image"), "image", pa.array(images, pa.binary())).take(keep)
    pq.write_table(broken, str(tmp_path / "broken.parquet"), row_group_size=16)

    summary = write_review(JobOutput(job["output"]), str(tmp_path / "page"), images=str(tmp_path / "broken.parquet"),
                           max_images=6, needs_review=2)
    cards = {c["id"]: c for c in page_data(summary.page)["cards"]}
    assert summary.shown == 6 and summary.unreadable == 3
    assert "cannot decode the image" in cards[chosen[0]]["problem"] and cards[chosen[0]]["thumbnail"] is None
    assert "image is null" in cards[chosen[1]]["problem"]
    assert "is not in the images input" in cards[chosen[2]]["problem"]
    assert all(cards[i]["thumbnail"] and cards[i]["problem"] is None for i in chosen[3:])


def test_images_by_uri(job, tmp_path):
    table = pq.read_table(job["images"])
    paths = []
    for row_id, data in zip(table.column("id").to_pylist(), table.column("image").to_pylist(), strict=True):
        paths.append(str(tmp_path / f"{row_id}.png"))
        with open(paths[-1], "wb") as f:
            f.write(data)
    paths[0] = str(tmp_path / "missing.png")
    paths[1] = "/etc/hostname"  # outside the input's tree: not read
    uris = table.drop_columns(["image"]).append_column("path", pa.array(paths))
    pq.write_table(uris, str(tmp_path / "uris.parquet"))
    summary = write_review(JobOutput(job["output"]), str(tmp_path / "page"), images=str(tmp_path / "uris.parquet"),
                           image_column="path", max_images=300, needs_review=0)
    cards = {c["id"]: c for c in page_data(summary.page)["cards"]}
    assert summary.shown == NUM_ROWS - len(FAILURES) and summary.unreadable == 2
    assert "FileNotFoundError" in cards["im0000"]["problem"]
    assert "/etc/hostname lies outside input.allowed_uri_prefixes" in cards["im0001"]["problem"]


def test_images_in_a_datasets_image_column(job, tmp_path):
    """A `datasets` Image column ({bytes, path}) as the job reads it: the bytes, else the path."""
    table = pq.read_table(job["images"])
    structs = []
    for k, (row_id, data) in enumerate(zip(table.column("id").to_pylist(), table.column("image").to_pylist(),
                                           strict=True)):
        path = str(tmp_path / f"{row_id}.png")
        with open(path, "wb") as f:
            f.write(data)
        structs.append({"bytes": data if k % 2 else None, "path": path})
    structs[3] = {"bytes": None, "path": None}
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    images = table.set_column(table.schema.get_field_index("image"), "image", pa.array(structs, image_type))
    pq.write_table(images, str(tmp_path / "structs.parquet"))
    summary = write_review(JobOutput(job["output"]), str(tmp_path / "page"), images=str(tmp_path / "structs.parquet"),
                           max_images=300, needs_review=0)
    cards = {c["id"]: c for c in page_data(summary.page)["cards"]}
    assert summary.shown == NUM_ROWS - len(FAILURES) and summary.unreadable == 1
    assert "has neither bytes nor a path" in cards["im0003"]["problem"]
    assert cards["im0000"]["thumbnail"] and cards["im0001"]["thumbnail"]  # from its path, from its bytes


def cli(*args):
    return subprocess.run([sys.executable, "-m", "pipeline", "review", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT}, timeout=300)


def test_cli_messages(job, tmp_path):
    ok = cli("--input", job["output"], "--out", str(tmp_path / "page"), "--max-images", "8")
    assert ok.returncode == 0, ok.stderr
    assert f"wrote {tmp_path / 'page' / 'index.html'}: 8 of {NUM_ROWS - len(FAILURES)} images" in ok.stdout
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    for args, message in (
        (["--input", str(tmp_path / "nowhere"), "--out", str(tmp_path / "a")], "results not found"),
        (["--input", job["output"], "--images", str(tmp_path / "no_images"), "--out", str(tmp_path / "b")],
         "images: not found"),
        (["--input", job["output"], "--out", str(tmp_path / "taken")], "holds no earlier review page"),
        # Over the earlier page: a failure leaves it as it was.
        (["--input", job["output"], "--image-column", "pixels", "--out", str(tmp_path / "page")], "'pixels'"),
    ):
        proc = cli(*args)
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
    assert os.listdir(tmp_path / "taken") == ["notes.txt"]
    assert len(page_data(str(tmp_path / "page" / "index.html"))["cards"]) == 8
    assert len([p for p in os.listdir(tmp_path / "page" / PICTURES) if p.endswith(".jpg")]) == 8
    assert sorted(os.listdir(tmp_path)) == ["page", "taken"]  # no work directory left behind


def test_a_new_page_replaces_only_the_earlier_pages_own_files(job, tmp_path):
    out = tmp_path / "page"
    write_review(JobOutput(job["output"]), str(out), max_images=8, needs_review=2)
    (out / "notes.txt").write_text("mine")
    (out / "mine").mkdir()
    (out / "mine" / "keep.txt").write_text("kept")
    (out / PICTURES / "mine.jpg").write_bytes(b"a picture of mine")
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["files"] += ["notes.txt", "mine/keep.txt", f"{PICTURES}/../notes.txt", f"{PICTURES}/mine.jpg"]
    (out / MANIFEST).write_text(json.dumps(manifest))  # an edited manifest cannot make it remove more
    # Links planted where the page's pictures were are replaced or removed, never followed.
    victim, stale_victim = tmp_path / "victim.jpg", tmp_path / "stale_victim.jpg"
    victim.write_bytes(b"victim")
    stale_victim.write_bytes(b"stale victim")
    for name, target in (("1.jpg", victim), ("8.jpg", stale_victim)):  # the next page has no 8.jpg
        (out / PICTURES / name).unlink()
        (out / PICTURES / name).symlink_to(target)

    summary = write_review(JobOutput(job["output"]), str(out), max_images=4, needs_review=1)
    assert len(page_data(summary.page)["cards"]) == 4
    assert (out / "notes.txt").read_text() == "mine" and (out / "mine" / "keep.txt").read_text() == "kept"
    assert (out / PICTURES / "mine.jpg").read_bytes() == b"a picture of mine"
    assert victim.read_bytes() == b"victim" and stale_victim.read_bytes() == b"stale victim"
    assert not (out / PICTURES / "1.jpg").is_symlink() and (out / PICTURES / "1.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert not os.path.lexists(out / PICTURES / "8.jpg")
    listed = json.loads((out / MANIFEST).read_text())["files"]
    assert sorted(listed) == sorted(["index.html"] + [f"{PICTURES}/{n}" for n in os.listdir(out / PICTURES)
                                                      if n != "mine.jpg"])
    assert sorted(os.listdir(tmp_path)) == ["page", "stale_victim.jpg", "victim.jpg"]  # no work directory left


def test_out_with_a_planted_link_is_refused(job, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "1.jpg").write_bytes(b"not the page's")
    out = tmp_path / "page"
    write_review(JobOutput(job["output"]), str(out), max_images=2, needs_review=1)
    shutil.rmtree(out / PICTURES)
    (out / PICTURES).symlink_to(elsewhere)
    with pytest.raises(ValueError, match="is not a directory"):
        write_review(JobOutput(job["output"]), str(out), max_images=2, needs_review=1)
    (out / PICTURES).unlink()
    (out / MANIFEST).unlink()
    (out / MANIFEST).symlink_to(tmp_path / "manifest_elsewhere.json")
    (tmp_path / "manifest_elsewhere.json").write_text(json.dumps({"generator": "samhq-annotate review",
                                                                   "files": ["index.html"]}))
    with pytest.raises(ValueError, match="holds no earlier review page"):
        write_review(JobOutput(job["output"]), str(out), max_images=2, needs_review=1)
    (tmp_path / "linked").symlink_to(elsewhere)
    for name in ("linked", "linked/"):
        with pytest.raises(ValueError, match="is a symbolic link"):
            write_review(JobOutput(job["output"]), f"{tmp_path}/{name}", max_images=2, needs_review=1)
    assert os.listdir(elsewhere) == ["1.jpg"] and (elsewhere / "1.jpg").read_bytes() == b"not the page's"


def test_found_by_kinds():
    assert found_by_kinds("box") == ["box"] and found_by_kinds("everything") == ["everything"]
    assert found_by_kinds("box+points+mask") == ["box", "points", "mask"] and found_by_kinds("points+mask") == [
        "points", "mask"]
    assert found_by_kinds(None) == found_by_kinds("") == found_by_kinds("lasso") == ["unknown"]


def test_page_data_says_what_found_each_mask(tmp_path):
    """Box masks ("box", "box+points") and segment-everything's: each mask's entry has its
    found_by, the kinds the page filters it under, and its prompt's box or the point that found
    it; the counts per kind are over every mask, a box+points mask under both."""
    job = write_job(str(tmp_path / "job"), 40, everything=True)
    summary = write_review(JobOutput(job["output"]), str(tmp_path / "page"), max_images=40, needs_review=5)
    data = page_data(summary.page)
    rows = {r["id"]: r for r in job["rows"] if r["error"] is None}
    found = Counter(f for r in rows.values() for f in r["found_by"])
    assert found["box"] and found["box+points"] and found["everything"]
    assert data["found_by"] == [{"name": "box", "num_masks": found["box"] + found["box+points"]},
                                {"name": "points", "num_masks": found["box+points"]},
                                {"name": "everything", "num_masks": found["everything"]}]
    assert len(data["cards"]) == len(rows)
    for card in data["cards"]:
        row = rows[card["id"]]
        assert [m["box"] for m in card["segments"]] == list(range(len(row["masks"])))
        for m in card["segments"]:
            k = m["box"]
            assert (m["found_by"], m["point"]) == (row["found_by"][k], row["point_coords"][k])
            if m["found_by"] == "everything":
                assert m["kinds"] == ["everything"] and m["prompt"] is None and m["category"] == "object"
            else:
                x, y, w, h = row["mask_bboxes"][k]
                assert m["kinds"] == m["found_by"].split("+") and m["prompt"] == [x, y, x + w, y + h]
                assert m["point"] is None and m["category"] == row["labels"][k]


def test_output_written_before_found_by(job, tmp_path):
    """Result files without the found_by, point_coords and crop_boxes columns still make a page:
    every mask's prompt kind is unknown."""
    output = str(tmp_path / "output")
    shutil.copytree(job["output"], output)
    for name in os.listdir(output):
        if name.endswith(".parquet"):
            table = pq.read_table(os.path.join(output, name))
            pq.write_table(table.drop_columns(["found_by", "point_coords", "crop_boxes"]), os.path.join(output, name))
    data = page_data(write_review(JobOutput(output), str(tmp_path / "page"), images=job["images"], max_images=8,
                                  needs_review=2).page)
    masks = [m for c in data["cards"] for m in c["segments"]]
    assert masks and all((m["found_by"], m["kinds"], m["point"]) == (None, ["unknown"], None) for m in masks)
    assert data["found_by"] == [{"name": "unknown", "num_masks": data["totals"]["num_masks"]}]
