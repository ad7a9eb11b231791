"""Shared fixtures: official SAM-HQ models with perturbed random weights, saved as real
checkpoints, and the same checkpoints loaded into samhq_core."""

import os
import sys
from dataclasses import dataclass

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

import official  # noqa: E402

from samhq_core import SamHQModel  # noqa: E402

# Reduced ViT: keeps windowed blocks (with window padding: a 16x16 grid in 14x14 windows)
# and global blocks, at a quarter of the input size.
SMALL_VIT = dict(img_size=256, embed_dim=64, depth=4, num_heads=2, global_attn_indexes=(1, 3), window_size=14)


def perturb(model: torch.nn.Module, seed: int) -> None:
    """Random, non-trivial values for every parameter and buffer (zero-initialised biases,
    LayerNorm affines, position tables, BatchNorm statistics included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if not tensor.is_floating_point() or name.endswith(("pixel_mean", "pixel_std")):
                continue
            noise = torch.randn(tensor.shape, generator=gen)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + noise.abs())
            else:
                tensor.add_(0.1 * noise)
    # Official TinyViT caches its attention bias table in .eval(); refresh it from the new weights.
    model.eval()


def official_vit(hq: bool = True, seed: int = 0) -> torch.nn.Module:
    cfg = SMALL_VIT
    grid = cfg["img_size"] // 16
    encoder = official.ImageEncoderViT(
        depth=cfg["depth"], embed_dim=cfg["embed_dim"], img_size=cfg["img_size"], mlp_ratio=4,
        norm_layer=lambda dim: torch.nn.LayerNorm(dim, eps=1e-6), num_heads=cfg["num_heads"], patch_size=16,
        qkv_bias=True, use_rel_pos=True, global_attn_indexes=cfg["global_attn_indexes"],
        window_size=cfg["window_size"], out_chans=256,
    )
    return _official_sam(encoder, grid, cfg["img_size"], cfg["embed_dim"], hq, seed)


def official_tiny(hq: bool = True, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = official.sam_model_registry["vit_tiny"]()
    if not hq:
        model = _official_sam(model.image_encoder, 64, 1024, 160, hq, seed)
    perturb(model, seed)
    return model


def _official_sam(encoder, grid, img_size, vit_dim, hq, seed):
    torch.manual_seed(seed)
    transformer = official.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8)
    if hq:
        decoder = official.MaskDecoderHQ(
            num_multimask_outputs=3, transformer=transformer, transformer_dim=256,
            iou_head_depth=3, iou_head_hidden_dim=256, vit_dim=vit_dim,
        )
    else:
        decoder = official.MaskDecoder(
            num_multimask_outputs=3, transformer=transformer, transformer_dim=256,
            iou_head_depth=3, iou_head_hidden_dim=256,
        )
    model = official.Sam(
        image_encoder=encoder,
        prompt_encoder=official.PromptEncoder(
            embed_dim=256, image_embedding_size=(grid, grid), input_image_size=(img_size, img_size), mask_in_chans=16
        ),
        mask_decoder=decoder,
    )
    perturb(model, seed)
    return model


@dataclass
class Pair:
    """An official model, the `.pth` it was saved to, and samhq_core's model loaded from it."""

    official: torch.nn.Module
    ours: SamHQModel
    pth: str


def _pair(official_model, tmp_path_factory, name) -> Pair:
    path = str(tmp_path_factory.mktemp(name) / f"{name}.pth")
    torch.save(official_model.state_dict(), path)
    return Pair(official_model, SamHQModel.from_pretrained(path), path)


@pytest.fixture(scope="session")
def vit_pair(tmp_path_factory) -> Pair:
    return _pair(official_vit(), tmp_path_factory, "vit_small")


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory) -> Pair:
    return _pair(official_tiny(), tmp_path_factory, "vit_tiny")


@pytest.fixture(scope="session")
def sam_pair(tmp_path_factory) -> Pair:
    return _pair(official_vit(hq=False, seed=1), tmp_path_factory, "sam_baseline")


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 server (moto's, in a thread) on 127.0.0.1, with test credentials in the
    standard AWS environment variables (Ray workers started after this inherit them)."""
    from moto.server import ThreadedMotoServer

    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in credentials}
    os.environ.update(credentials)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
