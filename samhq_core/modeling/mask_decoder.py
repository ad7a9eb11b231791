"""HQ mask decoder: SAM's mask decoder plus the HQ output token, whose mask is read off
features that fuse the early ViT block with the final image embedding.

Built with `hq=False` it is SAM's plain mask decoder (for baseline SAM checkpoints).
"""

from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from ..mask_source import MaskSource
from .common import MLP, LayerNorm2d
from .transformer import TwoWayTransformer


class MaskDecoderHQ(nn.Module):
    def __init__(
        self,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        vit_dim: int = 768,
        hq: bool = True,
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)
        self.hq = hq
        if hq:
            self.hf_token = nn.Embedding(1, transformer_dim)
            self.hf_mlp = MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            self.compress_vit_feat = nn.Sequential(
                nn.ConvTranspose2d(vit_dim, transformer_dim, kernel_size=2, stride=2),
                LayerNorm2d(transformer_dim),
                nn.GELU(),
                nn.ConvTranspose2d(transformer_dim, transformer_dim // 8, kernel_size=2, stride=2),
            )
            self.embedding_encoder = nn.Sequential(
                nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
                LayerNorm2d(transformer_dim // 4),
                nn.GELU(),
                nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            )
            self.embedding_maskfeature = nn.Sequential(
                nn.Conv2d(transformer_dim // 8, transformer_dim // 4, 3, 1, 1),
                LayerNorm2d(transformer_dim // 4),
                nn.GELU(),
                nn.Conv2d(transformer_dim // 4, transformer_dim // 8, 3, 1, 1),
            )

    def hq_features(self, image_embeddings: torch.Tensor, early_embeddings: torch.Tensor) -> torch.Tensor:
        """Per-image HQ features, computed once per image and shared by all its prompts: the
        final image embedding fused with the early encoder features.

        Arguments:
          image_embeddings (torch.Tensor): (B, C, h, w).
          early_embeddings (torch.Tensor): (B, h, w, vit_dim).

        Returns:
          (torch.Tensor): (B, C/8, 4h, 4w).
        """
        return self.embedding_encoder(image_embeddings) + self.compress_vit_feat(early_embeddings.permute(0, 3, 1, 2))

    def forward(
        self,
        image_embedding: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        hq_features: Optional[torch.Tensor],
        multimask_output: bool,
        mask_source: MaskSource,
        hq_image_index: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Masks for n prompts on one image (or each on its own image, with n embeddings and
        `hq_image_index`).

        Arguments:
          image_embedding (torch.Tensor): (1 or n, C, h, w), the image embedding plus dense
            prompt embeddings.
          image_pe (torch.Tensor): the positional encoding (1, C, h, w).
          sparse_prompt_embeddings (torch.Tensor): (n, T, C).
          hq_features (torch.Tensor or None): (B, C/8, 4h, 4w): the images' HQ features
            (`hq_features`); None for a plain SAM decoder.
          multimask_output (bool): 3 candidate masks per prompt, or one.
          mask_source (MaskSource): which mask each prompt gets; SAM_ONLY leaves the HQ token
            out of the output tokens, so that the masks are exactly plain SAM's.
          hq_image_index (torch.Tensor or None): (n,) each prompt's image among the B; None
            when B is 1 (one image's features, shared by all prompts).

        Returns:
          (torch.Tensor): mask logits (n, K, 4h, 4w): K = 3 candidates sorted by IoU with
            multimask_output (the first is the official output), else K = 1; K = 1 also for
            HQ_ONLY.
          (torch.Tensor): IoU predictions (n, K).
        """
        n = sparse_prompt_embeddings.shape[0]
        token_weights = [self.iou_token.weight, self.mask_tokens.weight]
        with_hq = self.hq and mask_source != MaskSource.SAM_ONLY
        if with_hq:  # without the HQ token in the sequence this is exactly SAM
            token_weights.append(self.hf_token.weight)
        output_tokens = torch.cat(token_weights).to(sparse_prompt_embeddings.dtype)
        tokens = torch.cat([output_tokens.expand(n, -1, -1), sparse_prompt_embeddings], dim=1)

        hs, keys = self.transformer(image_embedding, image_pe, tokens)
        iou_pred = self.iou_prediction_head(hs[:, 0])  # n x num_mask_tokens
        _, c, h, w = image_embedding.shape
        # Image tokens (n, hw, C) viewed as a channels-last (n, C, h, w) image: no copy.
        upscaled = self.output_upscaling(keys.view(n, h, w, c).permute(0, 3, 1, 2))  # n x C/8 x 4h x 4w

        if multimask_output:
            iou_pred, order = iou_pred[:, 1 : self.num_mask_tokens].sort(dim=1, descending=True, stable=True)
            token_ids = order + 1
        else:
            iou_pred = iou_pred[:, :1]
            token_ids = torch.zeros(n, 1, dtype=torch.long, device=iou_pred.device)

        if mask_source == MaskSource.HQ_ONLY:
            return self._hq_mask(hs, upscaled, hq_features, hq_image_index), iou_pred[:, :1]
        masks = self._sam_masks(hs, upscaled, token_ids, multimask_output)
        if with_hq:
            masks = masks + self._hq_mask(hs, upscaled, hq_features, hq_image_index)
        return masks, iou_pred

    def _sam_masks(
        self, hs: torch.Tensor, upscaled: torch.Tensor, token_ids: torch.Tensor, multimask_output: bool
    ) -> torch.Tensor:
        """SAM masks of the mask tokens in token_ids (n, K) → (n, K, H, W)."""
        first = 1 if multimask_output else 0
        count = self.num_multimask_outputs if multimask_output else 1
        hyper = torch.stack(
            [self.output_hypernetworks_mlps[i](hs[:, 1 + i]) for i in range(first, first + count)], dim=1
        )  # n x count x C/8
        hyper = hyper.gather(1, (token_ids - first)[..., None].expand(-1, -1, hyper.shape[-1]))
        n, _, h, w = upscaled.shape
        return (hyper @ _pixels_by_channels(upscaled).transpose(1, 2)).view(n, -1, h, w)

    def _hq_mask(self, hs: torch.Tensor, upscaled: torch.Tensor, hq_features: Optional[torch.Tensor],
                 image_index: Optional[torch.Tensor]) -> torch.Tensor:
        """The HQ token's mask (n, 1, H, W).

        Its hypernetwork vector multiplies the output of embedding_maskfeature's last conv,
        which is linear, so the vector is folded into that conv per prompt: a 3x3 conv to a
        single channel, computed as one matmul of every pixel with the 9 folded taps followed
        by a shifted sum of the 9 tap maps. hq_features stay shared per image: with prompts of
        several images, the vectors meet every image's features (B x n maps of H x W, fewer
        bytes than n copies of the C/8 feature channels while B < C/8) and each prompt keeps
        its own image's map.
        """
        if hq_features is None:
            raise ValueError("mask_source hq_only needs an HQ checkpoint; this model is plain SAM")
        hyper = self.hf_mlp(hs[:, self.num_mask_tokens + 1])  # n x C/8
        hidden = self.embedding_maskfeature[:3](upscaled)  # n x C/4 x H x W
        last_conv = self.embedding_maskfeature[3]
        n, c_hidden, h, w = hidden.shape
        kernel = last_conv.weight.to(hyper.dtype)  # C/8 x C/4 x 3 x 3
        taps = torch.einsum("no,oikl->nikl", hyper, kernel).reshape(n, c_hidden, -1)  # n x C/4 x 9
        tap_maps = (_pixels_by_channels(hidden) @ taps).view(n, h, w, 3, 3)
        tap_maps = F.pad(tap_maps, (0, 0, 0, 0, 1, 1, 1, 1))  # zero padding of the 3x3 conv
        masks = tap_maps[:, :h, :w, 0, 0]
        for i, j in [(i, j) for i in range(3) for j in range(3)][1:]:  # the taps in order, as a running sum
            masks = masks + tap_maps[:, i : i + h, j : j + w, i, j]
        bias = hyper @ last_conv.bias.to(hyper.dtype)  # n
        features = hq_features.flatten(2).to(hyper.dtype)  # B x C/8 x HW
        if image_index is None:  # one image's features, shared by all n prompts
            shared = hyper @ features[0]  # n x HW
        else:
            shared = (hyper @ features)[image_index, torch.arange(n, device=hyper.device)]  # B x n x HW → n x HW
        return (masks.reshape(n, h * w) + shared + bias[:, None]).view(n, 1, h, w)


def _pixels_by_channels(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, H*W, C); a view when x is channels-last."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])
