"""`python -m pipeline finetune`: HQ-only fine-tuning from a Parquet of images, boxes and
masks on S3 (moto), with bad rows counted, a before/after report and a checkpoint the
pipeline loads."""

import json
import os

import pytest
import torch
import yaml
from helpers.pipeline_data import labelled_parquet

from pipeline.cli import main
from pipeline.config import ConfigError, FinetuneConfig
from pipeline.finetune.data import in_validation
from samhq_core import SamHQModel
from samhq_core.training.demo_model import demo_config
from samhq_core.training.recipe import HQ_PARAMETER_PREFIXES


def test_config_problems_are_collected():
    with pytest.raises(ConfigError) as info:
        FinetuneConfig.parse({"data": {"train": "x", "id_column": "id", "boxes_column": "b", "box_format": "yxyx"},
                               "model": {"checkpoint": "c"}, "training": {"steps": 0, "lr": "fast"}})
    text = str(info.value)
    for problem in ("image_column", "box_format", "missing required key 'output'", "training.steps",
                    "training.lr: expected a number"):
        assert problem in text


def test_validation_split_is_stable():
    ids = [f"img_{i}" for i in range(2000)]
    held_out = [i for i in ids if in_validation(i, 0.1)]
    assert 150 < len(held_out) < 250
    assert held_out == [i for i in ids if in_validation(i, 0.1)]


def test_finetune_trains_only_hq_parameters_from_s3(s3_endpoint, tmp_path, capsys):
    import boto3

    path, rows = labelled_parquet(tmp_path)
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="labels")
    client.upload_file(path, "labels", "train/part-0.parquet")
    torch.manual_seed(0)
    start = str(tmp_path / "start")
    SamHQModel(demo_config()).save_pretrained(start)
    output = str(tmp_path / "tuned")
    config = {
        "data": {"train": "s3://labels/train/", "id_column": "image_id", "image_column": "image",
                 "boxes_column": "boxes", "validation_fraction": 0.3, "shuffle_buffer": 4},
        "model": {"checkpoint": start, "output": output},
        "training": {"steps": 4, "batch_size": 2, "warmup_steps": 1, "log_every": 2},
        "storage": {"endpoint_url": s3_endpoint},
    }
    config_path = tmp_path / "finetune.yaml"
    config_path.write_text(yaml.safe_dump(config))
    assert main(["finetune", "--config", str(config_path), "--set", "training.lr=0.002"]) == 0
    printed = capsys.readouterr().out
    assert "[hq] step 4/4" in printed

    before, after = SamHQModel.from_pretrained(start).state_dict(), SamHQModel.from_pretrained(output).state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(HQ_PARAMETER_PREFIXES) for k in changed)
    assert any(k.startswith("mask_decoder.compress_vit_feat.") for k in changed)

    report = open(os.path.join(output, "finetune_report.md")).read()
    assert report in printed
    for name in ("hq_only", "sam_plus_hq", "sam_only"):
        line = next(line for line in report.splitlines() if line.startswith(f"| {name} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        validation_boxes = sum(len(r["boxes"]) for r in rows[:-3] if in_validation(r["image_id"], 0.3))
        assert int(cells[1]) == validation_boxes
        if name == "sam_only":  # frozen: the baseline does not move
            assert cells[2] == cells[3] and cells[4] == cells[5]
        else:
            assert (cells[2], cells[4]) != (cells[3], cells[5])
    # The bad rows are counted, by reason (each pass over the training rows counts them again).
    assert not in_validation("bad_rle", 0.3)
    for reason in ("row: image_decode", "row: masks not aligned with boxes", "box: mask not a valid COCO RLE"):
        assert reason in report

    # Few validation boxes are named as such, in the log and the report.
    assert f"warning: only {validation_boxes} validation boxes (fewer than 20)" in printed
    assert f"**Warning**: only {validation_boxes} validation boxes" in report
    # The output is not replaced unless asked, and then only the run's own files.
    assert main(["finetune", "--config", str(config_path)]) == 2
    assert (f"error: model.output: {output} holds an earlier fine-tuning run's checkpoint (3 entries: config.json, "
            "finetune_report.md, model.safetensors); choose a new directory, or add --replace-output to replace those "
            "files") in capsys.readouterr().err
    assert main(["finetune", "--config", str(config_path), "--replace-output"]) == 0
    assert sorted(os.listdir(output)) == ["config.json", "finetune_report.md", "model.safetensors"]


def test_a_worse_trained_output_is_said_to_be_worse():
    from pipeline.finetune.report import finetune_warnings

    scores = {"hq_only": {"miou": 0.834, "mbiou": 0.7}, "sam_plus_hq": {"miou": 0.8, "mbiou": 0.6},
              "sam_only": {"miou": 0.7, "mbiou": 0.5}}
    worse = {**scores, "hq_only": {"miou": 0.814, "mbiou": 0.69}}
    assert finetune_warnings(scores, scores, 40) == []
    (warning,) = finetune_warnings(scores, worse, 40)
    assert warning.startswith("the trained hq_only output got worse on the validation split (mIoU 0.8340 -> 0.8140, "
                              "mBIoU 0.7000 -> 0.6900)")
    assert len(finetune_warnings(scores, worse, 19)) == 2


def test_an_unfinished_ray_train_run_is_resumed_only_with_its_own_settings(tmp_path, capsys):
    """model.output holding an unfinished Ray Train run's training checkpoints (_training/):
    the same settings resume it, other settings or the one-process path are refused, naming
    why, --replace-output starts over, and anything else there is never touched."""
    from pipeline.finetune.plan import RUN_SETTINGS_FILE, TRAINING_DIR, plan_finetune, run_settings

    path, _ = labelled_parquet(tmp_path)
    output = tmp_path / "tuned"
    config = FinetuneConfig.parse({
        "data": {"train": path, "id_column": "image_id", "image_column": "image", "boxes_column": "boxes",
                 "validation_fraction": 0.3, "shuffle_buffer": 4},
        "model": {"checkpoint": os.path.join(os.path.dirname(__file__), "..", "..", "models", "samhq-demo-synthetic"),
                  "output": str(output)},
        "training": {"workers": 2, "steps": 1, "batch_size": 2, "warmup_steps": 1}})
    (output / TRAINING_DIR / "ray_train").mkdir(parents=True)
    (output / TRAINING_DIR / RUN_SETTINGS_FILE).write_text(json.dumps(run_settings(plan_finetune(
        config.model_copy(update={"model": config.model.model_copy(update={"output": str(tmp_path / "new")})})).config)))

    plan = plan_finetune(config)
    assert plan.resume and not plan.restart
    assert plan.notes == [f"resume: {output} holds an unfinished run of these settings: it goes on from its latest "
                          f"training checkpoint in {output / TRAINING_DIR} (--replace-output starts over)"]
    other = config.model_copy(update={"training": config.training.model_copy(update={"lr": 0.01, "trainable": "decoder"})})
    with pytest.raises(ConfigError) as info:
        plan_finetune(other)
    assert info.value.problems == [f"model.output: {output} holds an unfinished run of other settings "
                                   "(training.trainable: 'hq' there, 'decoder' here; training.lr: 0.001 there, 0.01 here)"
                                   "; give the same ones to resume it, or add --replace-output to start over"]
    here = config.model_copy(update={"training": config.training.model_copy(update={"workers": 1})})
    with pytest.raises(ConfigError) as info:
        plan_finetune(here)
    assert info.value.problems == [f"model.output: {output} holds an unfinished Ray Train run (_training/); set "
                                   "training.workers to 2 or more to resume it, or add --replace-output to start over"]
    replaced = plan_finetune(here, replace_output=True)
    assert replaced.restart and not replaced.resume

    # --replace-output in this process: the training checkpoints go, the result comes.
    config_path = tmp_path / "finetune.yaml"
    config_path.write_text(yaml.safe_dump(here.to_dict()))
    assert main(["finetune", "--config", str(config_path), "--replace-output"]) == 0
    assert "--replace-output: the training checkpoints of the earlier run" in capsys.readouterr().out
    assert sorted(os.listdir(output)) == ["config.json", "finetune_report.md", "model.safetensors"]

    (output / "notes.txt").write_text("mine")
    (output / TRAINING_DIR).mkdir()
    with pytest.raises(ConfigError, match="is not empty and not an earlier fine-tuning run's output"):
        plan_finetune(config, replace_output=True)
