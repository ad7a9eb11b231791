"""ViT image encoder (SAM vit_b / vit_l / vit_h): windowed + global attention with
decomposed relative positions, and a neck down to the prompt embedding width."""

import functools
import math
from typing import Any, Callable, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.attention.flex_attention import flex_attention

from .common import MLPBlock, neck, window_partition, window_unpartition

_CPU_BIAS_BLOCK_BYTES = 16 << 20
_compiled_flex_attention: Optional[Callable[..., Any]] = None


class ImageEncoderViT(nn.Module):
    """Returns the neck output (B, out_chans, H/16, W/16) and the output of the first
    global-attention block (B, H/16, W/16, embed_dim), which the HQ decoder fuses in."""

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        layer_norm_eps: float = 1e-6,
        use_abs_pos: bool = True,
        use_rel_pos: bool = True,
        window_size: int = 14,
        global_attn_indexes: Sequence[int] = (2, 5, 8, 11),
    ) -> None:
        super().__init__()
        if not global_attn_indexes:
            raise ValueError("the ViT encoder needs at least one global-attention block for HQ features")
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed: Optional[nn.Parameter] = (
            nn.Parameter(torch.zeros(1, grid, grid, embed_dim)) if use_abs_pos else None
        )
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                layer_norm_eps=layer_norm_eps,
                use_rel_pos=use_rel_pos,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=(grid, grid),
            )
            for i in range(depth)
        )
        self.first_global_index = min(global_attn_indexes)
        self.neck = neck(embed_dim, out_chans)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encode images into the image embeddings and the early features of the HQ decoder.

        Arguments:
          x (torch.Tensor): normalised images (B, in_chans, img_size, img_size).

        Returns:
          (torch.Tensor): the neck output (B, out_chans, h, w), h = w = img_size / patch_size.
          (torch.Tensor): the first global-attention block's output (B, h, w, embed_dim).
        """
        x = self.patch_embed(x)  # B x h x w x C
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.first_global_index:
                early = x
        return self.neck(x.permute(0, 3, 1, 2)), early


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Contiguous: as a view of the convolution's B x C x h x w output, the residual stream would
        # keep that layout through every block (elementwise ops follow their first input's), and
        # each LayerNorm and linear would copy it to channels-last first.
        return self.proj(x).permute(0, 2, 3, 1).contiguous()  # B x h x w x C


class Block(nn.Module):
    """Pre-norm transformer block; attention runs in windows unless window_size is 0."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        layer_norm_eps: float,
        use_rel_pos: bool,
        window_size: int,
        input_size: Tuple[int, int],
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            input_size=input_size if window_size == 0 else (window_size, window_size),
            global_attention=window_size == 0,
        )
        self.norm2 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio))
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1], x.shape[2]
            x, padded_hw = window_partition(x, self.window_size)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, padded_hw, (h, w))
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Attention(nn.Module):
    """Multi-head attention with decomposed relative positions: added as an SDPA bias, inside
    FlexAttention's kernel for global attention on a GPU (`use_flex_attention`), folded into
    the dot products in bf16/fp16 on a CPU with AMX (`use_folded_rel_pos`), or added to scores
    computed by plain matmuls for global attention in bf16 on a CPU with AVX512-BF16 but no
    AMX (`use_explicit_scores`)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool,
        use_rel_pos: bool,
        input_size: Tuple[int, int],
        global_attention: bool = False,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))
        self.global_attention = global_attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        # qkv: 3 x B x heads x (h*w) x head_dim
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if not self.use_rel_pos:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            rel_h, rel_w = decomposed_rel_pos(q, self.rel_pos_h, self.rel_pos_w, (h, w))
            if use_flex_attention(q, self.global_attention):
                x = rel_pos_flex_attention(q, k, v, rel_h, rel_w)
            elif use_folded_rel_pos(q):
                x = rel_pos_folded_attention(q, k, v, rel_h, rel_w)
            elif use_explicit_scores(q, self.global_attention):
                x = rel_pos_explicit_attention(q, k, v, rel_h, rel_w)
            else:
                x = rel_pos_bias_attention(q, k, v, rel_h, rel_w)
        x = x.transpose(1, 2).reshape(b, h, w, -1)
        return self.proj(x)


def use_flex_attention(q: torch.Tensor, global_attention: bool) -> bool:
    """FlexAttention for global attention on a GPU, where the materialised bias would be
    ~0.4 GB per image per block in bf16 and excludes the fused kernels; its head dimension
    must be a power of two (vit_b, vit_l: 64; vit_h's 80 keeps the bias). Windowed blocks
    (196 tokens) and the CPU, where the blocked bias below is faster, keep the bias."""
    head_dim = q.shape[-1]
    return q.is_cuda and global_attention and head_dim >= 16 and head_dim & (head_dim - 1) == 0


@functools.lru_cache(maxsize=None)
def _cpu_has(capability: str) -> bool:
    capabilities = getattr(torch.cpu, "get_capabilities", None)  # torch >= 2.10
    return bool(capabilities is not None and capabilities().get(capability))


def cpu_has_amx_bf16() -> bool:
    """Whether this CPU has AMX bf16 tiles."""
    return _cpu_has("amx_bf16")


def cpu_has_avx512_bf16() -> bool:
    """Whether this CPU has AVX512-BF16 dot-product instructions (bf16 matmuls at twice fp32's rate)."""
    return _cpu_has("avx512_bf16")


def use_folded_rel_pos(q: torch.Tensor) -> bool:
    """The folded bias for bf16 / fp16 attention on a CPU with AMX, whose matrix units make the
    wider dot products cheaper than building and reading the bias (bench/results/cpu_core.md).
    fp32 keeps the blocked bias, which is as fast there and exactly the official arithmetic."""
    return q.is_cpu and q.dtype in (torch.bfloat16, torch.float16) and cpu_has_amx_bf16()


def rel_pos_folded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor,
                             rel_w: torch.Tensor) -> torch.Tensor:
    """The same attention with the bias folded into the dot products, so that SDPA runs
    without a mask: each query (i, j) gets its h + w relative-position terms as extra channels
    (times sqrt(C), undone by SDPA's scale), each key (k, l) the one-hot of its row k and its
    column l, so that q' . k' / sqrt(C) = q . k / sqrt(C) + rel_h[i, j, k] + rel_w[i, j, l]. v is
    zero-padded to the same width (the CPU's flash kernel needs equal widths) and cut back after.
    (B, heads, h*w, C) in and out."""
    b, heads, h, w = rel_h.shape[:4]
    tokens, dim = q.shape[2], q.shape[3]
    unscale = math.sqrt(dim)
    folded_q = torch.cat([q, rel_h.reshape(b, heads, tokens, h) * unscale,
                          rel_w.reshape(b, heads, tokens, w) * unscale], dim=-1)  # B x heads x h*w x (C+h+w)
    key = torch.arange(tokens, device=q.device)
    one_hot = torch.cat([(key // w)[:, None] == torch.arange(h, device=q.device),
                         (key % w)[:, None] == torch.arange(w, device=q.device)], dim=1).to(q.dtype)  # h*w x (h+w)
    folded_k = torch.cat([k, one_hot.expand(b, heads, tokens, h + w)], dim=-1)
    padded_v = F.pad(v, (0, h + w))
    return F.scaled_dot_product_attention(folded_q, folded_k, padded_v, scale=1 / unscale)[..., :dim]


def use_explicit_scores(q: torch.Tensor, global_attention: bool) -> bool:
    """Scores by plain matmuls for global attention in bf16 on a CPU without AMX but with
    AVX512-BF16: there the fused CPU kernel runs bf16 no faster than fp32, while bf16 matmuls
    run at twice fp32's rate (bench/results/cpu_core_amd_epyc.md). Windowed blocks (196 tokens)
    are faster in the fused kernel."""
    return (q.is_cpu and q.dtype == torch.bfloat16 and global_attention and not cpu_has_amx_bf16()
            and cpu_has_avx512_bf16())


def rel_pos_explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor,
                               rel_w: torch.Tensor) -> torch.Tensor:
    """The same attention as plain matmuls and a softmax, one grid row of queries at a time, so
    that a row's scores (B x heads x w x h*w) stay small. Scores are rounded to q's dtype before
    the relative positions are added. (B, heads, h*w, C) in and out."""
    b, heads, h, w = rel_h.shape[:4]
    # Contiguous once: k and v are views into the qkv projection, which every matmul would copy.
    keys_t = k.transpose(-1, -2).contiguous()  # B x heads x C x h*w
    values = v.contiguous()
    scaled_q = q * q.shape[-1] ** -0.5
    rows = []
    for r in range(h):
        scores = torch.matmul(scaled_q[:, :, r * w : (r + 1) * w], keys_t).view(b, heads, w, h, w)
        scores += rel_h[:, :, r, :, :, None]
        scores += rel_w[:, :, r, :, None, :]
        rows.append(torch.matmul(scores.view(b, heads, w, h * w).softmax(-1), values))
    return torch.cat(rows, dim=2)


def rel_pos_bias_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor,
                           rel_w: torch.Tensor) -> torch.Tensor:
    """Attention (B, heads, h*w, C) with the decomposed relative positions as an SDPA bias,
    built a few query rows at a time: on CPU a small block stays in cache and avoids
    page-faulting a fresh multi-GB buffer per block."""
    h, w = rel_h.shape[2], rel_h.shape[3]
    row_bytes = q.shape[0] * q.shape[1] * w * h * w * q.element_size()
    rows = max(1, _CPU_BIAS_BLOCK_BYTES // row_bytes) if q.is_cpu else h
    return torch.cat(
        [
            F.scaled_dot_product_attention(
                q[:, :, r * w : (r + rows) * w],
                k,
                v,
                attn_mask=(rel_h[:, :, r : r + rows, :, :, None] + rel_w[:, :, r : r + rows, :, None, :])
                .flatten(2, 3)
                .flatten(3),
            )
            for r in range(0, h, rows)
        ],
        dim=2,
    )


def rel_pos_flex_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor,
                           rel_w: torch.Tensor) -> torch.Tensor:
    """The same attention through FlexAttention: the bias of query i to key j is added inside
    the fused kernel (rel_h[i, j // w] + rel_w[i, j % w]), never materialised."""
    global _compiled_flex_attention
    b, heads, h, w = rel_h.shape[:4]
    rel_h_flat, rel_w_flat = rel_h.reshape(b, heads, h * w, h), rel_w.reshape(b, heads, h * w, w)

    def add_rel_pos(score: torch.Tensor, batch: torch.Tensor, head: torch.Tensor, q_idx: torch.Tensor,
                    kv_idx: torch.Tensor) -> torch.Tensor:
        return score + rel_h_flat[batch, head, q_idx, kv_idx // w] + rel_w_flat[batch, head, q_idx, kv_idx % w]

    if torch.compiler.is_compiling() or not q.is_cuda:  # inside a compiled model, or the CPU's reference path
        out = flex_attention(q, k, v, score_mod=add_rel_pos)
    else:
        # Uncompiled, flex_attention runs an unfused reference; compiled once per process, with
        # the batch size dynamic after it first changes (dynamo's automatic dynamic shapes), so
        # that batch remainders do not exhaust the recompile limit and fall back to the reference.
        if _compiled_flex_attention is None:
            _compiled_flex_attention = torch.compile(flex_attention)
        out = _compiled_flex_attention(q, k, v, score_mod=add_rel_pos)
    assert isinstance(out, torch.Tensor)
    return out


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative-position table (q_size, k_size, C), resampled if the table was trained
    for another size."""
    max_rel_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_rel_dist:
        rel_pos = F.interpolate(
            rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=max_rel_dist, mode="linear"
        ).reshape(-1, max_rel_dist).permute(1, 0)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative_coords = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative_coords.long()]


def decomposed_rel_pos(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, size: Tuple[int, int]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """MViTv2 decomposed relative positions: the attention bias of query (i, j) to key
    (k, l) is rel_h[..., i, j, k] + rel_w[..., i, j, l].

    q: (B, heads, h*w, C) unscaled queries → rel_h (B, heads, h, w, h), rel_w (B, heads, h, w, w).
    """
    h, w = size
    table_h = get_rel_pos(h, h, rel_pos_h).to(q.dtype)  # h x h x C
    table_w = get_rel_pos(w, w, rel_pos_w).to(q.dtype)  # w x w x C
    r_q = q.reshape(*q.shape[:2], h, w, q.shape[-1])
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, table_h)
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, table_w)
    return rel_h, rel_w
