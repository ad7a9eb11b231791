"""The job with Hugging Face: a Hub model id as model.checkpoint (from an offline hub cache,
through the CLI as users run it), `datasets` Image columns as input, the output read back by
`datasets.load_dataset`, and hf:// input paths (what can be checked offline)."""

import json
import os
import subprocess
import sys

import datasets
import huggingface_hub
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers.hub_cache import add_model
from helpers.models import samhq_core_masks
from helpers.paths import ROOT
from helpers.pipeline_data import png_bytes, sample_rows, write_rows
from pycocotools import mask as mask_utils

from pipeline.checks.paths import resolve_checkpoint
from pipeline.config import ConfigError, parse_config
from pipeline.inputs.images import default_uri_prefixes
from pipeline.job.run import run_job
from pipeline.storage import Location, uri_allowed

HUB_REPO = "samhq-test/vit-small"


def _masks(row):
    return [mask_utils.decode({"size": m["size"], "counts": m["counts"].encode()}).astype(bool) for m in row["masks"]]


@pytest.mark.cluster  # run_job starts a local Ray cluster
def test_a_hub_model_id_as_the_checkpoint_of_a_run(vit_pair, tmp_path):
    """`model.checkpoint: org/name` with HF_HOME and HF_HUB_OFFLINE=1 in the environment of
    `python -m pipeline run`: the checks read the model's config from the hub cache, the
    model actors (started by the job's local Ray, which they inherit the environment from)
    load it from there, and the masks are samhq_core's for that model."""
    hf_home = tmp_path / "hf_home"
    commit = add_model(str(hf_home / "hub"), HUB_REPO, vit_pair.ours)
    rows = sample_rows(num_good=3)[:3]
    (tmp_path / "input").mkdir()
    write_rows(str(tmp_path / "input" / "part-0.parquet"), rows)
    config = {"input": {"path": str(tmp_path / "input"), "id_column": "id", "image_column": "image",
                        "boxes_column": "boxes"},
              "output": {"path": str(tmp_path / "output")},
              "model": {"checkpoint": HUB_REPO},
              "compute": {"num_actors": 1, "batch_size": 2, "decode_batch_size": 2, "torch_threads": 1}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ROOT}
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "RAY_ADDRESS"):
        env.pop(name, None)
    # From a directory without a samhq-test/ folder: the id can only come from the hub cache.
    proc = subprocess.run([sys.executable, "-m", "pipeline", "run", "--config", str(tmp_path / "job.yaml"),
                           "--progress-interval", "600"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "SAM-HQ at 256 px" in proc.stdout
    description = json.loads((tmp_path / "output" / "_samhq_job.json").read_text())
    # Kept as an id, not made a local path, and pinned to the commit main pointed to, which
    # every model actor then loads.
    assert description["config"]["model"]["checkpoint"] == f"{HUB_REPO}@{commit}"
    out = {r["id"]: r for r in pq.read_table(tmp_path / "output").to_pylist()}
    for row in rows:
        got = out[row["id"]]
        assert got["error"] is None
        expected, scores, _ = samhq_core_masks(vit_pair.ours, row["image"], row["boxes"])
        for mask, reference in zip(_masks(got), expected, strict=True):
            assert (mask == reference).mean() > 0.999
        np.testing.assert_allclose(got["iou_scores"], scores, atol=1e-3)


def test_datasets_image_columns_and_load_dataset_on_the_output(ray_cluster, vit_pair, tmp_path, tmp_path_factory):
    """A Parquet written by `datasets` with an Image column (rows with bytes, rows with only a
    path, a row with neither, a null row, a path outside the allowed prefixes) gives, row for
    row, the results of the same images as plain bytes; the output then loads with
    `datasets.load_dataset("parquet", data_files=".../*.parquet")`, the job's other files
    (_SUCCESS, _samhq_job.json, a kept _checkpoint/) left out by that glob."""
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "outside.png"
    sizes = [(100, 140), (160, 120), (90, 200), (130, 130)]
    encoded = [png_bytes(h, w, seed) for seed, (h, w) in enumerate(sizes)]
    for i in (2, 3):
        (images_dir / f"{i}.png").write_bytes(encoded[i])
    elsewhere.write_bytes(encoded[0])
    boxes = [[[5.0, 8.0, w * 0.6, h * 0.7], [w * 0.3, h * 0.2, w - 1.0, h - 1.0]] for h, w in sizes]
    ids = ["bytes0", "bytes1", "path2", "path3", "neither", "null", "outside"]
    structs = [{"bytes": encoded[0], "path": "0.png"}, {"bytes": encoded[1], "path": None},
               {"bytes": None, "path": str(images_dir / "2.png")}, {"bytes": None, "path": str(images_dir / "3.png")},
               {"bytes": None, "path": None}, None, {"bytes": None, "path": str(elsewhere)}]
    row_boxes = boxes + [boxes[0]] * 3
    (tmp_path / "hf_input").mkdir()
    dataset = datasets.Dataset.from_dict({"id": ids, "image": structs, "boxes": row_boxes})
    dataset.cast_column("image", datasets.Image()).to_parquet(str(tmp_path / "hf_input" / "data.parquet"))
    written = pq.read_schema(tmp_path / "hf_input" / "data.parquet")
    assert str(written.field("image").type) == "struct<bytes: binary, path: string>"
    assert b"huggingface" in written.metadata  # datasets' own features, as datasets writes them
    (tmp_path / "plain_input").mkdir()
    pq.write_table(pa.table({"id": ids, "image": encoded + [None] * 3, "boxes": row_boxes}),
                   tmp_path / "plain_input" / "data.parquet")

    def run(name, **output):
        config = parse_config({
            "input": {"path": str(tmp_path / f"{name}_input"), "id_column": "id", "image_column": "image",
                      "boxes_column": "boxes"},
            "output": {"path": str(tmp_path / f"{name}_output"), **output},
            "model": {"checkpoint": vit_pair.pth},
            "compute": {"num_actors": 1, "batch_size": 2, "decode_batch_size": 2, "torch_threads": 2}})
        summary = run_job(config)
        assert summary.rows_in == summary.rows_out == len(ids) and summary.closing.passed
        return {r["id"]: r for r in pq.read_table(tmp_path / f"{name}_output").to_pylist()}

    from_datasets, from_bytes = run("hf", keep_checkpoint=True), run("plain")
    for row_id in ids[:4]:
        assert from_datasets[row_id]["error"] is None, from_datasets[row_id]
        for column in ("image_size", "masks", "iou_scores", "mask_areas", "mask_bboxes", "box_errors"):
            assert from_datasets[row_id][column] == from_bytes[row_id][column], (row_id, column)
    assert from_datasets["neither"]["error"] == "image_read: ValueError: image has neither bytes nor a path"
    assert from_datasets["null"]["error"] == "image_read: ValueError: image is null"
    assert from_datasets["outside"]["error"].startswith(f"image_read: PermissionError: {elsewhere} lies outside "
                                                        "input.allowed_uri_prefixes")
    expected, _, _ = samhq_core_masks(vit_pair.ours, encoded[2], boxes[2])
    assert all((m == e).mean() > 0.999 for m, e in zip(_masks(from_datasets["path2"]), expected, strict=True))

    output = tmp_path / "hf_output"
    assert {"_SUCCESS", "_samhq_job.json", "_checkpoint"} <= set(os.listdir(output))
    loaded = datasets.load_dataset("parquet", data_files=str(output / "*.parquet"), split="train",
                                   cache_dir=str(tmp_path / "datasets_cache"))
    assert sorted(loaded["id"]) == sorted(ids)
    by_id = {row["id"]: row for row in loaded}
    for row_id in ids:
        assert by_id[row_id]["masks"] == from_datasets[row_id]["masks"]
        assert by_id[row_id]["error"] == from_datasets[row_id]["error"]


def test_the_column_checks_take_a_datasets_image_struct_and_name_what_else_they_take(tmp_path, vit_pair):
    from pipeline.job.plan import plan_job

    (tmp_path / "input").mkdir()
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(pa.table({"id": ["a"], "image": pa.array([{"bytes": png_bytes(64, 64, 0), "path": None}], image),
                             "boxes": [[[1.0, 1.0, 9.0, 9.0]]]}), tmp_path / "input" / "a.parquet")
    config = {"input": {"path": str(tmp_path / "input"), "id_column": "id", "image_column": "image",
                        "boxes_column": "boxes"},
              "output": {"path": str(tmp_path / "output")}, "model": {"checkpoint": vit_pair.pth}}
    plan = plan_job(parse_config(config))
    # The struct's paths are read as image URIs, under the same default prefixes as image_uri_column's.
    assert plan.config.input.allowed_uri_prefixes == [str(tmp_path)]
    other = pa.struct([("data", pa.binary()), ("path", pa.string())])
    pq.write_table(pa.table({"id": ["a"], "image": pa.array([{"data": b"x", "path": None}], other),
                             "boxes": [[[1.0, 1.0, 9.0, 9.0]]]}), tmp_path / "input" / "a.parquet")
    with pytest.raises(ConfigError) as err:
        plan_job(parse_config(config))
    assert err.value.problems == [
        f"input.image_column: column 'image' has type struct<data: binary, path: string> in "
        f"{tmp_path / 'input' / 'a.parquet'}: encoded image bytes (binary) or a datasets Image column "
        "(struct<bytes: binary, path: string>) are expected"]


def test_hub_ids_are_kept_and_local_paths_resolved(tmp_path, monkeypatch):
    """Offline, as the tests are: the ids are not in the cache, so they stay as given (online,
    the lookup of these made-up repositories would wait on the network)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert resolve_checkpoint("org/name", "model.checkpoint", str(tmp_path)) == ("org/name", [])
    assert resolve_checkpoint("org/name@v2", "model.checkpoint", None) == ("org/name@v2", [])
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert resolve_checkpoint("org/name", "model.checkpoint", str(tmp_path)) == (str(tmp_path / "org" / "name"), [])
    assert resolve_checkpoint("./org/x", "model.checkpoint", str(tmp_path)) == (str(tmp_path / "org" / "x"), [])


def test_hub_tokens_are_refused_in_the_config(tmp_path):
    with pytest.raises(ConfigError) as err:
        parse_config({"input": {"path": "x", "id_column": "id", "image_column": "image", "boxes_column": "boxes"},
                      "output": {"path": "y"}, "model": {"checkpoint": "org/name", "token": "hf_secret"}})
    assert err.value.problems == ["model.token: credentials must not be in the config; set HF_TOKEN in the "
                                  "environment or run `hf auth login` (a Hugging Face Hub token)"]
    assert "hf_secret" not in str(err.value)


def test_hf_input_paths_are_accepted_and_image_uris_kept_to_their_repository():
    """hf:// (huggingface_hub's HfFileSystem) passes the config and the storage layer; its
    default allowed_uri_prefixes are the input's own Hub repository, not all of the Hub.
    Reading from the Hub needs the network, which these tests do not have."""
    url = "hf://datasets/org/name@main/data/train-*.parquet"
    config = parse_config({"input": {"path": url, "id_column": "id", "image_uri_column": "file",
                                     "boxes_column": "boxes"},
                           "output": {"path": "/tmp/out"}, "model": {"checkpoint": "org/model"}})
    assert config.input.path == url
    location = Location(url)
    fs, path = location.fs, location.path
    assert type(fs).__name__ == "HfFileSystem" and path == "datasets/org/name@main/data/train-*.parquet"
    (prefix,) = default_uri_prefixes(url)
    assert prefix == "hf://datasets/org/name@main/"
    assert uri_allowed("hf://datasets/org/name@main/images/1.png", [prefix])
    assert not uri_allowed("hf://datasets/org/other/images/1.png", [prefix])
    assert default_uri_prefixes("hf://org/model/images") == ["hf://org/model/"]
    assert default_uri_prefixes("s3://bucket/data/") == ["s3://bucket/"]
