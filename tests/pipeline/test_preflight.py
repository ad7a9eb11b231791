"""`validate` and `run` refuse, before Ray starts and before anything is written or deleted,
every job they would fail on: each case below gives `error:` lines naming the problem, and
exit status 2."""

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import torch
import yaml
from helpers.paths import ROOT
from helpers.pipeline_data import sample_rows, write_rows
from PIL import Image

from pipeline.cli import main
from samhq_core import MaskSource


@pytest.fixture
def job(tmp_path, vit_pair):
    """A valid job on local files; `job.run(*args)` runs the CLI in this process and returns
    (exit status, stderr lines)."""
    return Job(tmp_path, vit_pair.pth)


class Job:
    def __init__(self, tmp_path, checkpoint):
        self.tmp = tmp_path
        self.input = tmp_path / "input"
        self.input.mkdir()
        self.rows = sample_rows(num_good=2)[:2]
        write_rows(str(self.input / "part-0.parquet"), self.rows)
        self.config = {
            "input": {"path": str(self.input), "id_column": "id", "image_column": "image", "boxes_column": "boxes",
                      "passthrough_columns": ["source"], "category_column": "labels"},
            "output": {"path": str(tmp_path / "output")},
            "model": {"checkpoint": checkpoint},
            "compute": {"num_actors": 1},
        }
        self.path = tmp_path / "job.yaml"

    def run(self, *args, command="validate", capsys=None):
        self.path.write_text(yaml.safe_dump(self.config))
        status = main([command, "--config", str(self.path), *args])
        return status

    def errors(self, capsys, *args, command="validate"):
        status = self.run(*args, command=command)
        err = capsys.readouterr().err
        assert status == 2, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines and all(line.startswith("error: ") for line in lines), err
        return [line[len("error: "):] for line in lines]


def test_a_valid_job_passes(job, capsys):
    assert job.run() == 0
    out = capsys.readouterr().out
    assert "config OK" in out and "2 rows in 1 file," in out and "ViT 64x4 SAM-HQ at 256 px" in out


def test_the_mask_source_follows_the_checkpoint_unless_the_config_names_one(job, capsys):
    """The demo model's config.json recommends its HQ token alone; a checkpoint without a
    recommendation gets the official output; a configured source wins over both."""
    from pipeline.config import load_config
    from pipeline.demo.dataset import DEMO_CHECKPOINT
    from pipeline.job.plan import plan_job
    from pipeline.output import JobDescription

    assert job.run() == 0
    assert "model.mask_source: sam_plus_hq, the official output" in capsys.readouterr().out
    job.config["model"]["checkpoint"] = DEMO_CHECKPOINT
    assert job.run() == 0
    assert "model.mask_source: hq_only, as the checkpoint's config.json recommends" in capsys.readouterr().out
    assert plan_job(load_config(str(job.path))).config.model.mask_source == MaskSource.HQ_ONLY
    job.config["model"]["mask_source"] = "sam_only"
    assert job.run() == 0
    assert "model.mask_source" not in capsys.readouterr().out
    assert plan_job(load_config(str(job.path))).config.model.mask_source == MaskSource.SAM_ONLY
    # A run that left the source to the checkpoint is resumed by the same config, unchanged.
    del job.config["model"]["mask_source"]
    job.run()
    plan = plan_job(load_config(str(job.path)))
    plan.output.write_description(JobDescription(plan.config, plan.scan.num_rows))
    job.config["output"]["mode"] = "resume"
    assert job.run() == 0, capsys.readouterr().err


@pytest.mark.parametrize("key, value", [
    ("boxes_column", "bboxes"), ("image_column", "picture"), ("id_column", "image_id"), ("category_column", "cats"),
])
def test_a_column_that_is_not_there(job, capsys, key, value):
    job.config["input"][key] = value
    (problem,) = job.errors(capsys)
    assert problem == (f"input.{key}: no column {value!r} in {job.input / 'part-0.parquet'}; columns present: "
                       "id, image, boxes, labels, source")


def test_a_passthrough_column_that_is_not_there(job, capsys):
    job.config["input"]["passthrough_columns"] = ["source", "width"]
    (problem,) = job.errors(capsys)
    assert problem.startswith("input.passthrough_columns: no column 'width' in ")


def test_columns_of_the_wrong_type(job, capsys):
    table = pa.table({"id": ["a"], "image": ["s3://bucket/a.png"], "boxes": [[["1", "2", "3", "4"]]],
                      "labels": ["a"], "source": ["x"]})
    os.remove(job.input / "part-0.parquet")
    pq.write_table(table, job.input / "part-0.parquet")
    problems = job.errors(capsys)
    where = job.input / "part-0.parquet"
    assert problems == [
        f"input.boxes_column: column 'boxes' has type list<list<string>> in {where}: box values of type string; they "
        "must be numbers (integers or floats)",
        f"input.image_column: column 'image' has type string in {where}: it holds strings: if they are image paths or "
        "URIs, set image_uri_column instead of image_column",
        f"input.category_column: column 'labels' has type string in {where}: per row, a list of categories (names or "
        "integer ids, one per box) is expected"]


def test_files_that_differ(job, capsys):
    rows = job.rows
    pq.write_table(pa.table({"id": [7], "image": [rows[0]["image"]], "boxes": [rows[0]["boxes"]]}),
                   job.input / "part-1.parquet")
    problems = job.errors(capsys)
    missing = [p for p in problems if p.startswith("input.category_column: no column 'labels' in 1 of 2 files")]
    assert len(missing) == 1 and "columns present: id, image, boxes" in missing[0]
    assert any(p.startswith("input.id_column: column 'id' has different types across files (string in 1 of 2 "
                            "files") and "int64 in 1 of 2 files" in p for p in problems)


def test_a_corrupt_input_file_is_named(job, capsys):
    (job.input / "part-1.parquet").write_bytes(b"PAR1 but not really")
    (problem,) = job.errors(capsys)
    assert problem.startswith(f"input.path: {job.input / 'part-1.parquet'} is not a readable Parquet file")


def test_a_checkpoint_that_is_not_a_model(job, capsys, tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "model.pth", format="JPEG")
    job.config["model"]["checkpoint"] = str(tmp_path / "model.pth")
    (problem,) = job.errors(capsys)
    assert problem.startswith(f"model.checkpoint: {tmp_path / 'model.pth'} is not a PyTorch (.pth) or safetensors "
                              "checkpoint: it starts with bytes ff d8 ff") and problem.endswith("like a JPEG image")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    job.config["model"]["checkpoint"] = str(tmp_path / "other.pth")
    (problem,) = job.errors(capsys)
    assert "does not look like a SAM / SAM-HQ checkpoint" in problem and "fc.weight" in problem


def test_an_output_that_holds_data(job, capsys):
    output = job.tmp / "output"
    output.mkdir()
    (output / "results.csv").write_text("someone's data")
    (problem,) = job.errors(capsys)
    assert problem == (f"output.path: {output} is not empty (results.csv); set output.mode: resume to continue an "
                       "interrupted run there, output.mode: overwrite to replace its results, or choose another path")
    for mode in ("overwrite", "resume"):
        job.config["output"]["mode"] = mode
        (problem,) = job.errors(capsys, command="run")
        assert problem.startswith(f"output.path: {output} holds 1 entries this pipeline did not write (results.csv); "
                                  f"output.mode: {mode} only works on the pipeline's own files")
    assert (output / "results.csv").read_text() == "someone's data"
    assert not ray.is_initialized()  # run refused before starting Ray


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_an_output_where_the_input_is(job, capsys, where):
    output = {"same": job.input, "inside": job.input / "results", "around": job.tmp}[where]
    job.config["output"].update(path=str(output), mode="overwrite")
    (problem,) = job.errors(capsys, command="run")
    relation = {"same": "is", "inside": "is inside", "around": "contains"}[where]
    assert problem.startswith(f"output.path: {output} {relation} input.path {job.input}; ")
    assert sorted(os.listdir(job.input)) == ["part-0.parquet"]  # nothing deleted, nothing written


def test_credentials_in_the_endpoint_url(job, capsys):
    job.config["storage"] = {"endpoint_url": "http://admin:hunter2@127.0.0.1:9000"}
    problems = job.errors(capsys)
    assert any(p.startswith("storage.endpoint_url: holds credentials (user:password@...)") for p in problems)
    assert "hunter2" not in "\n".join(problems)


def test_more_actors_than_the_cluster_can_place(job, capsys):
    import ray._private.utils

    cpus = ray._private.utils.get_num_cpus()
    (problem,) = job.errors(capsys, "--set", f"compute.num_actors={cpus}")
    assert problem.startswith(f"compute: {cpus} model actors x 1 CPUs = {cpus} CPUs, plus 1 for the read, decode "
                              f"and write tasks, is more than the cluster's {cpus} CPUs, 0 GPUs")
    assert "(a local Ray cluster on this machine)" in problem
    (problem,) = job.errors(capsys, "--set", "compute.num_gpus_per_actor=1")
    assert problem.startswith("compute: 1 model actors x 1 GPUs need 1 GPUs; the cluster has") or torch.cuda.is_available()


def test_missing_and_malformed_config_files(tmp_path, capsys):
    assert main(["validate", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err == f"error: config file not found: {tmp_path / 'nope.yaml'}\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text("input:\n  path: x\n  id_column: [unclosed\noutput: {}\n")
    assert main(["run", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: not valid YAML: line 4, column 7: ") and err.count("\n") == 1
    assert main(["validate", "--config", str(bad.with_name("list.yaml"))]) == 2
    capsys.readouterr()
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    assert main(["validate", "--config", str(tmp_path / "list.yaml")]) == 2
    assert "the top level must be a mapping of sections, got list" in capsys.readouterr().err


def test_relative_paths(job, capsys, monkeypatch, tmp_path):
    job.config["input"]["path"] = "input"
    job.config["output"]["path"] = "output"
    monkeypatch.chdir(tmp_path)
    assert job.run() == 0
    assert f"output {tmp_path / 'output'}" in capsys.readouterr().out
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", '{"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip"}}')
    problems = job.errors(capsys)
    assert [p.split(":")[0] for p in problems] == ["input.path", "output.path"]
    assert "would resolve inside Ray's temporary copy of the working directory under `ray job submit`" in problems[0]
    assert job.run("--relative-to", str(tmp_path)) == 0
    capsys.readouterr()


def test_finetune_config_problems_name_its_keys(tmp_path, capsys, vit_pair):
    config = {"data": {"train": str(tmp_path / "labelled"), "id_column": "id", "image_column": "image",
                       "boxes_column": "boxes"},
              "model": {"checkpoint": vit_pair.pth, "output": vit_pair.pth}}
    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["finetune", "--config", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: data.train: not found: {tmp_path / 'labelled'}",
                   f"error: model.output: {vit_pair.pth} is model.checkpoint; the fine-tuned model would replace the "
                   "one it starts from: write it elsewhere"]
    (tmp_path / "labelled").mkdir()
    write_rows(str(tmp_path / "labelled" / "a.parquet"), sample_rows(num_good=1)[:1])
    config["model"]["output"] = str(tmp_path / "tuned")
    path.write_text(yaml.safe_dump(config))
    assert main(["finetune", "--config", str(path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: data.masks_column: no column 'masks' in ")


@pytest.mark.slow  # several CLI processes
def test_shipped_examples_fail_with_one_clear_line_each_without_their_data(tmp_path):
    """Run from an empty directory, the examples name what is missing (the demo writes it)."""
    for example, command in (("local_example.yaml", "validate"), ("finetune_example.yaml", "finetune")):
        proc = subprocess.run([sys.executable, "-m", "pipeline", command, "--config",
                               os.path.join(ROOT, "configs", example)], cwd=tmp_path, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)
        lines = proc.stderr.splitlines()
        assert proc.returncode == 2 and lines and all(line.startswith("error: ") for line in lines), proc.stderr
        assert any("not found" in line for line in lines), proc.stderr
        assert "Traceback" not in proc.stderr
        if command == "validate":
            (missing,) = [line for line in lines if line.startswith("error: input.path: not found")]
            assert missing.endswith(f"(the relative path 'demo_output/input/', resolved against the working directory "
                                    f"{tmp_path}); the example configs read the data `python -m pipeline demo` writes "
                                    "into demo_output/: run it first"), missing


def test_categories_not_one_per_box(job, capsys):
    """Categories that are not one per box: in every sampled row, the wrong column (refused);
    in some, those rows' errors (a warning)."""
    for row in job.rows:
        row["labels"] = ["a"] * (len(row["boxes"]) + 1)
    os.remove(job.input / "part-0.parquet")
    write_rows(str(job.input / "part-0.parquet"), job.rows)
    (problem,) = job.errors(capsys)
    assert problem == (f"2 of the first 2 rows of {job.input / 'part-0.parquet'}: input.category_column 'labels' has "
                       "2 entries for 1 boxes: give one per box (null for none); is 'labels' the column of the boxes' "
                       "categories?")
    job.rows[0]["labels"] = ["a"]
    os.remove(job.input / "part-0.parquet")
    write_rows(str(job.input / "part-0.parquet"), job.rows)
    assert job.run() == 0
    assert ("warning: 1 of the first 2 rows of " in capsys.readouterr().err)


def test_boxes_that_look_like_another_format_refuse_the_job_unless_forced(job, capsys):
    """xywh boxes under box_format xyxy (most of the sampled boxes inverted), or normalised
    ones: exit 2 before any work, unless --force-box-format says the boxes are right; a few
    inverted boxes only warn."""
    rng = np.random.default_rng(0)

    def write(boxes):
        os.remove(job.input / "part-0.parquet")
        write_rows(str(job.input / "part-0.parquet"), [{**job.rows[0], "id": f"r{i}", "boxes": [box], "labels": ["a"]}
                                                       for i, box in enumerate(boxes)])

    xywh = [[*rng.uniform(50, 200, 2), 40.0, 30.0] for _ in range(8)]  # detector boxes in a 300 x 200 image
    write(xywh)
    (problem,) = job.errors(capsys)
    assert problem == (f"input.box_format is xyxy, but 8 of 8 boxes in the first rows of {job.input / 'part-0.parquet'} "
                       "have x2 < x1 or y2 < y1, as [x, y, width, height] boxes read as xyxy do; if the boxes are "
                       "xywh, set input.box_format: xywh; if they are right as they are, run with --force-box-format")
    assert job.run("--force-box-format") == 0
    captured = capsys.readouterr()
    assert "warning: input.box_format is xyxy, but 8 of 8 boxes" in captured.err and "config OK" in captured.out

    write([[0.1, 0.2, 0.5, 0.6]] * 4)  # normalised
    (problem,) = job.errors(capsys)
    assert problem.startswith("input.boxes_column: every coordinate of 4 boxes in the first rows of ")
    assert problem.endswith("run with --force-box-format")

    write(xywh[:3] + [[10.0, 10.0, 90.0, 80.0]] * 5)  # 3 of 8 inverted: suspicious, not refused
    assert job.run() == 0
    assert "warning: input.box_format is xyxy, but 3 of 8 boxes" in capsys.readouterr().err


def test_footers_from_an_object_store(s3_endpoint, tmp_path):
    """Over S3, every file's last bytes are fetched together; a footer larger than those
    (a file of many columns) and a corrupt file are read again alone, and the scan agrees
    with what the files hold."""
    import s3fs

    from pipeline.checks.input_files import scan_input
    from pipeline.config import ConfigError, StorageConfig
    from pipeline.storage import Location

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    fs.mkdir("scan")
    small = pa.table({"id": ["a", "b", "c"], "boxes": [[[1.0, 2.0, 3.0, 4.0]]] * 3})
    wide = pa.table({"id": ["d"], "boxes": [[[1.0, 2.0, 3.0, 4.0]]],
                     **{f"extra_{i:04}_{'x' * 40}": [i] for i in range(1500)}})
    for name, table in (("small.parquet", small), ("wide.parquet", wide)):
        with fs.open(f"scan/in/{name}", "wb") as f:
            pq.write_table(table, f)
    storage = StorageConfig(endpoint_url=s3_endpoint)
    footer = int.from_bytes(fs.cat_file("scan/in/wide.parquet", start=-8)[:4], "little")
    assert footer > 64 << 10  # the wide file's footer is not in the bytes fetched first
    scan = scan_input(Location("s3://scan/in/", storage), "input.path", ["id", "boxes"])
    assert {(f.url.rsplit("/", 1)[1], f.num_rows, len(f.schema)) for f in scan.files} == {
        ("small.parquet", 3, 2), ("wide.parquet", 1, 1502)}
    assert all(f.read_bytes > 0 for f in scan.files)
    fs.pipe_file("scan/in/zz-corrupt.parquet", b"PAR1 and then nothing")
    with pytest.raises(ConfigError, match=r"input.path: s3://scan/in/zz-corrupt.parquet is not a readable Parquet "
                                          r"file"):
        scan_input(Location("s3://scan/in/", storage), "input.path", ["id", "boxes"])


def test_an_object_store_without_credentials_says_how_to_give_them(s3_endpoint, vit_pair, tmp_path):
    config = {"input": {"path": "s3://no-credentials/in/", "id_column": "id", "image_column": "image",
                        "boxes_column": "boxes"},
              "output": {"path": str(tmp_path / "out")}, "model": {"checkpoint": vit_pair.pth},
              "storage": {"endpoint_url": s3_endpoint}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "pipeline", "validate", "--config", str(path)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error: input.path")]
    assert "cannot list s3://no-credentials/in/: NoCredentialsError: Unable to locate credentials; give the object " \
           "store's credentials as AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in line, line
    assert line.endswith("or set storage.anonymous: true for a public bucket"), line


def test_an_output_bucket_that_does_not_exist_is_refused(s3_endpoint, vit_pair, tmp_path, capsys):
    """A write would create it silently (on a store that lets it), somewhere nobody looks."""
    import s3fs

    job = Job(tmp_path, vit_pair.pth)
    job.config["output"]["path"] = "s3://no-such-bucket-here/out/"
    job.config["storage"] = {"endpoint_url": s3_endpoint}
    (problem,) = job.errors(capsys)
    assert problem == ("output.path: the bucket s3://no-such-bucket-here does not exist; create it first (the job "
                       "never creates buckets), or check the name")
    assert not s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}).exists("no-such-bucket-here")
