"""`validate` refuses, with exit status 2 and one `error:` line each, checkpoints the model
actors would refuse: a local file whose sha256 is not model.sha256, a safetensors file cut short
or with a forged header, random bytes, a .pth cut short."""

import json

import fsspec
import numpy as np
import pytest
import torch
import yaml
from helpers.pipeline_data import sample_rows, write_rows

from pipeline.cli import main
from samhq_core import SamHQModel
from samhq_core.checkpoint_sources import file_sha256
from samhq_core.random_weights import random_model, smallest_config


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """An HF-layout directory and a .pth (whose architecture is inferred from its shapes)."""
    root = tmp_path_factory.mktemp("checkpoints")
    config = smallest_config()
    config.mask_decoder_config.iou_head_hidden_dim = 256  # what the official layout's shapes imply
    model = random_model(config, seed=0)
    model.save_pretrained(str(root / "hf"))
    torch.save(model.state_dict(), root / "model.pth")
    return root


class Job:
    def __init__(self, tmp_path, checkpoint):
        (tmp_path / "input").mkdir()
        write_rows(str(tmp_path / "input" / "part-0.parquet"), sample_rows(num_good=2)[:2])
        self.config = {
            "input": {"path": str(tmp_path / "input"), "id_column": "id", "image_column": "image",
                      "boxes_column": "boxes"},
            "output": {"path": str(tmp_path / "output")},
            "model": {"checkpoint": str(checkpoint)},
        }
        self.path = tmp_path / "job.yaml"

    def validate(self, capsys, **model):
        """The exit status and the stderr lines of `validate` with these model settings."""
        self.config["model"].update(model)
        self.path.write_text(yaml.safe_dump(self.config))
        status = main(["validate", "--config", str(self.path)])
        return status, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def copy_of(directory, tmp_path):
    target = tmp_path / "checkpoint"
    target.mkdir()
    for name in ("config.json", "model.safetensors"):
        (target / name).write_bytes((directory / name).read_bytes())
    return target


@pytest.mark.parametrize("layout", ["hf", "model.pth"])
def test_the_local_weights_file_must_have_model_sha256(tmp_path, capsys, checkpoints, layout):
    """For an HF directory the digest is its model.safetensors', as from_pretrained takes it."""
    weights = checkpoints / "hf" / "model.safetensors" if layout == "hf" else checkpoints / layout
    digest = file_sha256(str(weights))
    job = Job(tmp_path, checkpoints / layout)
    assert job.validate(capsys, sha256=digest.upper()) == (0, [])
    status, errors = job.validate(capsys, sha256="0" * 64)
    assert status == 2 and errors == [
        f"error: model.sha256: {weights} has sha256 {digest}, not the configured {'0' * 64}: it is not the file the "
        "digest was taken of (replaced, truncated or corrupted); fetch the checkpoint again, or set model.sha256 to "
        f"{digest} if you trust this file"]
    status, errors = job.validate(capsys, sha256="not-a-digest")
    assert status == 2 and errors == ["error: model.sha256: 'not-a-digest' is not a SHA-256 digest (64 hex digits, as "
                                      "`sha256sum` prints)"]


def test_a_remote_checkpoints_digest_is_checked_when_the_actors_load_it(tmp_path, capsys, checkpoints):
    """validate downloads no weights to hash them; from_pretrained, as the actors call it, refuses the copy."""
    fs = fsspec.filesystem("memory")
    fs.pipe("/preflight/model.pth", (checkpoints / "model.pth").read_bytes())
    try:
        job = Job(tmp_path, "memory://preflight/model.pth")
        assert job.validate(capsys, sha256="0" * 64) == (0, [])
        with pytest.raises(ValueError, match="sha256 mismatch"):
            SamHQModel.from_pretrained("memory://preflight/model.pth", sha256="0" * 64, cache_dir=str(tmp_path / "c"))
    finally:
        fs.rm("/preflight", recursive=True)


def test_a_truncated_safetensors_file_is_refused_naming_the_tensor(tmp_path, capsys, checkpoints):
    checkpoint = copy_of(checkpoints / "hf", tmp_path)
    weights = checkpoint / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 100])
    status, errors = Job(tmp_path, checkpoint).validate(capsys)
    assert status == 2 and len(errors) == 1, errors
    assert errors[0].startswith(f"error: model.checkpoint: {weights}: tensor '")
    assert errors[0].endswith(f" past the end of the file ({len(data) - 100} bytes): the file is truncated or was not "
                              "written by safetensors; download it again")


def test_a_forged_safetensors_header_is_refused_naming_the_tensor(tmp_path, capsys, checkpoints):
    checkpoint = copy_of(checkpoints / "hf", tmp_path)
    weights = checkpoint / "model.safetensors"
    data = weights.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    name = sorted(k for k in header if k != "__metadata__")[0]
    begin, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [begin + len(data), end + len(data)]
    forged = json.dumps(header).encode()
    weights.write_bytes(len(forged).to_bytes(8, "little") + forged + data[8 + length:])
    status, errors = Job(tmp_path, checkpoint).validate(capsys)
    assert status == 2 and len(errors) == 1, errors
    assert errors[0].startswith(f"error: model.checkpoint: {weights}: tensor '{name}' has data_offsets "
                                f"[{begin + len(data)}, {end + len(data)}] past the end of the file")


def test_random_bytes_named_model_safetensors_are_one_error_naming_the_file(tmp_path, capsys, checkpoints):
    checkpoint = copy_of(checkpoints / "hf", tmp_path)
    (checkpoint / "model.safetensors").write_bytes(np.random.default_rng(5).bytes(1 << 16))
    status, errors = Job(tmp_path, checkpoint).validate(capsys)
    assert status == 2 and len(errors) == 1, errors
    assert errors[0].startswith(f"error: model.checkpoint: {checkpoint}/model.safetensors is not a PyTorch (.pth) or "
                                "safetensors checkpoint: it starts with bytes ")


def test_a_truncated_pth_is_one_error_naming_the_file(tmp_path, capsys, checkpoints):
    data = (checkpoints / "model.pth").read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    status, errors = Job(tmp_path, cut).validate(capsys)
    assert status == 2 and len(errors) == 1, errors
    assert errors[0].startswith(f"error: model.checkpoint: {cut} is not a loadable PyTorch checkpoint: the file is "
                                "truncated or corrupted, or holds more than tensors (weights_only loading refuses "
                                "that); download it again (")
