"""SamHQModel: image encoder + prompt encoder + HQ mask decoder, with a batched API
mirroring transformers' SamHQModel (prompts per image, several prompts per image)."""

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn

from ..checkpoint import PretrainedModel
from ..config import PROMPT_CHUNK_SIZE_ACCELERATOR, PROMPT_CHUNK_SIZE_CPU, SamHQConfig
from ..mask_source import MaskSource
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoderHQ
from .prompt_encoder import LABEL_NEGATIVE, LABEL_PAD, LABEL_POSITIVE, PromptEncoder
from .tiny_vit import TinyViT
from .transformer import TwoWayTransformer

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def default_prompt_chunk_size(device: torch.device) -> int:
    """Prompts the decoder takes at once on `device` when the caller does not say."""
    return PROMPT_CHUNK_SIZE_CPU if device.type == "cpu" else PROMPT_CHUNK_SIZE_ACCELERATOR


@dataclass
class SamHQOutput:
    """pred_masks: (B, P, K, 4h, 4w) low-res mask logits (256 x 256 for 1024 inputs);
    iou_scores: (B, P, K) predicted IoU; K is 3 with multimask_output (sorted by IoU,
    best first) unless the mask source is HQ_ONLY, else 1. The image embeddings are returned for reuse
    (the intermediate ones are None when plain SAM was given only image embeddings)."""

    pred_masks: torch.Tensor
    iou_scores: torch.Tensor
    image_embeddings: torch.Tensor
    intermediate_embeddings: Optional[torch.Tensor]


def build_image_encoder(config: SamHQConfig) -> nn.Module:
    v = config.vision_config
    if v.encoder_type == "tiny_vit":
        return TinyViT(
            img_size=v.image_size,
            in_chans=v.num_channels,
            embed_dims=v.tiny_embed_dims,
            depths=v.tiny_depths,
            num_heads=v.tiny_num_heads,
            window_sizes=v.tiny_window_sizes,
            mlp_ratio=v.mlp_ratio,
            out_chans=v.output_channels,
        )
    return ImageEncoderViT(
        img_size=v.image_size,
        patch_size=v.patch_size,
        in_chans=v.num_channels,
        embed_dim=v.hidden_size,
        depth=v.num_hidden_layers,
        num_heads=v.num_attention_heads,
        mlp_ratio=v.mlp_ratio,
        out_chans=v.output_channels,
        qkv_bias=v.qkv_bias,
        layer_norm_eps=v.layer_norm_eps,
        use_abs_pos=v.use_abs_pos,
        use_rel_pos=v.use_rel_pos,
        window_size=v.window_size,
        global_attn_indexes=v.global_attn_indexes,
    )


class SamHQModel(PretrainedModel):
    """SAM-HQ (or plain SAM when `config.mask_decoder_config.hq` is False). Loading and
    saving (`from_pretrained`, `config_from_pretrained`, `save_pretrained`) come from
    `samhq_core.checkpoint.PretrainedModel`."""

    def __init__(self, config: SamHQConfig) -> None:
        config.validate()
        super().__init__(config)
        p, d = config.prompt_encoder_config, config.mask_decoder_config
        self.image_encoder = build_image_encoder(config)
        self.prompt_encoder = PromptEncoder(
            embed_dim=p.hidden_size,
            image_embedding_size=config.embedding_size,
            input_image_size=(p.image_size, p.image_size),
            mask_in_chans=p.mask_input_channels,
        )
        self.mask_decoder = MaskDecoderHQ(
            transformer_dim=d.hidden_size,
            transformer=TwoWayTransformer(
                depth=d.num_hidden_layers,
                embedding_dim=d.hidden_size,
                num_heads=d.num_attention_heads,
                mlp_dim=d.mlp_dim,
                attention_downsample_rate=d.attention_downsample_rate,
            ),
            num_multimask_outputs=d.num_multimask_outputs,
            iou_head_depth=d.iou_head_depth,
            iou_head_hidden_dim=d.iou_head_hidden_dim,
            vit_dim=d.vit_dim,
            hq=d.hq,
        )
        self.pixel_mean: torch.Tensor  # (3, 1, 1) buffers, so that .to(device) moves them and `device` reads them
        self.pixel_std: torch.Tensor
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def get_image_embeddings(self, pixel_values: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """pixel_values (B, 3, S, S) from SamHQProcessor → image embeddings (B, 256, S/16, S/16)
        and intermediate embeddings (B, S/16, S/16, vit_dim): the early encoder features the
        HQ decoder needs. Pass both back to `forward` to reuse them across prompts."""
        size = self.config.vision_config.image_size
        if pixel_values.ndim != 4 or pixel_values.shape[1:] != (3, size, size):
            raise ValueError(f"pixel_values must be (batch, 3, {size}, {size}), got {tuple(pixel_values.shape)}")
        return self.image_encoder(pixel_values)

    def forward(
        self,
        pixel_values: Optional[torch.Tensor] = None,
        input_points: Optional[torch.Tensor] = None,
        input_labels: Optional[torch.Tensor] = None,
        input_boxes: Optional[torch.Tensor] = None,
        input_masks: Optional[torch.Tensor] = None,
        image_embeddings: Optional[torch.Tensor] = None,
        intermediate_embeddings: Optional[torch.Tensor] = None,
        multimask_output: bool = True,
        mask_source: MaskSource = MaskSource.SAM_PLUS_HQ,
        prompt_chunk_size: Optional[int] = None,
        original_sizes: Optional[torch.Tensor] = None,
        reshaped_input_sizes: Optional[torch.Tensor] = None,
    ) -> SamHQOutput:
        """Predict masks for P prompts on each of B images.

        Images come as `pixel_values` (B, 3, S, S), or as `image_embeddings` plus
        `intermediate_embeddings` from `get_image_embeddings`. Prompts, in the S x S input
        frame (SamHQProcessor rescales them):
          input_points (B, P, N, 2) as (x, y), with input_labels (B, P, N): 1 foreground,
            0 background, -1 padding (ignored); labels default to 1.
          input_boxes (B, P, 4) as (x1, y1, x2, y2).
          input_masks (B, P, 4h, 4w) low-res mask logits, e.g. an earlier pred_masks.
        mask_source (`MaskSource`, or its value as a string) picks the mask: SAM's plus the HQ
        term (the official output), the HQ token's alone, or plain SAM's with these weights (the
        baseline of the paper's comparisons).
        Prompts are decoded `prompt_chunk_size` at a time, which bounds memory (roughly 0.1 GB
        of fp32 activations per prompt): by default `default_prompt_chunk_size` of the device.
        original_sizes and reshaped_input_sizes are accepted, and unused, so that the
        processor's whole output can be passed as `model(**inputs)`; post_process_masks
        needs them.
        """
        if (pixel_values is None) == (image_embeddings is None):
            raise ValueError("pass exactly one of pixel_values or image_embeddings")
        if pixel_values is not None:
            image_embeddings, intermediate_embeddings = self.get_image_embeddings(pixel_values)
        elif intermediate_embeddings is None and self.mask_decoder.hq:
            raise ValueError("image_embeddings need their intermediate_embeddings (see get_image_embeddings)")
        try:
            mask_source = MaskSource(mask_source)
        except ValueError:
            raise ValueError(f"mask_source must be one of {', '.join(m.value for m in MaskSource)}, "
                             f"got {mask_source!r}") from None
        if mask_source == MaskSource.HQ_ONLY and not self.mask_decoder.hq:
            raise ValueError("mask_source hq_only needs an HQ checkpoint; this model is plain SAM")
        assert image_embeddings is not None  # one of the two inputs, checked above
        if prompt_chunk_size is not None and prompt_chunk_size < 1:
            raise ValueError(f"prompt_chunk_size must be >= 1, got {prompt_chunk_size}")
        self._check_prompts(image_embeddings.shape[0], input_points, input_labels, input_boxes, input_masks)
        return self.decode_prompts(image_embeddings, intermediate_embeddings, input_points, input_labels, input_boxes,
                                   input_masks, multimask_output, mask_source, prompt_chunk_size)

    def decode_prompts(
        self,
        image_embeddings: torch.Tensor,
        intermediate_embeddings: Optional[torch.Tensor],
        input_points: Optional[torch.Tensor] = None,
        input_labels: Optional[torch.Tensor] = None,
        input_boxes: Optional[torch.Tensor] = None,
        input_masks: Optional[torch.Tensor] = None,
        multimask_output: bool = True,
        mask_source: MaskSource = MaskSource.SAM_PLUS_HQ,
        prompt_chunk_size: Optional[int] = None,
    ) -> SamHQOutput:
        """`forward` from image embeddings, without its checks of the inputs: no host syncs
        and no data-dependent branches, so it runs asynchronously on an accelerator and
        compiles to one graph. For callers that checked their prompts already (the pipeline
        checks every box on its CPU workers); arguments as `forward`'s."""
        batch = image_embeddings.shape[0]
        num_prompts = next(p.shape[1] for p in (input_points, input_labels, input_boxes, input_masks) if p is not None)
        points = None
        if input_points is not None:
            if input_labels is None:
                input_labels = torch.ones(input_points.shape[:-1], dtype=torch.long, device=input_points.device)
            points = (input_points.flatten(0, 1), input_labels.flatten(0, 1))
        boxes = None if input_boxes is None else input_boxes.flatten(0, 1)
        masks = None if input_masks is None else input_masks.flatten(0, 1)
        image_index = torch.arange(batch, device=image_embeddings.device).repeat_interleave(num_prompts)
        pred_masks, iou_scores = self.decode_flat(image_embeddings, intermediate_embeddings, image_index, points, boxes,
                                                  masks, multimask_output, mask_source, prompt_chunk_size)
        return SamHQOutput(pred_masks.view(batch, num_prompts, *pred_masks.shape[1:]),
                           iou_scores.view(batch, num_prompts, -1), image_embeddings, intermediate_embeddings)

    def decode_flat(
        self,
        image_embeddings: torch.Tensor,
        intermediate_embeddings: Optional[torch.Tensor],
        image_index: torch.Tensor,
        points: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        boxes: Optional[torch.Tensor] = None,
        masks: Optional[torch.Tensor] = None,
        multimask_output: bool = True,
        mask_source: MaskSource = MaskSource.SAM_PLUS_HQ,
        prompt_chunk_size: Optional[int] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """N prompts over B images, each naming its image: decoded `prompt_chunk_size` at a
        time whatever image they belong to, so that images with a few boxes each fill a
        chunk together. No checks and no host syncs, as `decode_prompts`.

        image_embeddings (B, C, h, w) and intermediate_embeddings (B, h, w, vit_dim) from
        `get_image_embeddings`; image_index (N,) long: each prompt's image; points
        ((N, T, 2), (N, T) labels), boxes (N, 4) and masks (N, 4h, 4w) as in `forward`.
        Returns mask logits (N, K, 4h, 4w) and IoU predictions (N, K).
        """
        if prompt_chunk_size is None:
            prompt_chunk_size = default_prompt_chunk_size(image_embeddings.device)
        num_prompts = image_index.shape[0]
        sparse = None
        if points is not None or boxes is not None:
            sparse = self.prompt_encoder(points, boxes)  # N x T x C
        image_pe = self.prompt_encoder.get_dense_pe()
        hq_features = None
        if self.mask_decoder.hq and mask_source != MaskSource.SAM_ONLY:
            assert intermediate_embeddings is not None  # checked by forward for HQ models
            hq_features = self.mask_decoder.hq_features(image_embeddings, intermediate_embeddings)  # B x C/8 x 4h x 4w
        one_image = image_embeddings.shape[0] == 1  # then every prompt shares it: broadcast, no gather
        # Otherwise gathered per prompt channels-last, so that the decoder's image tokens
        # (n, h*w, C) are a contiguous view of it, as they are when one image is broadcast.
        channels_last = None if one_image else image_embeddings.permute(0, 2, 3, 1).contiguous()  # B x h x w x C
        out_masks, out_scores = [], []
        for start in range(0, num_prompts, prompt_chunk_size):
            end = min(start + prompt_chunk_size, num_prompts)
            index = image_index[start:end]
            if masks is None:
                dense = self.prompt_encoder.no_mask_embed.weight.view(1, -1, 1, 1)
            else:
                dense = self.prompt_encoder.embed_masks(masks[start:end, None].to(image_embeddings.dtype))
            if sparse is None:
                tokens = image_embeddings.new_zeros(end - start, 0, image_embeddings.shape[1])
            else:
                tokens = sparse[start:end]
            chunk_masks, chunk_scores = self.mask_decoder(
                image_embedding=image_embeddings + dense if channels_last is None else
                (channels_last[index] + dense.permute(0, 2, 3, 1)).permute(0, 3, 1, 2),
                image_pe=image_pe,
                sparse_prompt_embeddings=tokens,
                hq_features=hq_features,
                hq_image_index=None if one_image else index,
                multimask_output=multimask_output,
                mask_source=mask_source,
            )
            out_masks.append(chunk_masks.float())
            out_scores.append(chunk_scores.float())
        return torch.cat(out_masks), torch.cat(out_scores)

    def _check_prompts(
        self,
        batch: int,
        points: Optional[torch.Tensor],
        labels: Optional[torch.Tensor],
        boxes: Optional[torch.Tensor],
        masks: Optional[torch.Tensor],
    ) -> int:
        """Validate prompt shapes and values; return the number of prompts per image. The
        value checks (finite, box order, label values) need the host: they are skipped while
        torch.compile traces, so that a compiled `forward` stays one graph."""
        check_values = not torch.compiler.is_compiling()
        counts = {}
        if points is not None:
            if points.ndim != 4 or points.shape[0] != batch or points.shape[-1] != 2:
                raise ValueError(f"input_points must be (batch={batch}, prompts, points, 2), got {tuple(points.shape)}")
            if check_values:
                _check_finite("input_points", points)
            counts["input_points"] = points.shape[1]
            if labels is not None and check_values:
                if labels.shape != points.shape[:-1]:
                    raise ValueError(f"input_labels must be {tuple(points.shape[:-1])}, got {tuple(labels.shape)}")
                allowed = torch.tensor([LABEL_PAD, LABEL_NEGATIVE, LABEL_POSITIVE], device=labels.device)
                if not torch.isin(labels, allowed).all():
                    raise ValueError("input_labels must be 1 (foreground), 0 (background) or -1 (padding)")
        elif labels is not None:
            raise ValueError("input_labels given without input_points")
        if boxes is not None:
            if boxes.ndim != 3 or boxes.shape[0] != batch or boxes.shape[-1] != 4:
                raise ValueError(f"input_boxes must be (batch={batch}, boxes, 4), got {tuple(boxes.shape)}")
            if check_values:
                _check_finite("input_boxes", boxes)
            if check_values and ((boxes[..., 2] < boxes[..., 0]).any() or (boxes[..., 3] < boxes[..., 1]).any()):
                raise ValueError("input_boxes must be (x1, y1, x2, y2) with x2 >= x1 and y2 >= y1")
            counts["input_boxes"] = boxes.shape[1]
        if masks is not None:
            side = 4 * self.config.embedding_size[0]
            if masks.ndim != 4 or masks.shape[0] != batch or masks.shape[-2:] != (side, side):
                raise ValueError(f"input_masks must be (batch={batch}, prompts, {side}, {side}), got {tuple(masks.shape)}")
            if check_values:
                _check_finite("input_masks", masks)
            counts["input_masks"] = masks.shape[1]
        if not counts:
            raise ValueError("no prompts: pass input_points, input_boxes and/or input_masks")
        if len(set(counts.values())) > 1:
            raise ValueError(f"prompts per image disagree: {counts}")
        num_prompts = next(iter(counts.values()))
        if num_prompts == 0:
            raise ValueError("prompt lists are empty: give at least one prompt per image")
        return num_prompts


def _check_finite(name: str, tensor: torch.Tensor) -> None:
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains NaN or infinite values")
