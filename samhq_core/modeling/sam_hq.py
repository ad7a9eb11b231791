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
    """Prompts the decoder takes at once on `device` when the caller does not say: few on a
    CPU, many on an accelerator, which wants larger batches.

    Arguments:
      device (torch.device): where the model runs.

    Returns:
      (int): PROMPT_CHUNK_SIZE_CPU on a CPU, else PROMPT_CHUNK_SIZE_ACCELERATOR.
    """
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
    """The image encoder that `config.vision_config` describes: Light HQ-SAM's TinyViT for
    encoder_type "tiny_vit", else SAM's ViT.

    Arguments:
      config (SamHQConfig): the model's config.

    Returns:
      (nn.Module): a TinyViT or an ImageEncoderViT, freshly initialised; called on pixel values
        (B, 3, S, S) it returns the image embeddings and the early features that the HQ decoder
        fuses in.
    """
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
        """The device the model is on, read from its pixel normalisation buffers.

        Returns:
          (torch.device): where the model's tensors are.
        """
        return self.pixel_mean.device

    def get_image_embeddings(self, pixel_values: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Run the image encoder once, so that its outputs can be reused across prompts: pass
        both back to `forward` (as image_embeddings and intermediate_embeddings).

        Arguments:
          pixel_values (torch.Tensor): images (B, 3, S, S) as SamHQProcessor makes them.

        Returns:
          (torch.Tensor): image embeddings (B, 256, S/16, S/16).
          (torch.Tensor): intermediate embeddings (B, S/16, S/16, vit_dim): the early encoder
            features the HQ decoder needs.

        Raises:
          ValueError: if pixel_values is not (B, 3, S, S) for the model's input size S.
        """
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
        """Predict masks for P prompts on each of B images. Images come as pixel values, or as
        the image and intermediate embeddings of `get_image_embeddings`; prompts are points,
        boxes and/or low-res masks, at least one kind, in the S x S input frame (SamHQProcessor
        rescales them), the same number P for every image. h x w is the image embedding's
        grid, S/16 x S/16.

        Arguments:
          pixel_values (torch.Tensor or None): images (B, 3, S, S); exactly one of this and
            image_embeddings is given.
          input_points (torch.Tensor or None): points (B, P, N, 2) as (x, y).
          input_labels (torch.Tensor or None): the points' labels (B, P, N): 1 foreground,
            0 background, -1 padding (ignored); default all 1.
          input_boxes (torch.Tensor or None): boxes (B, P, 4) as (x1, y1, x2, y2).
          input_masks (torch.Tensor or None): low-res mask logits (B, P, 4h, 4w), e.g. an
            earlier pred_masks.
          image_embeddings (torch.Tensor or None): (B, 256, h, w) from `get_image_embeddings`,
            instead of pixel_values.
          intermediate_embeddings (torch.Tensor or None): (B, h, w, vit_dim) from
            `get_image_embeddings`, with image_embeddings; an HQ model needs them.
          multimask_output (bool): whether each prompt gets 3 candidate masks (sorted by
            predicted IoU, best first) or one.
          mask_source (MaskSource or str): which mask, as the enum or its value: SAM's plus the
            HQ term (the official output), the HQ token's alone (HQ_ONLY, one mask per prompt
            also with multimask_output), or plain SAM's with these weights (the baseline of the
            paper's comparisons).
          prompt_chunk_size (int or None): prompts decoded at a time, which bounds memory
            (roughly 0.1 GB of fp32 activations per prompt); by default
            `default_prompt_chunk_size` of the device.
          original_sizes (torch.Tensor or None): accepted and unused, so that the processor's
            whole output can be passed as `model(**inputs)`; post_process_masks needs it.
          reshaped_input_sizes (torch.Tensor or None): as original_sizes.

        Returns:
          (SamHQOutput): pred_masks (B, P, K, 4h, 4w) low-res mask logits, iou_scores (B, P, K),
            and the image and intermediate embeddings, for reuse.

        Raises:
          ValueError: for inputs the model cannot take: not exactly one of pixel_values and
            image_embeddings, an HQ model's image_embeddings without intermediate_embeddings,
            an unknown mask_source or HQ_ONLY on plain SAM, prompt_chunk_size < 1, no prompts
            or none per image, input_labels without input_points, prompts of the wrong shape
            or of different counts, and (outside torch.compile's tracing) non-finite values,
            boxes with x2 < x1 or y2 < y1 and labels other than 1, 0 and -1.
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
        checks every box on its CPU workers). The arguments mean what `forward`'s do; at least
        one kind of prompt must be given.

        Arguments:
          image_embeddings (torch.Tensor): (B, 256, h, w) from `get_image_embeddings`.
          intermediate_embeddings (torch.Tensor or None): (B, h, w, vit_dim) from
            `get_image_embeddings`; None only for plain SAM or mask_source SAM_ONLY.
          input_points (torch.Tensor or None): points (B, P, N, 2) as (x, y).
          input_labels (torch.Tensor or None): the points' labels (B, P, N); default all 1.
          input_boxes (torch.Tensor or None): boxes (B, P, 4) as (x1, y1, x2, y2).
          input_masks (torch.Tensor or None): low-res mask logits (B, P, 4h, 4w).
          multimask_output (bool): 3 candidate masks per prompt, or one.
          mask_source (MaskSource): which mask each prompt gets.
          prompt_chunk_size (int or None): prompts decoded at a time; by default
            `default_prompt_chunk_size` of the device.

        Returns:
          (SamHQOutput): pred_masks (B, P, K, 4h, 4w), iou_scores (B, P, K) and the embeddings
            it was given.
        """
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
        """Decode N prompts over B images, each naming its image: `prompt_chunk_size` at a
        time whatever image they belong to, so that images with a few boxes each fill a
        chunk together. No checks and no host syncs, as `decode_prompts`.

        Arguments:
          image_embeddings (torch.Tensor): (B, C, h, w) from `get_image_embeddings`.
          intermediate_embeddings (torch.Tensor or None): (B, h, w, vit_dim) from
            `get_image_embeddings`; None only for plain SAM or mask_source SAM_ONLY.
          image_index (torch.Tensor): (N,) long: each prompt's image among the B.
          points (tuple(torch.Tensor, torch.Tensor) or None): coordinates (N, T, 2) and
            labels (N, T), as in `forward`.
          boxes (torch.Tensor or None): (N, 4), as in `forward`.
          masks (torch.Tensor or None): low-res mask logits (N, 4h, 4w), as in `forward`.
          multimask_output (bool): 3 candidate masks per prompt, or one.
          mask_source (MaskSource): which mask each prompt gets.
          prompt_chunk_size (int or None): prompts decoded at a time; by default
            `default_prompt_chunk_size` of the device.

        Returns:
          (torch.Tensor): mask logits (N, K, 4h, 4w), float32.
          (torch.Tensor): IoU predictions (N, K), float32.
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
