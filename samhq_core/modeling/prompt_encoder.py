"""Prompt encoder: points, boxes and low-res masks → sparse and dense prompt embeddings.

Its math stays in fp32 under autocast: random Fourier features of pixel coordinates lose
whole pixels of precision in bf16.
"""

import math
from typing import Optional, Tuple

import torch
from torch import nn

from .common import LayerNorm2d

# Point labels, as in the official implementation.
LABEL_PAD = -1
LABEL_NEGATIVE = 0
LABEL_POSITIVE = 1


class PositionEmbeddingRandom(nn.Module):
    """Positional encoding with random spatial frequencies (a fixed Gaussian matrix)."""

    positional_encoding_gaussian_matrix: torch.Tensor  # (2, num_pos_feats), a buffer

    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn((2, num_pos_feats)))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        """coords in [0, 1], (..., 2) as (x, y) → (..., 2 * num_pos_feats)."""
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def dense(self, size: Tuple[int, int]) -> torch.Tensor:
        """Encoding of every cell centre of an (h, w) grid → (C, h, w)."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # h x w x 2
        return self._encode(grid).permute(2, 0, 1)

    def forward(self, coords: torch.Tensor, image_size: Tuple[int, int]) -> torch.Tensor:
        """Pixel coordinates (..., 2) in an (h, w) frame → (..., C)."""
        # Divided by Python numbers, as the official encoder does: a tensor of the sizes would be a
        # host-to-device copy, which syncs.
        coords = coords.float().clone()  # ... x 2
        coords[..., 0] = coords[..., 0] / image_size[1]
        coords[..., 1] = coords[..., 1] / image_size[0]
        return self._encode(coords)


class PromptEncoder(nn.Module):
    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: Tuple[int, int],
        input_image_size: Tuple[int, int],
        mask_in_chans: int,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # negative point, positive point, box top-left, box bottom-right
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image-embedding grid, at its cell centres.

        Returns:
          (torch.Tensor): (1, C, h, w).
        """
        return self.pe_layer.dense(self.image_embedding_size).unsqueeze(0)

    def embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """Embed points: their positional encoding plus the embedding of their label; padding
        points (label -1) become the not-a-point token.

        Arguments:
          points (torch.Tensor): (..., N, 2) as (x, y), in the input frame.
          labels (torch.Tensor): (..., N): 1 foreground, 0 background, -1 padding.
          pad (bool): append a not-a-point token, as the official model does when no box
            accompanies the points.

        Returns:
          (torch.Tensor): (..., N [+1], C).
        """
        embedding = self.pe_layer(points + 0.5, self.input_image_size)  # shift to pixel centres
        labels = labels[..., None]
        embedding = torch.where(
            labels == LABEL_PAD,
            self.not_a_point_embed.weight,
            embedding
            + (labels == LABEL_NEGATIVE) * self._point_embedding(0)
            + (labels == LABEL_POSITIVE) * self._point_embedding(1),
        )
        if pad:
            pad_token = self.not_a_point_embed.weight.expand(*embedding.shape[:-2], 1, -1)
            embedding = torch.cat([embedding, pad_token], dim=-2)
        return embedding

    def embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """Embed boxes as two corner tokens each: top-left and bottom-right.

        Arguments:
          boxes (torch.Tensor): (..., 4) as x1, y1, x2, y2, in the input frame.

        Returns:
          (torch.Tensor): corner tokens (..., 2, C).
        """
        corners = (boxes + 0.5).reshape(*boxes.shape[:-1], 2, 2)
        embedding = self.pe_layer(corners, self.input_image_size)
        corner_types = torch.cat([self._point_embedding(2), self._point_embedding(3)])
        return embedding + corner_types

    def _point_embedding(self, kind: int) -> torch.Tensor:
        """(1, C): 0 background point, 1 foreground point, 2 and 3 a box's corners."""
        embedding = self.point_embeddings[kind]
        assert isinstance(embedding, nn.Embedding)
        return embedding.weight

    def embed_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """Embed low-res masks as dense embeddings, added to the image embedding.

        Arguments:
          masks (torch.Tensor): low-res mask logits (N, 1, 4h, 4w).

        Returns:
          (torch.Tensor): dense embeddings (N, C, h, w).
        """
        return self.mask_downscaling(masks)

    def forward(
        self,
        points: Optional[Tuple[torch.Tensor, torch.Tensor]],
        boxes: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """Sparse embeddings for prompts with leading dims (...), computed in fp32 also under
        autocast; points first, then the two box corners, as in the official model.

        Arguments:
          points (tuple(torch.Tensor, torch.Tensor) or None): coordinates (..., N, 2) in the
            input frame and labels (..., N), as `embed_points` takes them.
          boxes (torch.Tensor or None): (..., 4) as x1, y1, x2, y2, in the input frame. At
            least one of points and boxes is given.

        Returns:
          (torch.Tensor): (..., T, C): T = N + 2 with a box, N + 1 without.
        """
        with torch.autocast(device_type=self.no_mask_embed.weight.device.type, enabled=False):
            parts = []
            if points is not None:
                parts.append(self.embed_points(points[0].float(), points[1], pad=boxes is None))
            if boxes is not None:
                parts.append(self.embed_boxes(boxes.float()))
            return torch.cat(parts, dim=-2)
