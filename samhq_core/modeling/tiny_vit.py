"""TinyViT image encoder (Light HQ-SAM, `vit_tiny`): MBConv stage, then windowed-attention
stages whose attention bias is looked up from a learned table by relative offset."""

import itertools
from typing import List, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .common import neck, window_partition, window_unpartition


class Conv2dBN(nn.Sequential):
    """Bias-free conv followed by BatchNorm (checkpoint keys `c.*`, `bn.*`)."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 1, stride: int = 1,
                 padding: int = 0, groups: int = 1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_chans))


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 convs: (B, 3, H, W) → (B, C, H/4, W/4)."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            Conv2dBN(in_chans, embed_dim // 2, 3, 2, 1),
            nn.GELU(),
            Conv2dBN(embed_dim // 2, embed_dim, 3, 2, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, on (B, C, H, W)."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2dBN(dim, hidden)
        self.conv2 = Conv2dBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.conv3 = Conv2dBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv1(x))
        y = F.gelu(self.conv2(y))
        return F.gelu(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """Token grid (B, C, H, W) or (B, H*W, C) → (B, H'*W', out_dim), H' = H/stride."""

    def __init__(self, resolution: Tuple[int, int], dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.conv1 = Conv2dBN(dim, out_dim)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            h, w = self.resolution
            x = x.view(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x))
        return self.conv3(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Window self-attention on (B, N, C) with a learned per-head bias for each relative
    offset. The bias is gathered from the table at every forward, so it always reflects
    the loaded weights (the official code caches it when `.eval()` runs, i.e. before the
    checkpoint is loaded)."""

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = dim // num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        points = list(itertools.product(range(window_size), range(window_size)))
        offsets: dict = {}
        idxs = [
            offsets.setdefault((abs(p1[0] - p2[0]), abs(p1[1] - p2[1])), len(offsets))
            for p1 in points
            for p2 in points
        ]
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        self.attention_bias_idxs: torch.Tensor  # (N, N) indexes into attention_biases, a buffer
        self.register_buffer(
            "attention_bias_idxs", torch.tensor(idxs).view(len(points), len(points)), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.key_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.key_dim, dim=-1)  # B x heads x N x key_dim
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)  # heads x N x N
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(x.transpose(1, 2).reshape(b, n, -1))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Window attention → depthwise local conv → MLP, on (B, H*W, C)."""

    def __init__(self, dim: int, resolution: Tuple[int, int], num_heads: int, window_size: int,
                 mlp_ratio: float, local_conv_size: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.window_size = window_size
        self.attn = Attention(dim, num_heads, window_size)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.local_conv = Conv2dBN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        b, n, c = x.shape
        ws = self.window_size
        if h == ws and w == ws:
            attn = self.attn(x)
        else:
            windows, padded_hw = window_partition(x.view(b, h, w, c), ws)
            attn = self.attn(windows.view(-1, ws * ws, c)).view(-1, ws, ws, c)
            attn = window_unpartition(attn, ws, padded_hw, (h, w)).view(b, n, c)
        x = x + attn
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w)).view(b, c, n).transpose(1, 2)
        return x + self.mlp(x)


class Stage(nn.Module):
    """`blocks` at one resolution, then an optional PatchMerging into the next stage."""

    def __init__(self, blocks: Sequence[nn.Module], downsample: "PatchMerging | None") -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """Returns the neck output (B, out_chans, H/16, W/16) and the output of the second
    stage (B, H/16, W/16, embed_dims[2]), which the HQ decoder fuses in."""

    def __init__(
        self,
        img_size: int = 1024,
        in_chans: int = 3,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        local_conv_size: int = 3,
        out_chans: int = 256,
    ) -> None:
        super().__init__()
        if len(embed_dims) != 4:
            raise ValueError("TinyViT needs exactly 4 stages (MBConv, then three attention stages)")
        self.img_size = img_size
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        patches = img_size // 4
        num_stages = len(embed_dims)
        self.layers = nn.ModuleList()
        for i in range(num_stages):
            # Stages 0..2 halve the grid; the last merge keeps it, ending at img_size / 16.
            res = patches // 2 ** min(i, num_stages - 2)
            resolution = (res, res)
            downsample = None
            if i < num_stages - 1:
                stride = 1 if i == num_stages - 2 else 2
                downsample = PatchMerging(resolution, embed_dims[i], embed_dims[i + 1], stride)
            blocks: List[nn.Module]
            if i == 0:
                blocks = [MBConv(embed_dims[0], mbconv_expand_ratio) for _ in range(depths[0])]
            else:
                blocks = [
                    TinyViTBlock(embed_dims[i], resolution, num_heads[i], window_sizes[i], mlp_ratio, local_conv_size)
                    for _ in range(depths[i])
                ]
            self.layers.append(Stage(blocks, downsample))
        self.grid = patches // 2 ** (num_stages - 2)
        self.neck = neck(embed_dims[-1], out_chans)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encode images into the image embeddings and the early features of the HQ decoder.

        Arguments:
          x (torch.Tensor): normalised images (B, in_chans, img_size, img_size).

        Returns:
          (torch.Tensor): the neck output (B, out_chans, h, w), h = w = img_size / 16.
          (torch.Tensor): the second stage's output (B, h, w, embed_dims[2]).
        """
        x = self.layers[0](self.patch_embed(x))  # B x (h*w) x C
        x = self.layers[1](x)
        early = x.view(x.shape[0], self.grid, self.grid, -1)
        for layer in self.layers[2:]:
            x = layer(x)
        x = x.view(x.shape[0], self.grid, self.grid, -1).permute(0, 3, 1, 2)
        return self.neck(x), early
