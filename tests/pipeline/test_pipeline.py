"""The Ray Data pipeline on a real local Ray cluster: bad rows, block sizing, S3 (moto),
and masks identical to running samhq_core directly."""

import collections
import dataclasses
import io
import json
import math
import os
import re
import shutil
import signal
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import torch
from helpers.http_server import LocalHTTPServer
from helpers.models import samhq_core_masks
from helpers.pipeline_data import sample_rows, write_rows
from PIL import Image
from pycocotools import mask as mask_utils

from pipeline.config import ConfigError, parse_config
from pipeline.inputs.boxes import boxes_to_xyxy, check_boxes
from pipeline.job.dataset import read_input
from pipeline.job.plan import plan_job, read_columns
from pipeline.job.progress import ProgressReporter
from pipeline.job.run import JobFailed, run_job
from pipeline.stages import Stage, StageUDF
from pipeline.stages.crash_guard import CrashGuard
from pipeline.stages.run_lengths import RunLengthCoder
from samhq_core.checkpoint_sources import file_sha256


@pytest.fixture(scope="module")
def checkpoint(vit_pair):
    return vit_pair.pth


def job_config(tmp_path, checkpoint, **sections):
    data = {
        "input": {"path": str(tmp_path / "input"), "id_column": "id", "image_column": "image", "boxes_column": "boxes",
                  "passthrough_columns": ["source"], "category_column": "labels"},
        "output": {"path": str(tmp_path / "output")},
        "model": {"checkpoint": checkpoint},
        "compute": {"num_actors": 1, "batch_size": 2, "decode_batch_size": 2, "torch_threads": 2},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return parse_config(data)


def read_output(path):
    return {row["id"]: row for row in pq.read_table(path).to_pylist()}


def test_box_conversion_and_checks():
    boxes = np.array([[10.0, 20.0, 30.0, 40.0]])
    assert boxes_to_xyxy(boxes, "xywh").tolist() == [[10, 20, 40, 60]]
    assert boxes_to_xyxy(boxes, "cxcywh").tolist() == [[-5, 0, 25, 40]]
    clipped, reasons = check_boxes(np.array([[-5.0, 0, 25, 40], [np.inf, 0, 1, 1], [5, 5, 4, 6], [90, 90, 95, 95]]), 50, 80)
    assert clipped[0].tolist() == [0, 0, 25, 40]
    assert reasons == [None, "non-finite coordinates", "inverted box (x2 < x1 or y2 < y1)",
                       "empty after clipping to the image"]


def _masks_of_every_kind() -> np.ndarray:
    rng = np.random.default_rng(0)
    masks = np.zeros((6, 37, 53), bool)
    masks[0, 5:20, 10:30] = True
    masks[1] = rng.random((37, 53)) > 0.5
    masks[2, 0, 0] = True  # a run of ones first
    masks[4] = True  # full; masks[3] stays empty
    masks[5, 36, 52] = True
    return masks


@pytest.mark.parametrize("chunks, budget", [((6,), 1 << 28), ((2, 1, 3), 2 * 37 * 53)])
def test_run_lengths_match_pycocotools(chunks, budget):
    """In one search of the run boundaries, and in several when the pending masks reach the
    coder's pixel budget (device memory stays bounded)."""
    masks = _masks_of_every_kind()
    coder, start = RunLengthCoder(37, 53, max_pending_pixels=budget), 0
    for size in chunks:
        coder.add(torch.from_numpy(masks[start : start + size]))
        start += size
    stats = coder.finish(torch.arange(6.0))
    assert coder.boundary_searches == (1 if len(chunks) == 1 else 2)
    np.testing.assert_array_equal(stats.values[0], np.arange(6.0))
    counts, areas, boxes = stats.counts, stats.areas, stats.boxes
    for i, mask in enumerate(masks):
        reference = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        ours = mask_utils.frPyObjects({"counts": counts[i].tolist(), "size": [37, 53]}, 37, 53)
        assert ours["counts"] == reference["counts"]
        assert areas[i] == mask_utils.area(reference)
        np.testing.assert_allclose(boxes[i], mask_utils.toBbox(reference))


def test_every_row_comes_out_and_masks_match_samhq_core(ray_cluster, checkpoint, vit_pair, tmp_path):
    rows = sample_rows()
    os.makedirs(tmp_path / "input")
    write_rows(str(tmp_path / "input" / "part-0.parquet"), rows[:7], row_group_size=3)
    write_rows(str(tmp_path / "input" / "part-1.parquet"), rows[7:])
    # Two batches at once in the one model actor (threads): the same masks as samhq_core's.
    config = job_config(tmp_path, checkpoint, compute={"concurrent_batches_per_actor": 2, "batch_size": 1})
    lines = []
    summary = run_job(config, log=lines.append)
    out = read_output(str(tmp_path / "output"))

    assert any(line.startswith("model:") and "1 actor (2 batches at once each)" in line for line in lines), lines
    assert set(out) == {r["id"] for r in rows}
    assert summary.rows_in == summary.rows_out == len(rows)
    assert summary.errors == {"image_decode": 2, "image_read": 1, "boxes": 1}
    # 2 + 1 boxes of the undecodable and unreadable rows; the short box's row has none countable
    assert summary.box_reasons["row failed (image_decode)"] == 2 and summary.box_reasons["row failed (image_read)"] == 1
    for row in rows:
        got = out[row["id"]]
        assert got["source"] == row["source"] and got["labels"] == row["labels"]
        assert "image" not in got
    assert out["truncated"]["error"].startswith("image_decode: OSError")
    assert out["garbage"]["error"].startswith("image_decode: UnidentifiedImageError")
    assert out["null_image"]["error"] == "image_read: ValueError: image is null"
    assert out["short_box"]["error"].startswith("boxes:")
    for key in ("no_boxes", "null_boxes"):
        assert out[key]["error"] is None and out[key]["masks"] == [] and out[key]["image_size"] == [120, 160]

    bad = out["bad_boxes"]
    assert bad["error"] is None
    assert bad["box_errors"] == ["non-finite coordinates", "inverted box (x2 < x1 or y2 < y1)",
                                 "empty after clipping to the image", None, "empty after clipping to the image"]
    assert [math.isnan(s) for s in bad["iou_scores"]] == [True, True, True, False, True]
    assert [math.isnan(s) for s in bad["stability_scores"]] == [True, True, True, False, True]
    assert bad["mask_areas"][:3] == [0, 0, 0] and bad["mask_bboxes"][0] == [0, 0, 0, 0]
    assert len(bad["masks"]) == 5

    model = vit_pair.ours
    for row in [r for r in rows if r["id"].startswith("good") or r["id"] == "bad_boxes"]:
        got = out[row["id"]]
        usable = [b for b, e in zip(row["boxes"], got["box_errors"], strict=True) if e is None]
        clipped = [[max(0.0, b[0]), max(0.0, b[1]), b[2], b[3]] for b in usable]
        masks, scores, stability = samhq_core_masks(model, row["image"], clipped)
        decoded = [mask_utils.decode({"size": m["size"], "counts": m["counts"].encode()}).astype(bool)
                   for m, e in zip(got["masks"], got["box_errors"], strict=True) if e is None]
        for mask, expected in zip(decoded, masks, strict=True):
            assert mask.shape == expected.shape
            assert (mask == expected).mean() > 0.999
        usable_scores = [s for s, e in zip(got["iou_scores"], got["box_errors"], strict=True) if e is None]
        np.testing.assert_allclose(usable_scores, scores, atol=1e-3)
        usable_stability = [s for s, e in zip(got["stability_scores"], got["box_errors"], strict=True) if e is None]
        np.testing.assert_allclose(usable_stability, stability, atol=1e-3)
        usable_areas = [a for a, e in zip(got["mask_areas"], got["box_errors"], strict=True) if e is None]
        assert usable_areas == [int(m.sum()) for m in decoded]


def test_blocks_outnumber_actors_and_stages_keep_them_whole(ray_cluster, checkpoint, tmp_path):
    """One small file in one row group still reaches both actors in several blocks (by default
    4 per actor), and the decode and model stages cut none of them further: Ray Data keeps the
    statistics of every block a stage puts out on the driver until the job ends."""
    os.makedirs(tmp_path / "input")
    write_rows(str(tmp_path / "input" / "one.parquet"), sample_rows(num_good=8)[:8], row_group_size=8)
    config = job_config(tmp_path, checkpoint, compute={"num_actors": 2, "num_cpus_per_actor": 0.5,
                                                       "batch_size": 1, "torch_threads": 1})
    summary = run_job(config)
    assert summary.rows_out == 8
    blocks = {name: int(n) for name, n in re.findall(r"Operator \d+ (\S+): \d+ tasks executed, (\d+) blocks produced",
                                                     summary.stats)}
    (cut,) = [n for name, n in blocks.items() if name.startswith("StreamingRepartition")]
    model_tasks = int(re.search(r"MapBatches\(ModelUDF\): (\d+) tasks executed", summary.stats).group(1))
    assert cut >= 2 * 2 and model_tasks >= 2 * 2, summary.stats
    assert blocks["MapBatches(DecodeUDF)"] <= cut and blocks["MapBatches(ModelUDF)"] <= cut, summary.stats


def test_writes_reserve_no_cpu_where_they_would_wait_and_write_every_row_once(ray_cluster, checkpoint, tmp_path):
    """compute.encode_cpus unset on this 2-CPU cluster (1 CPU beside the model actor): the
    encode tasks and Ray Data's write, fused, reserve no CPU, so that they run beside the
    decoding (a 1-CPU write would wait for all of it), and the job says so; every row is
    written once. Set to 1, the job warns that the writes wait."""
    os.makedirs(tmp_path / "input")
    write_rows(str(tmp_path / "input" / "rows.parquet"), sample_rows(num_good=12)[:12], row_group_size=4)
    config = job_config(tmp_path, checkpoint, input={"num_blocks": 4})
    lines = []
    summary = run_job(config, log=lines.append)
    assert summary.rows_out == 12 and summary.closing is not None and summary.closing.passed
    assert any(line.startswith("encode:") and "(0 CPU each)" in line for line in lines), lines
    (note,) = [line for line in lines if line.startswith("note:")]
    assert "reserve no CPU (compute.encode_cpus unset)" in note, note
    assert len(pq.ParquetDataset(str(tmp_path / "output")).files) >= 2  # several blocks, several writes

    config = job_config(tmp_path, checkpoint, input={"num_blocks": 4}, compute={"encode_cpus": 1},
                        output={"path": str(tmp_path / "output_1cpu")})
    lines = []
    assert run_job(config, log=lines.append).rows_out == 12
    assert any(line.startswith("encode:") and "(1 CPU each)" in line for line in lines), lines
    (note,) = [line for line in lines if line.startswith("note:")]
    assert "only after every image is decoded" in note, note


def test_many_small_input_files_are_read_about_a_block_per_read_task(ray_cluster, checkpoint, tmp_path):
    """Ray Data's Parquet reader packs files into read tasks of up to 128 MiB and reads each of
    a task's files in a thread of its own: these 60 small files would be one task of 60
    threads (10,000 such files, a 1M-row job, never finished). The job packs about a block's
    bytes per read task, each a block."""
    os.makedirs(tmp_path / "input")
    rows = sample_rows(num_good=2)[:2]
    for f in range(60):
        write_rows(str(tmp_path / "input" / f"part-{f:03}.parquet"), [dict(row, id=f"f{f}-{i}") for i, row in
                                                                       enumerate(rows)])
    plan = plan_job(job_config(tmp_path, checkpoint, input={"num_blocks": 6}))
    ds = read_input(plan, read_columns(plan.config), 6).materialize()
    assert ds.count() == 120
    (read_tasks, read_blocks) = [int(m) for m in re.search(r"ReadFiles\w*: (\d+) tasks executed, (\d+) blocks produced",
                                                            ds.stats()).groups()]
    # A read task's files make one block: no stage cuts blocks by rows after the read.
    assert 6 <= read_tasks <= 12 and read_blocks == read_tasks, ds.stats()
    assert "StreamingRepartition" not in ds.stats()


def test_s3_image_uris_checkpoint_and_output(ray_cluster, checkpoint, s3_endpoint, tmp_path):
    import boto3
    import s3fs

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="annotate")
    with open(checkpoint, "rb") as f:
        client.put_object(Bucket="annotate", Key="models/vit_small.pth", Body=f.read())
    rows = sample_rows(num_good=3)[:3]
    uri_rows = []
    for row in rows:
        key = f"images/{row['id']}.png"
        client.put_object(Bucket="annotate", Key=key, Body=row["image"])
        uri_rows.append({**row, "image": None, "uri": f"s3://annotate/{key}"})
    uri_rows.append({**rows[0], "id": "missing", "image": None, "uri": "s3://annotate/images/nope.png"})

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    table = pa.Table.from_pylist([{k: r[k] for k in ("id", "uri", "boxes", "source")} for r in uri_rows])
    with fs.open("annotate/input/part-0.parquet", "wb") as f:
        pq.write_table(table, f)
    config = parse_config({
        "input": {"path": "s3://annotate/input/", "id_column": "id", "image_uri_column": "uri", "boxes_column": "boxes"},
        "output": {"path": "s3://annotate/output"},
        "model": {"checkpoint": "s3://annotate/models/vit_small.pth"},
        "compute": {"num_actors": 1, "batch_size": 2, "torch_threads": 2},
        "storage": {"endpoint_url": s3_endpoint},
    })
    summary = run_job(config)
    assert summary.rows_out == 4 and summary.errors == {"image_read": 1}
    out = {}
    for name in fs.glob("annotate/output/*.parquet"):
        with fs.open(name, "rb") as f:
            out.update({r["id"]: r for r in pq.read_table(f).to_pylist()})
    assert out["missing"]["error"].startswith("image_read: FileNotFoundError")
    assert all(out[r["id"]]["error"] is None and len(out[r["id"]]["masks"]) == len(r["boxes"]) for r in rows)


def test_overwrite_replaces_only_the_jobs_own_files(ray_cluster, checkpoint, tmp_path):
    os.makedirs(tmp_path / "input")
    write_rows(str(tmp_path / "input" / "a.parquet"), sample_rows(num_good=2)[:2])
    run_job(job_config(tmp_path, checkpoint))
    first = sorted(os.listdir(tmp_path / "output"))
    results = [name for name in first if name not in ("_samhq_job.json", "_SUCCESS")]
    assert {"_samhq_job.json", "_SUCCESS"} <= set(first) and results
    assert all(re.match(r"masks-[0-9a-f]+-\d{6}-\d+\.parquet$", name) for name in results)
    manifest = json.loads((tmp_path / "output" / "_SUCCESS").read_text())
    assert manifest["rows_in"] == manifest["rows_out"] == 2 and manifest["files"] == results
    with pytest.raises(ConfigError, match="is not empty .*set output.mode: resume .* output.mode: overwrite"):
        run_job(job_config(tmp_path, checkpoint))
    summary = run_job(job_config(tmp_path, checkpoint, output={"mode": "overwrite"}))
    assert summary.rows_out == 2 and not set(results) & set(os.listdir(tmp_path / "output"))

    (tmp_path / "output" / "notes.txt").write_text("mine")
    before = sorted(os.listdir(tmp_path / "output"))
    with pytest.raises(ConfigError, match="holds 1 entries this pipeline did not write \\(notes.txt\\)"):
        run_job(job_config(tmp_path, checkpoint, output={"mode": "overwrite"}))
    assert sorted(os.listdir(tmp_path / "output")) == before  # nothing deleted, the user's file included


def test_actors_may_not_take_every_cpu(ray_cluster, checkpoint, tmp_path):
    os.makedirs(tmp_path / "input")
    write_rows(str(tmp_path / "input" / "a.parquet"), sample_rows(num_good=1)[:1])
    with pytest.raises(ConfigError, match=r"2 model actors x 1 CPUs = 2 CPUs, plus 1 for the read, decode and write "
                                          r"tasks, is more than the cluster's 2 CPUs"):
        run_job(job_config(tmp_path, checkpoint, compute={"num_actors": 2}))


def test_summary_counts_why_boxes_got_no_mask_and_warns_of_xywh_boxes(ray_cluster, checkpoint, tmp_path):
    """Detector boxes in [x, y, w, h] read as xyxy: the job still runs, and its summary counts
    the inverted boxes, the boxes of a failed row, and says to set input.box_format."""
    rng = np.random.default_rng(1)
    good = sample_rows(num_good=1)[0]
    h, w = Image.open(io.BytesIO(good["image"])).size[::-1]
    rows = []
    for i in range(4):
        boxes = [[float(rng.uniform(0.3, 0.5) * w), float(rng.uniform(0.3, 0.5) * h), 20.0, 15.0] for _ in range(4)]
        rows.append({**good, "id": f"xywh{i}", "boxes": boxes, "labels": ["a"] * 4})
    rows.append({**good, "id": "broken", "image": good["image"][:100], "boxes": [[1.0, 1.0, 5.0, 5.0]] * 2,
                 "labels": ["a", "a"]})
    os.makedirs(tmp_path / "input")
    write_rows(str(tmp_path / "input" / "part-0.parquet"), rows)
    lines = []
    config = job_config(tmp_path, checkpoint)
    summary = run_job(config, plan_job(config, force_box_format=True), log=lines.append, progress_interval=0.5)
    assert summary.boxes == 18 and summary.masks == 0
    assert summary.box_reasons == {"inverted box (x2 < x1 or y2 < y1)": 16, "row failed (image_decode)": 2}
    (xywh, most) = summary.warnings()
    assert xywh.startswith("16 of 18 boxes (89%) are inverted under input.box_format: xyxy") and "xywh" in xywh
    assert most.startswith("most boxes could not be used (18 of 18)")
    rendered = summary.render()
    assert "boxes without a mask: inverted box (x2 < x1 or y2 < y1): 16; row failed (image_decode): 2" in rendered
    assert "  warning: 16 of 18 boxes" in rendered
    assert lines[0] == "model.mask_source: sam_plus_hq, the official output"
    assert lines[1].startswith("warning: input.box_format is xyxy, but 16 of 18 boxes in the first rows of ")
    assert [line.split(":")[0] for line in lines[2:7]] == ["input", "decode", "model", "encode", "cluster"]
    assert any(re.match(r"progress: \d+ / 5 rows decoded, \d+ through the model \(\d+%\), \d+ encoded for writing, "
                        r"after \d+ s, [0-9.]+ images/s", line) for line in lines)
    assert {r["id"]: r["num_boxes"] for r in read_output(str(tmp_path / "output")).values()} == {
        "xywh0": 4, "xywh1": 4, "xywh2": 4, "xywh3": 4, "broken": 2}


def one_bit_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, format="PNG")  # a few hundred bytes at any size
    return buffer.getvalue()


def test_hostile_rows_are_row_errors_and_bad_files_are_skipped(ray_cluster, checkpoint, tmp_path):
    """A corpus of rows and files that once killed, hung or silently passed the job: each is
    now that row's error (or a skipped file, listed), and every other row comes out."""
    os.makedirs(tmp_path / "input")
    good = sample_rows(num_good=2)[:2]
    box = [[1.0, 1.0, 20.0, 20.0]]
    hostile = [
        {"id": "one_by_5000", "image": one_bit_png(5000, 1), "boxes": box},  # 0 px high by the official rounding
        {"id": None, "image": good[0]["image"], "boxes": box},
        {"id": "", "image": good[0]["image"], "boxes": box},
        {"id": "bomb", "image": one_bit_png(2000, 2000), "boxes": box},  # 4 MP in a few hundred bytes
        {"id": "large", "image": one_bit_png(1200, 1000), "boxes": box},  # 1.2 MP: under Pillow's own 2x limit
        {"id": "too_many_bytes", "image": good[1]["image"] + b"\0" * 300_000, "boxes": box},
    ]
    rows = good + [{"labels": ["a"], **r, "source": "x"} for r in hostile]
    rows.append({"id": "two_labels", "image": good[0]["image"], "boxes": box, "labels": ["a", "b"], "source": "x"})
    write_rows(str(tmp_path / "input" / "a.parquet"), rows)
    (tmp_path / "input" / "b.parquet").write_bytes(b"PAR1 truncated")
    pq.write_table(pq.read_table(tmp_path / "input" / "a.parquet").drop_columns(["boxes"]),
                   tmp_path / "input" / "c.parquet")
    config = job_config(tmp_path, checkpoint, input={"on_bad_file": "skip", "max_image_pixels": 1_000_000,
                                                     "max_image_bytes": 250_000})
    summary = run_job(config)
    assert summary.rows_in == summary.rows_out == 9 and summary.closing.passed
    rows = pq.read_table(tmp_path / "output").to_pylist()
    errors = {row["id"]: row["error"] for row in rows}
    assert errors["good0"] is None and errors["good1"] is None
    sliver = next(row for row in rows if row["id"] == "one_by_5000")  # resized to 1 x 1024: a row like any
    assert sliver["error"] is None and sliver["image_size"] == [1, 5000] and sliver["masks"][0]["size"] == [1, 5000]
    assert errors["bomb"].startswith("image_decode: ValueError: the image is larger than input.max_image_pixels "
                                     "(1.0 MP): Image size (4000000 pixels) exceeds limit")
    assert errors["large"] == ("image_decode: ValueError: the image is 1200 x 1000 = 1.2 MP, more than "
                               "input.max_image_pixels (1.0 MP)")
    assert errors["too_many_bytes"] == "image_read: ValueError: the image has more than input.max_image_bytes (250000 bytes)"
    assert errors[None] == "id: id is null: give every row a distinct id" and errors[""].startswith("id: id is empty")
    assert errors["two_labels"] == ("per_box: input.category_column 'labels' has 2 entries for 1 boxes: give one per "
                                    "box (null for none)")
    assert summary.errors == {"id": 2, "image_decode": 2, "image_read": 1, "per_box": 1}
    skipped = {line.split(": ", 1)[0].rsplit("/", 1)[-1]: line for line in summary.skipped_files}
    assert set(skipped) == {"b.parquet", "c.parquet"}
    assert "not a readable Parquet file" in skipped["b.parquet"] and "no column 'boxes'" in skipped["c.parquet"]
    assert "skipped 2 input files (input.on_bad_file: skip)" in summary.render()
    manifest = json.loads((tmp_path / "output" / "_SUCCESS").read_text())
    assert {os.path.basename(s["url"]) for s in manifest["skipped_input_files"]} == {"b.parquet", "c.parquet"}


def test_image_uris_outside_the_allowed_prefixes_fifos_and_traversal_are_row_errors(ray_cluster, checkpoint, tmp_path):
    images, secret = tmp_path / "data" / "images", tmp_path / "secret.png"
    os.makedirs(images)
    os.makedirs(tmp_path / "data" / "input")
    good = sample_rows(num_good=1)[0]
    (images / "good.png").write_bytes(good["image"])
    secret.write_bytes(good["image"])
    os.mkfifo(images / "fifo.png")  # reading it would block for ever
    uris = {"good": str(images / "good.png"), "fifo": str(images / "fifo.png"),
            "traversal": str(images / ".." / ".." / "secret.png"), "outside": str(secret),
            "internal_url": "http://127.0.0.1:9/latest/meta-data", "passwd": "file:///etc/passwd",
            # Relative paths are read against the input's directory (tmp/data/input), never a worker's.
            "relative": "../images/good.png", "relative_missing": "../images/nope.png",
            "relative_outside": "../../secret.png"}

    pq.write_table(pa.table({"id": list(uris), "uri": list(uris.values()),
                             "boxes": [[[1.0, 1.0, 20.0, 20.0]]] * len(uris)}), tmp_path / "data" / "input" / "a.parquet")
    config = parse_config({
        "input": {"path": str(tmp_path / "data" / "input"), "id_column": "id", "image_uri_column": "uri",
                  "boxes_column": "boxes", "read_timeout_s": 5},
        "output": {"path": str(tmp_path / "output")},
        "model": {"checkpoint": checkpoint},
        "compute": {"num_actors": 1, "batch_size": 2, "decode_batch_size": 2, "torch_threads": 2},
    })
    summary = run_job(config)  # the default prefix: the directory above the input's (tmp/data)
    errors = {row["id"]: row["error"] for row in pq.read_table(tmp_path / "output").to_pylist()}
    assert errors["good"] is None and summary.rows_out == len(uris)
    assert errors["fifo"] == f"image_read: ValueError: {images / 'fifo.png'} is not a regular file (type other)"
    for name in ("traversal", "outside", "internal_url", "passwd"):
        assert errors[name].startswith(f"image_read: PermissionError: {uris[name]} lies outside "
                                       f"input.allowed_uri_prefixes ({tmp_path / 'data'})"), errors[name]
    assert errors["relative"] is None
    read_as = f"{tmp_path / 'data' / 'input'}/../images/nope.png"
    assert errors["relative_missing"] == (f"image_read: FileNotFoundError: {read_as} not found (uri '../images/nope.png' "
                                          "(a relative path, read against the input's directory))")
    assert errors["relative_outside"].startswith(f"image_read: PermissionError: {tmp_path / 'data' / 'input'}/../../"
                                                 "secret.png lies outside input.allowed_uri_prefixes")
    assert errors["relative_outside"].endswith("; uri '../../secret.png' (a relative path, read against the input's "
                                               "directory)")


def test_box_values_must_be_numbers():
    from pipeline.inputs.boxes import parse_boxes

    assert parse_boxes([[1, 2.5, None, 4]]).tolist()[0][:2] == [1.0, 2.5]
    for value in ("10", " 80 ", "1e1", True):
        with pytest.raises(ValueError, match=f"{value!r} \\({type(value).__name__}\\) is not a number"):
            parse_boxes([[value, 1, 2, 3]])


def test_uri_prefixes_compare_whole_path_segments():
    from pipeline.storage import uri_allowed

    prefixes = ["s3://Bucket/images/", "/data/images"]
    assert uri_allowed("s3://bucket/images/a.png", prefixes) and uri_allowed("/data/images/x/y.png", prefixes)
    for uri in ("s3://bucket/images-private/a.png", "s3://bucket/images/../secret.png", "s3://other/images/a.png",
                "/data/images2/a.png", "/data/images/../passwd", "http://bucket/images/a.png"):
        assert not uri_allowed(uri, prefixes), uri


def test_readers_leave_out_interrupted_writes_named_by_a_checkpoint_elsewhere(tmp_path):
    """An unfinished output whose checkpoint is at output.checkpoint_path (not inside it):
    readers still leave out the result files whose writes the checkpoint holds as pending."""
    from helpers.result_data import describe_job

    from pipeline.output import JobOutput

    output, checkpoint = tmp_path / "output", tmp_path / "checkpoints"
    describe_job(str(output), 2, {"id_column": "id", "image_column": "image"},
                 output_keys={"checkpoint_path": str(checkpoint)})
    for task in (0, 1):
        write_rows(str(output / f"masks-abc-00000{task}-0.parquet"), sample_rows(num_good=1)[:1])
    checkpoint.mkdir()
    (checkpoint / "masks-abc-000001.pending.parquet").write_bytes(b"")
    listing = JobOutput(str(output)).result_files()
    assert [os.path.basename(f) for f in listing.files] == ["masks-abc-000000-0.parquet"]
    assert "has no _SUCCESS" in listing.warning and "leaving out 1 of interrupted writes" in listing.warning


def test_a_job_that_stops_says_why_and_how_to_go_on(ray_cluster, checkpoint, tmp_path):
    """The model checkpoint goes away between the checks and the actors' start: the job
    stops with the cause named and output.mode: resume as the way on, not a Ray traceback."""
    os.makedirs(tmp_path / "input")
    write_rows(str(tmp_path / "input" / "a.parquet"), sample_rows(num_good=2)[:2])
    shutil.copy(checkpoint, tmp_path / "model.pth")
    config = job_config(tmp_path, str(tmp_path / "model.pth"))
    plan = plan_job(config)
    os.remove(tmp_path / "model.pth")
    with pytest.raises(JobFailed, match=r"^the job stopped: \w+: .*model\.pth.* The 0 result files written so far at "
                                        r".* are kept; .* output\.mode: resume"):
        run_job(config, plan)


class FlakyImageServer(LocalHTTPServer):
    """Images over HTTP on 127.0.0.1, from a thread of the test: paths in `failing` answer 503,
    unknown ones 404; `requests` counts the requests per path."""

    def __init__(self, images):
        import http.server

        self.images, self.failing, self.requests = dict(images), set(), collections.Counter()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, body: bool) -> None:
                server.requests[self.path] += 1
                if self.path in server.failing:
                    self.send_error(503, "Service Unavailable")
                elif self.path not in server.images:
                    self.send_error(404)
                else:
                    data = server.images[self.path]
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if body:
                        self.wfile.write(data)

            def do_GET(self):
                self._answer(body=True)

            def do_HEAD(self):
                self._answer(body=False)

            def log_message(self, *args):
                pass

        super().__init__(Handler)


def test_retry_errors_runs_again_only_transient_failures_in_place(ray_cluster, checkpoint, tmp_path):
    rows = sample_rows(num_good=4)[:4]
    images = {f"/{row['id']}.png": row["image"] for row in rows}
    images["/corrupt.png"] = b"not an image"
    server = FlakyImageServer(images)
    try:
        uri_rows = [{"id": row["id"], "uri": server.url + f"/{row['id']}.png", "boxes": row["boxes"]} for row in rows]
        uri_rows += [{"id": "corrupt", "uri": server.url + "/corrupt.png", "boxes": rows[0]["boxes"]},
                     {"id": "missing", "uri": server.url + "/missing.png", "boxes": rows[0]["boxes"]}]
        os.makedirs(tmp_path / "input")
        pq.write_table(pa.Table.from_pylist(uri_rows), tmp_path / "input" / "a.parquet", row_group_size=2)
        config = job_config(tmp_path, checkpoint, input={
            "image_column": None, "image_uri_column": "uri", "passthrough_columns": [], "category_column": None,
            "allowed_uri_prefixes": [server.url + "/"]})
        flaky = {f"/{rows[1]['id']}.png", f"/{rows[3]['id']}.png"}
        server.failing |= flaky
        first = run_job(config)
        assert first.errors == {"image_read": 3, "image_decode": 1}, first.errors
        output = tmp_path / "output"
        before = {name: pq.read_table(output / name) for name in os.listdir(output) if name.startswith("masks-")}
        rows_before = {r["id"]: r for table in before.values() for r in table.to_pylist()}
        assert "503" in rows_before[rows[1]["id"]]["error"] and "404" in rows_before["missing"]["error"]

        server.failing.clear()
        server.requests.clear()
        with pytest.raises(ConfigError, match="--retry-errors: the config differs .*model.sha256"):
            plan_job(job_config(tmp_path, checkpoint, input=config.input.model_dump(),
                                model={"sha256": file_sha256(checkpoint)}), retry_errors=True)
        plan = plan_job(config, retry_errors=True)
        assert sorted(plan.retry.ids) == sorted([rows[1]["id"], rows[3]["id"]])
        again = run_job(config, plan)
        # Only the two rows that met a 503 were read again: not the good, corrupt or missing ones.
        assert set(server.requests) == flaky, server.requests
        assert again.retried.rows == 2 and again.retried.fixed == 2
        assert again.errors == {"image_read": 1, "image_decode": 1} and again.closing.passed
        after = {name: pq.read_table(output / name) for name in os.listdir(output) if name.startswith("masks-")}
        assert set(after) == set(before) and not os.path.exists(output / "_retry")
        for name, table in after.items():  # each row in its place; the rows not retried unchanged
            assert table.column("id").to_pylist() == before[name].column("id").to_pylist()
            for old, new in zip(before[name].to_pylist(), table.to_pylist(), strict=True):
                if f"/{old['id']}.png" in flaky:
                    assert new["error"] is None and len(new["masks"]) == len(new["mask_areas"]) == new["num_boxes"]
                else:
                    assert new == old
        manifest = json.loads((output / "_SUCCESS").read_text())
        assert [(r["rows"], r["fixed"]) for r in manifest["retries"]] == [(2, 2)] and manifest["rows_out"] == 6

        nothing = run_job(config, plan_job(config, retry_errors=True))
        assert nothing.retried.rows == 0 and "no row had a transient error" in nothing.render()
    finally:
        server.close()


@dataclasses.dataclass
class Echo:
    num_boxes: int | None = None  # a column of pipeline.schema; here, the id's length

    @classmethod
    def passthrough(cls):
        return cls()


class KillsItsWorkerOnPoison(StageUDF):
    """A stage whose worker process dies (SIGKILL, as an OOM kill or a native crash ends it)
    whenever the row `poison` is in its batch, after noting its process id in `deaths`."""

    result_type = Echo

    def __init__(self, deaths: str):
        self.deaths = deaths

    def process(self, batch):
        ids = batch.column("id").to_pylist()
        if "poison" in ids:
            with open(self.deaths, "a") as f:
                f.write(f"{os.getpid()} {len(ids)}\n")
            os.kill(os.getpid(), signal.SIGKILL)
        return [Echo(len(row_id)) for row_id in ids]


@pytest.mark.parametrize("on_actor", [False, True], ids=["task", "actor"])
def test_a_row_that_kills_its_worker_every_time_becomes_a_row_error(ray_cluster, on_actor, tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/
    guard = CrashGuard("id", max_crashes=3, directory=str(tmp_path / "markers"))
    ids = [f"row{i}" for i in range(7)] + ["poison"] + [f"row{i}" for i in range(7, 10)]
    deaths = tmp_path / "deaths.txt"
    stage = Stage("poison", KillsItsWorkerOnPoison, {"deaths": str(deaths)},
                  dict(batch_format="pyarrow", batch_size=4, num_cpus=0.5), "test", required_columns=("id",),
                  actors=ray.data.ActorPoolStrategy(size=1) if on_actor else None, crash_guard=guard)
    out = stage.apply(ray.data.from_arrow(pa.table({"id": ids})).repartition(1)).take_all()
    rows = {r["id"]: r for r in out}
    assert sorted(r["id"] for r in out) == sorted(ids)  # every row out, once
    assert rows["poison"]["error"] == ("stage: KillsItsWorkerOnPoison: the worker process died 3 times while "
                                       "processing this row (compute.max_worker_crashes: 3); it is not run again")
    assert all(rows[i]["error"] is None and rows[i]["num_boxes"] == len(i) for i in ids if i != "poison")
    # Three worker processes really died on poison: first with its batch (of 4), then twice alone.
    died = [line.split() for line in deaths.read_text().splitlines()]
    assert [size for _, size in died] == ["4", "1", "1"] and len({pid for pid, _ in died}) == 3
    assert not [path for path in (tmp_path / "markers").rglob("*") if path.is_file()]  # no marker left


class SlowCounter:
    """A row counter that takes longer to answer than the progress interval, like one still
    starting on a busy node."""

    def value(self):
        time.sleep(0.6)
        return {"decode": 4, "model": 3, "encode": 2}


def test_progress_lines_come_from_a_counter_slower_than_the_interval(ray_cluster):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    counter = ray.remote(num_cpus=0)(SlowCounter).remote()
    lines = []
    try:
        with ProgressReporter(counter, total=4, interval=0.2, log=lines.append):
            time.sleep(3)
    finally:
        ray.kill(counter)
    assert lines and all(re.match(r"progress: 4 / 4 rows decoded, 3 through the model \(75%\), 2 encoded for writing",
                                  line)
                         for line in lines)
