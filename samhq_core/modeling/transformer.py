"""Two-way transformer of the mask decoder: prompt tokens and image tokens attend to
each other.

The image side may have batch 1 while the prompt side has batch n: every prompt of one
image starts from the same image tokens, so the first layer's image-side projections are
computed once and broadcast instead of once per prompt.
"""

from typing import Tuple, Type

from torch import Tensor, nn
from torch.nn import functional as F

from .common import MLPBlock


class TwoWayTransformer(nn.Module):
    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: Type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        layer_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                activation=activation,
                attention_downsample_rate=attention_downsample_rate,
                layer_norm_eps=layer_norm_eps,
                skip_first_layer_pe=(i == 0),
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim, eps=layer_norm_eps)

    def forward(self, image_embedding: Tensor, image_pe: Tensor, point_embedding: Tensor) -> Tuple[Tensor, Tensor]:
        """Let n prompts' tokens and the image tokens attend to each other. An image side of
        batch 1 is shared by all n prompts.

        Arguments:
          image_embedding (torch.Tensor): (1 or n, C, h, w).
          image_pe (torch.Tensor): the image's positional encoding (1, C, h, w).
          point_embedding (torch.Tensor): the tokens (n, T, C), output and prompt tokens.

        Returns:
          (torch.Tensor): the updated tokens (n, T, C).
          (torch.Tensor): the updated image tokens (n, h*w, C).
        """
        keys = image_embedding.flatten(2).transpose(1, 2)  # B x hw x C
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        attn_out = self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
        queries = self.norm_final_attn(queries + attn_out)
        return queries, keys


class TwoWayAttentionBlock(nn.Module):
    """Self-attention of tokens, tokens→image cross-attention, token MLP, image→tokens
    cross-attention; each followed by a residual and LayerNorm."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: Type[nn.Module],
        attention_downsample_rate: int,
        layer_norm_eps: float,
        skip_first_layer_pe: bool,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim, eps=layer_norm_eps)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim, eps=layer_norm_eps)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
        self.norm3 = nn.LayerNorm(embedding_dim, eps=layer_norm_eps)
        self.norm4 = nn.LayerNorm(embedding_dim, eps=layer_norm_eps)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor) -> Tuple[Tensor, Tensor]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, k, keys))
        queries = self.norm3(queries + self.mlp(queries))

        keys = self.norm4(keys + self.cross_attn_image_to_token(k, queries + query_pe, queries))
        return queries, keys


class Attention(nn.Module):
    """Multi-head attention whose q/k/v projections may shrink the width by
    `downsample_rate`. Inputs broadcast over the batch dimension."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        internal_dim = embedding_dim // downsample_rate
        if internal_dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide the attention width ({internal_dim})")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embedding_dim, internal_dim)
        self.k_proj = nn.Linear(embedding_dim, internal_dim)
        self.v_proj = nn.Linear(embedding_dim, internal_dim)
        self.out_proj = nn.Linear(internal_dim, embedding_dim)

    def _split_heads(self, x: Tensor, batch: int) -> Tensor:
        b, n, c = x.shape
        x = x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)
        return x.expand(batch, -1, -1, -1)  # B x heads x tokens x head_dim

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        batch = max(q.shape[0], k.shape[0], v.shape[0])
        q = self._split_heads(self.q_proj(q), batch)
        k = self._split_heads(self.k_proj(k), batch)
        v = self._split_heads(self.v_proj(v), batch)
        out = F.scaled_dot_product_attention(q, k, v)
        b, heads, tokens, head_dim = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, tokens, heads * head_dim))
