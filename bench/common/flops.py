"""The analytic FLOP count of the ViT image encoder, for MFU against a measured peak."""

import math

from samhq_core.config import SamHQVisionConfig


def encoder_flops(v: SamHQVisionConfig) -> float:
    """Analytic FLOPs (2 per multiply-add) of one ViT encoder forward on one image: patch
    embed, qkv / proj / MLP linears, attention QK^T and AV, the decomposed relative-position
    einsums, the neck. Windowed blocks count the work as executed: the grid is zero-padded to
    a multiple of the window (64 x 64 → 70 x 70 in 25 windows of 14 x 14 at 1024 px), so qkv,
    proj and attention run on the padded tokens. Elementwise work (norms, softmax, GELU, bias
    adds) is not counted."""
    grid = v.image_size // v.patch_size
    dim, heads = v.hidden_size, v.num_attention_heads
    head_dim, mlp_dim, tokens = dim // heads, int(dim * v.mlp_ratio), grid * grid
    macs = tokens * dim * v.num_channels * v.patch_size**2  # patch embedding
    for i in range(v.num_hidden_layers):
        side = grid if i in v.global_attn_indexes else v.window_size
        windows = math.ceil(grid / side) ** 2
        window_tokens = side * side
        executed = windows * window_tokens  # tokens incl. window padding
        macs += executed * dim * 3 * dim + executed * dim * dim  # qkv, proj
        macs += 2 * windows * heads * window_tokens * window_tokens * head_dim  # QK^T, AV
        macs += 2 * windows * heads * window_tokens * side * head_dim  # rel-pos einsums along h and w
        macs += 2 * tokens * dim * mlp_dim  # MLP
    macs += tokens * dim * v.output_channels + tokens * v.output_channels**2 * 9  # neck: 1x1 and 3x3 convs
    return 2.0 * macs
