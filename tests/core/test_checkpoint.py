"""Checkpoint formats, sources and failure modes."""

import io
import json
import os
import pickle
import shutil

import fsspec
import pytest
import torch
from helpers.http_server import LocalHTTPServer

from samhq_core import SamHQConfig, SamHQModel
from samhq_core.checkpoint import infer_config, to_hf_key
from samhq_core.checkpoint_sources import file_sha256
from samhq_core.random_weights import smallest_config


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


def test_a_directory_that_is_no_checkpoint_names_the_checkpoints_in_it(vit_pair, tmp_path):
    """The parent of a checkpoint's directory is "not a checkpoint" (not "not found"), and the
    message names what lies one level down; a directory with nothing of the kind says so."""
    parent = tmp_path / "models"
    vit_pair.ours.save_pretrained(str(parent / "mine"))
    (parent / "notes.txt").write_text("")
    (parent / "sam_hq_vit_b.pth").write_bytes(b"")
    for load in (SamHQModel.from_pretrained, SamHQModel.config_from_pretrained):
        with pytest.raises(ValueError) as err:
            load(str(parent))
        assert str(err.value).startswith(f"{parent} is a directory, not a checkpoint: it has neither config.json nor "
                                         "model.safetensors")
        assert str(err.value).endswith(f"the checkpoints in it: {parent / 'mine'} (HF layout), "
                                       f"{parent / 'sam_hq_vit_b.pth'}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="nor does any entry of it look like one"):
        SamHQModel.config_from_pretrained(str(empty))


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


class _RangeServer(LocalHTTPServer):
    """A real HTTP server on 127.0.0.1 (in a thread) serving a directory with byte-range
    requests, as object stores and CDNs do, and counting the bytes it sends."""

    def __init__(self, directory):
        import functools
        import http.server

        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def send_head(self):
                path = self.translate_path(self.path)
                if not os.path.isfile(path):
                    return super().send_head()
                size = os.path.getsize(path)
                start, end = 0, size - 1
                ranged = self.headers.get("Range", "").startswith("bytes=")
                if ranged:
                    first, _, last = self.headers["Range"][len("bytes="):].partition("-")
                    start, end = int(first or 0), min(int(last) if last else size - 1, size - 1)
                self.send_response(206 if ranged else 200)
                self.send_header("Content-Length", str(end - start + 1))
                self.send_header("Accept-Ranges", "bytes")
                if ranged:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.end_headers()
                if self.command == "HEAD":
                    return None
                with open(path, "rb") as f:
                    f.seek(start)
                    return io.BytesIO(f.read(end - start + 1))

            def copyfile(self, source, outputfile):
                try:
                    for block in iter(lambda: source.read(1 << 16), b""):
                        outputfile.write(block)
                        server.sent += len(block)
                except (BrokenPipeError, ConnectionResetError):  # the client read what it needed
                    pass

        self.sent = 0
        super().__init__(functools.partial(Handler, directory=str(directory)))


def test_config_from_pretrained_reads_headers_not_weights(vit_pair, tmp_path):
    """Over HTTP, the architecture of a .pth, a .safetensors file and an HF directory comes
    from a small part of the weights file; nothing is cached or written."""
    vit_pair.ours.save_pretrained(str(tmp_path / "hf"))
    shutil.copy(vit_pair.pth, tmp_path / "model.pth")
    from safetensors.torch import save_file

    save_file(torch.load(vit_pair.pth, weights_only=True), str(tmp_path / "flat.safetensors"))  # official key names
    server = _RangeServer(tmp_path)
    home = tmp_path / "home"
    try:
        for name in ("model.pth", "hf", "flat.safetensors"):
            server.sent = 0
            config = SamHQModel.config_from_pretrained(f"{server.url}/{name}")
            assert config == vit_pair.ours.config, name
            size = os.path.getsize(tmp_path / name / "model.safetensors" if name == "hf" else tmp_path / name)
            assert server.sent < 0.02 * size, (name, server.sent, size)
    finally:
        server.close()
    assert not home.exists() and not os.path.exists(os.path.join(tmp_path, "cache"))


def test_config_from_pretrained_checks_tensor_names_and_shapes(vit_pair, tmp_path):
    state = torch.load(vit_pair.pth, weights_only=True)
    state["mask_decoder.hf_token.weight"] = torch.zeros(2, 256)
    torch.save(state, tmp_path / "reshaped.pth")
    with pytest.raises(ValueError, match=r"does not fit the model: wrong shape \(1\): mask_decoder.hf_token.weight "
                                         r"\(2, 256\) != \(1, 256\)$"):
        SamHQModel.config_from_pretrained(str(tmp_path / "reshaped.pth"))
    del state["mask_decoder.iou_token.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"does not look like a SAM / SAM-HQ checkpoint: it has no tensor "
                                         r"'mask_decoder.iou_token.weight'"):
        SamHQModel.config_from_pretrained(str(tmp_path / "broken.pth"))
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ValueError, match="the file is empty"):
        SamHQModel.config_from_pretrained(str(tmp_path / "empty.pth"))
    with pytest.raises(ValueError, match="is a directory, not a checkpoint: it has neither config.json nor"):
        SamHQModel.config_from_pretrained(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="is a directory without config.json: an HF-layout checkpoint has"):
        SamHQModel.config_from_pretrained(str(tmp_path))


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


def test_safetensors_whose_header_length_starts_like_a_pickle(tmp_path):
    """A safetensors file opens with its header's length (8 bytes, little-endian); when the
    first of them is 0x80, the pickle marker, it is still read as safetensors."""
    config = smallest_config()
    SamHQModel(config).save_pretrained(str(tmp_path / "small"))
    assert (tmp_path / "small" / "model.safetensors").read_bytes()[:1] == b"\x80"
    assert SamHQModel.config_from_pretrained(str(tmp_path / "small")) == config
    assert SamHQModel.from_pretrained(str(tmp_path / "small")).config == config
