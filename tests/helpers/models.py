"""Official SAM-HQ models with perturbed random weights (the parity tests' reference), and
pairs of an official model with samhq_core's model loaded from the checkpoint it was saved to."""

import io
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
import torch
from PIL import Image

from helpers import official
from samhq_core import SamHQModel, SamHQProcessor
from samhq_core.random_weights import perturb

# Reduced ViT: keeps windowed blocks (with window padding: a 16x16 grid in 14x14 windows)
# and global blocks, at a quarter of the input size.
SMALL_VIT = dict(img_size=256, embed_dim=64, depth=4, num_heads=2, global_attn_indexes=(1, 3), window_size=14)


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


def make_pair(official_model, tmp_path_factory, name) -> Pair:
    path = str(tmp_path_factory.mktemp(name) / f"{name}.pth")
    torch.save(official_model.state_dict(), path)
    return Pair(official_model, SamHQModel.from_pretrained(path), path)


def samhq_core_masks(model: SamHQModel, image_bytes: bytes, boxes: List[List[float]]
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """samhq_core run directly on one encoded image, no pipeline: processor → model →
    post_process_masks; (boxes, H, W) bool masks, (boxes,) predicted IoUs and (boxes,)
    stability scores by the official `calculate_stability_score` on the logits."""
    processor = SamHQProcessor.for_model(model)
    inputs = processor(Image.open(io.BytesIO(image_bytes)), input_boxes=[boxes])
    with torch.no_grad():
        out = model(**inputs, multimask_output=False)
    logits = processor.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"],
                                          binarize=False)[0][:, 0]
    stability = official.calculate_stability_score(logits, 0.0, 1.0)
    return (logits > 0).numpy(), out.iou_scores[0, :, 0].numpy(), stability.numpy()
