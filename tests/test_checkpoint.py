"""Checkpoint formats, sources and failure modes."""

import io
import json
import os
import pickle

import fsspec
import pytest
import torch

from samhq_core import SamHQConfig, SamHQModel
from samhq_core.checkpoint import file_sha256, infer_config, to_hf_key


def test_variant_inferred_from_shapes(vit_pair, tiny_pair):
    vit = vit_pair.ours.config.vision_config
    assert (vit.hidden_size, vit.num_hidden_layers, vit.num_attention_heads) == (64, 4, 2)
    assert (vit.global_attn_indexes, vit.window_size, vit.image_size) == ([1, 3], 14, 256)
    assert tiny_pair.ours.config == SamHQConfig.from_variant("vit_tiny")


@pytest.mark.parametrize("variant", ["vit_b", "vit_l", "vit_h", "vit_tiny"])
def test_presets_round_trip_through_inference(variant):
    """Every official variant's architecture is recovered from its state dict's shapes."""
    config = SamHQConfig.from_variant(variant)
    with torch.device("meta"):
        state = SamHQModel(config).state_dict()
    assert infer_config(state) == config


def test_explicit_variant_and_plain_sam(sam_pair, tmp_path):
    model = SamHQModel.from_pretrained(sam_pair.pth)
    assert not model.config.mask_decoder_config.hq
    with pytest.raises(ValueError, match="does not fit the model"):
        SamHQModel.from_pretrained(sam_pair.pth, variant="vit_b")


def test_bad_keys_are_listed(vit_pair, tmp_path):
    state = torch.load(vit_pair.pth, weights_only=True)
    del state["mask_decoder.hf_mlp.layers.0.weight"]
    state["mask_decoder.extra.weight"] = torch.zeros(1)
    state["mask_decoder.hf_token.weight"] = torch.zeros(1, 128)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        SamHQModel.from_pretrained(str(path))
    message = str(err.value)
    assert "missing (1): mask_decoder.hf_mlp.layers.0.weight" in message
    assert "unexpected (1): mask_decoder.extra.weight" in message
    assert "mask_decoder.hf_token.weight (1, 128) != (1, 256)" in message


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/samhq_pwned",))


def test_pickled_code_is_never_executed(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"x": _Exploit()}, f)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        SamHQModel.from_pretrained(str(path))
    assert not os.path.exists("/tmp/samhq_pwned")


def test_sha256_is_checked(vit_pair):
    digest = file_sha256(vit_pair.pth)
    assert SamHQModel.from_pretrained(vit_pair.pth, sha256=digest.upper()) is not None
    with pytest.raises(ValueError, match="sha256 mismatch"):
        SamHQModel.from_pretrained(vit_pair.pth, sha256="0" * 64)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        SamHQModel.from_pretrained(str(tmp_path / "nope.pth"))


def test_remote_sources_are_cached_once(vit_pair, tmp_path):
    """An fsspec URL (in-memory filesystem) for a .pth and for an HF directory: downloaded once
    per version of the file."""
    fs = fsspec.filesystem("memory")
    with open(vit_pair.pth, "rb") as f:
        fs.pipe("/ckpt/model.pth", f.read())
    vit_pair.ours.save_pretrained(str(tmp_path / "hf"))
    for name in ("config.json", "model.safetensors"):
        fs.put(str(tmp_path / "hf" / name), f"/ckpt/hf/{name}")
    cache = str(tmp_path / "cache")
    for url in ("memory://ckpt/model.pth", "memory://ckpt/hf"):
        first = SamHQModel.from_pretrained(url, cache_dir=cache)
        assert torch.equal(first.mask_decoder.hf_token.weight, vit_pair.ours.mask_decoder.hf_token.weight)
    cached = sorted(os.listdir(cache))
    for url in ("memory://ckpt/model.pth", "memory://ckpt/hf"):
        assert SamHQModel.from_pretrained(url, cache_dir=cache) is not None
    assert sorted(os.listdir(cache)) == cached  # served from the cache, not downloaded again

    # A checkpoint replaced at the same URL is a new version: fetched again.
    state = torch.load(vit_pair.pth, weights_only=True)
    state["mask_decoder.hf_token.weight"] = state["mask_decoder.hf_token.weight"] + 1
    buffer = io.BytesIO()
    torch.save(state, buffer)
    fs.pipe("/ckpt/model.pth", buffer.getvalue())
    replaced = SamHQModel.from_pretrained("memory://ckpt/model.pth", cache_dir=cache)
    assert torch.equal(replaced.mask_decoder.hf_token.weight, state["mask_decoder.hf_token.weight"])
    with pytest.raises(FileNotFoundError, match="memory://ckpt/other.pth"):
        SamHQModel.from_pretrained("memory://ckpt/other.pth", cache_dir=cache)


def test_hf_positional_matrix_under_either_key(vit_pair, tmp_path):
    from safetensors.torch import load_file, save_file

    directory = tmp_path / "hf"
    vit_pair.ours.save_pretrained(str(directory))
    state = load_file(str(directory / "model.safetensors"))
    for key in ("prompt_encoder.shared_embedding.positional_embedding", "shared_image_embedding.positional_embedding"):
        kept = {k: v for k, v in state.items()
                if k not in ("prompt_encoder.shared_embedding.positional_embedding",
                             "shared_image_embedding.positional_embedding") or k == key}
        save_file(kept, str(directory / "model.safetensors"))
        model = SamHQModel.from_pretrained(str(directory))
        assert torch.equal(model.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix,
                           vit_pair.ours.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix)


transformers = pytest.importorskip("transformers")


def test_loads_transformers_checkpoints(tmp_path):
    """A checkpoint written by transformers' SamHQModel.save_pretrained loads with every
    weight in place, and its config.json is understood."""
    hf_config = transformers.SamHQConfig(
        vision_config=dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, global_attn_indexes=[1, 3],
                           image_size=256, mlp_dim=256),
        prompt_encoder_config=dict(image_size=256),
        mask_decoder_config=dict(vit_dim=64),
    )
    torch.manual_seed(0)
    hf_model = transformers.SamHQModel(hf_config)
    hf_model.save_pretrained(str(tmp_path))
    ours = SamHQModel.from_pretrained(str(tmp_path))
    hf_state = hf_model.state_dict()
    for key, value in ours.state_dict().items():
        assert torch.equal(value, hf_state[to_hf_key(key)]), key
    assert json.load(open(tmp_path / "config.json"))["model_type"] == "sam_hq"
