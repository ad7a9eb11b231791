"""Job config validation and the CLI's validate command."""

import glob
import os

import pytest
import yaml
from helpers.paths import ROOT

from pipeline.config import ConfigError, FinetuneConfig, load_config, parse_config, read_yaml
from samhq_core import MaskSource


def minimal():
    return {"input": {"path": "in", "id_column": "id", "image_column": "img", "boxes_column": "boxes"},
            "output": {"path": "out"}, "model": {"checkpoint": "ckpt.pth"}}


def test_every_problem_is_reported_at_once():
    data = minimal()
    data["input"].update(box_format="yxyx", bogus=1, image_uri_column="uri", passthrough_columns=["a", 2])
    del data["input"]["id_column"]
    data["model"].update(checkpoint=7, dtype="fp8", mask_source="hq")
    data["compute"] = {"num_actors": 0, "batch_size": "4"}
    data["storage"] = {"aws_secret_access_key": "hunter2"}
    data["extra"] = {}
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    problems = "\n".join(err.value.problems)
    for expected in ["unknown section 'extra'", "input: unknown key 'bogus'", "missing required key 'id_column'",
                     "input.passthrough_columns[1]: expected a string, got 2", "model.checkpoint: expected a string",
                     "exactly one of image_column", "input.box_format", "model.dtype", "compute.num_actors: must be >= 1",
                     "compute.batch_size: expected an integer", "credentials must not be in the config",
                     "model.mask_source: must be one of 'sam_plus_hq', 'hq_only' or 'sam_only', got 'hq'"]:
        assert expected in problems
    assert "hunter2" not in str(err.value)
    assert len(err.value.problems) == 12  # one per problem, nothing else


def test_missing_sections_and_defaults():
    with pytest.raises(ConfigError, match="missing section 'model'"):
        parse_config({k: v for k, v in minimal().items() if k != "model"})
    config = parse_config(minimal())
    assert config.input.box_format == "xyxy" and config.model.multimask_output is False
    assert config.compute.num_gpus_per_actor is None and config.storage.endpoint_url is None


def test_overrides(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(minimal()))
    config = load_config(str(path), ["compute.num_actors=3", "model.mask_source=hq_only", "storage.region=eu-west-1"])
    assert (config.compute.num_actors, config.model.mask_source, config.storage.region) == (3, MaskSource.HQ_ONLY,
                                                                                          "eu-west-1")
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        load_config(str(path), ["compute.num_actors"])


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml"))))
def test_shipped_configs_are_valid(path):
    if os.path.basename(path).startswith("finetune"):
        FinetuneConfig.parse(read_yaml(path))
    else:
        load_config(path)


@pytest.mark.parametrize("kind", ["job", "finetune"])
def test_committed_json_schema_is_current_and_agrees_with_the_parser(kind):
    """configs/<kind>.schema.json is what `python -m pipeline schema` prints; the shipped
    examples pass it, and a config the parser rejects for a wrong type or key fails it too."""
    import json

    import jsonschema

    from pipeline.config.command import config_schema

    generated = config_schema(kind)
    with open(os.path.join(ROOT, "configs", f"{kind}.schema.json")) as f:
        assert f.read() == generated, "run: python -m pipeline schema {kind} > configs/{kind}.schema.json"
    schema = json.loads(generated)
    assert all("description" in p for d in schema["$defs"].values() for p in d.get("properties", {}).values())
    examples = [p for p in glob.glob(os.path.join(ROOT, "configs", "*.yaml"))
                if os.path.basename(p).startswith("finetune") == (kind == "finetune")]
    assert examples
    for path in examples:
        jsonschema.validate(read_yaml(path), schema)
    bad = read_yaml(examples[0])
    section = "training" if kind == "finetune" else "compute"
    bad.setdefault(section, {})["batch_size"] = "4"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_misspelt_keys_values_and_sections_get_the_closest_name_first():
    data = minimal()
    data["input"]["id_colum"] = data["input"].pop("id_column")
    data["input"]["box_format"] = "xywhh"
    data["model"]["mask_source"] = "hq-only"
    data["compte"] = {}
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    problems = err.value.problems
    assert problems[0].startswith("unknown section 'compte' (did you mean 'compute'?)")
    typo = problems.index(next(p for p in problems if p.startswith("input: unknown key 'id_colum'")))
    assert "(did you mean 'id_column'?)" in problems[typo]
    assert problems[typo + 1] == "input: missing required key 'id_column' (is 'id_colum' it, misspelt?)"
    assert any(p.startswith("input.box_format: must be one of") and p.endswith("(did you mean 'xywh'?)") for p in problems)
    assert any(p.endswith("got 'hq-only' (did you mean 'hq_only'?)") for p in problems)
    # A name that is close to nothing gets no guess.
    data = minimal()
    data["input"]["zzz"] = 1
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert "did you mean" not in err.value.problems[0]
