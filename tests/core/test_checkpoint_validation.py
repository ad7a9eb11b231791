"""Checkpoints that are damaged (cut short, forged headers, random bytes) are refused from their
header alone, with one line that names the file: `config_from_pretrained` reads no weights, and
`from_pretrained` refuses the same safetensors files before safetensors reads them."""

import json
import os
import shutil

import fsspec
import numpy as np
import pytest
import torch

from samhq_core import SamHQModel
from samhq_core.random_weights import random_model, smallest_config


@pytest.fixture(scope="module")
def model() -> SamHQModel:
    return random_model(smallest_config(), seed=0)


@pytest.fixture
def hf_dir(tmp_path, model):
    model.save_pretrained(str(tmp_path / "hf"))
    return tmp_path / "hf"


def read_safetensors(path):
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + size]), data[8 + size:]


def write_safetensors(path, header, body):
    encoded = json.dumps(header).encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + body)


def last_tensor(header):
    """The tensor whose data ends the file, and its offsets."""
    name = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
    return name, header[name]["data_offsets"]


def refused(src, match):
    """Both loaders refuse `src` with a ValueError of one line matching `match`."""
    for load in (SamHQModel.config_from_pretrained, SamHQModel.from_pretrained):
        with pytest.raises(ValueError, match=match) as raised:
            load(src)
        assert "\n" not in str(raised.value), str(raised.value)


def test_a_truncated_safetensors_file_is_refused_naming_the_tensor(hf_dir):
    weights = hf_dir / "model.safetensors"
    header, body = read_safetensors(weights)
    name, (begin, end) = last_tensor(header)
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) - 1)
    size = os.path.getsize(weights)
    refused(str(hf_dir), rf"^{hf_dir}/model.safetensors: tensor '{name}' has data_offsets \[{begin}, {end}\] past the "
                         rf"end of the file \({size} bytes\): the file is truncated or was not written by safetensors; "
                         "download it again$")


def test_a_forged_safetensors_header_is_refused(hf_dir, tmp_path):
    weights = hf_dir / "model.safetensors"
    header, body = read_safetensors(weights)
    name, (begin, end) = last_tensor(header)
    far = 1 << 30
    header[name]["data_offsets"] = [begin + far, end + far]  # the file keeps its size
    write_safetensors(weights, header, body)
    refused(str(hf_dir), rf"model.safetensors: tensor '{name}' has data_offsets \[{begin + far}, {end + far}\] past "
                         "the end of the file")

    header[name]["data_offsets"] = [begin, end - 4]
    write_safetensors(weights, header, body)
    nbytes = end - begin
    refused(str(hf_dir), rf"model.safetensors: tensor '{name}' has data_offsets \[{begin}, {end - 4}\], not the "
                         rf"{nbytes} bytes of its shape")

    header[name]["data_offsets"] = [end, begin]
    write_safetensors(weights, header, body)
    refused(str(hf_dir), rf"tensor '{name}' has data_offsets \[{end}, {begin}\], not the {nbytes} bytes")


def test_a_header_longer_than_the_file_is_refused(hf_dir):
    weights = hf_dir / "model.safetensors"
    weights.write_bytes((1 << 40).to_bytes(8, "little") + b'{"a": 1}')
    refused(str(hf_dir), rf"^{weights}: its safetensors header \({1 << 40} bytes\) runs past the end of the file "
                         r"\(16 bytes\)")


def test_a_truncated_safetensors_file_at_a_url_is_refused(hf_dir):
    """The file's size comes from the filesystem, so remote files are checked as local ones."""
    fs = fsspec.filesystem("memory")
    data = (hf_dir / "model.safetensors").read_bytes()
    fs.pipe("/validation/flat.safetensors", data[: len(data) // 2])
    try:
        with pytest.raises(ValueError, match=r"^memory://validation/flat.safetensors: tensor '.*' has data_offsets "
                                             r"\[\d+, \d+\] past the end of the file"):
            SamHQModel.config_from_pretrained("memory://validation/flat.safetensors")
    finally:
        fs.rm("/validation", recursive=True)


def test_random_bytes_as_model_safetensors_are_refused_naming_the_file(hf_dir):
    (hf_dir / "model.safetensors").write_bytes(np.random.default_rng(3).bytes(4096))
    refused(str(hf_dir), rf"^{hf_dir}/model.safetensors is not a PyTorch \(.pth\) or safetensors checkpoint: it "
                         "starts with bytes")


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_a_truncated_pth_is_refused_in_one_line(tmp_path, model, zipped):
    whole, cut = tmp_path / "whole.pth", tmp_path / "cut.pth"
    torch.save(model.state_dict(), whole, _use_new_zipfile_serialization=zipped)
    data = whole.read_bytes()
    for length in (len(data) // 2, 100, len(data) - 1):
        cut.write_bytes(data[:length])
        with pytest.raises(ValueError, match=rf"^{cut} is not a loadable PyTorch checkpoint: the file is truncated or "
                                             r"corrupted, or holds more than tensors \(weights_only loading refuses "
                                             r"that\); download it again \(\w+[^\n]*\)$"):
            SamHQModel.config_from_pretrained(str(cut))


def test_an_intact_checkpoint_still_loads(hf_dir, tmp_path, model):
    """The checks pass every tensor of a real file: the HF layout and a flat safetensors file."""
    assert SamHQModel.config_from_pretrained(str(hf_dir)) == model.config
    loaded = SamHQModel.from_pretrained(str(hf_dir))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True))
    shutil.copy(hf_dir / "model.safetensors", tmp_path / "flat.safetensors")
    with pytest.raises(ValueError, match="HF-layout weights without a config.json"):  # past the header checks
        SamHQModel.config_from_pretrained(str(tmp_path / "flat.safetensors"))
