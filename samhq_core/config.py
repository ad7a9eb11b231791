"""Typed configuration of a SAM-HQ model, with a preset per official variant.

Field names follow the Hugging Face `config.json` of SAM-HQ checkpoints, so those files
read and write directly. Two deliberate departures from transformers' classes:
- `vision_config.encoder_type` selects the TinyViT encoder of Light HQ-SAM (`vit_tiny`),
  which transformers does not implement; its `tiny_*` fields describe that encoder.
- `mask_decoder_config.hq` is False for plain SAM checkpoints (no HQ weights).
The decoder's LayerNorm eps is not configurable: the official model (which the released
checkpoints were trained with) uses torch's default 1e-5 in the two-way transformer and 1e-6
in its 2-d LayerNorms, whatever a transformers config.json says.
"""

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .mask_source import MaskSource

VARIANTS = ("vit_b", "vit_l", "vit_h", "vit_tiny")
# Prompts the decoder takes at once unless told (`SamHQModel.decode_flat`): on a CPU 4 is as
# fast as 1 when the cores are the process's own and holds up best when other processes share
# them (bench/results/cpu_core_neighbour.md); an accelerator wants larger batches.
PROMPT_CHUNK_SIZE_CPU = 4
PROMPT_CHUNK_SIZE_ACCELERATOR = 64
# What sets each official variant's image encoder apart (SamHQVisionConfig fields).
_VISION_PRESETS: Dict[str, Dict[str, Any]] = {
    "vit_b": dict(encoder_type="vit", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  global_attn_indexes=[2, 5, 8, 11]),
    "vit_l": dict(encoder_type="vit", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                  global_attn_indexes=[5, 11, 17, 23]),
    "vit_h": dict(encoder_type="vit", hidden_size=1280, num_hidden_layers=32, num_attention_heads=16,
                  global_attn_indexes=[7, 15, 23, 31]),
    "vit_tiny": dict(encoder_type="tiny_vit", tiny_embed_dims=[64, 128, 160, 320], tiny_depths=[2, 2, 6, 2],
                     tiny_num_heads=[2, 4, 5, 10], tiny_window_sizes=[7, 7, 14, 7]),
}


@dataclass
class SamHQVisionConfig:
    encoder_type: str = "vit"  # "vit" or "tiny_vit"
    hidden_size: int = 768
    output_channels: int = 256
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 1024
    patch_size: int = 16
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    mlp_ratio: float = 4.0
    use_abs_pos: bool = True
    use_rel_pos: bool = True
    window_size: int = 14
    global_attn_indexes: List[int] = field(default_factory=lambda: [2, 5, 8, 11])
    num_pos_feats: int = 128
    tiny_embed_dims: List[int] = field(default_factory=lambda: [64, 128, 160, 320])
    tiny_depths: List[int] = field(default_factory=lambda: [2, 2, 6, 2])
    tiny_num_heads: List[int] = field(default_factory=lambda: [2, 4, 5, 10])
    tiny_window_sizes: List[int] = field(default_factory=lambda: [7, 7, 14, 7])

    @property
    def early_dim(self) -> int:
        """Width of the early encoder features that the HQ decoder fuses in (`vit_dim`).

        Returns:
          (int): tiny_embed_dims[2] for TinyViT, else hidden_size.
        """
        return self.tiny_embed_dims[2] if self.encoder_type == "tiny_vit" else self.hidden_size


@dataclass
class SamHQPromptEncoderConfig:
    hidden_size: int = 256
    image_size: int = 1024
    patch_size: int = 16
    mask_input_channels: int = 16
    num_point_embeddings: int = 4


@dataclass
class SamHQMaskDecoderConfig:
    hidden_size: int = 256
    mlp_dim: int = 2048
    num_hidden_layers: int = 2
    num_attention_heads: int = 8
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    vit_dim: int = 768
    hq: bool = True


_SECTIONS = {
    "vision_config": SamHQVisionConfig,
    "prompt_encoder_config": SamHQPromptEncoderConfig,
    "mask_decoder_config": SamHQMaskDecoderConfig,
}
# Keys that transformers writes and this model has no use for (see the module docstring).
_IGNORED_KEYS = {
    "vision_config": {"hidden_act", "attention_dropout", "initializer_range", "mlp_dim", "scale", "model_type"},
    "prompt_encoder_config": {"hidden_act", "layer_norm_eps", "image_embedding_size", "model_type"},
    "mask_decoder_config": {"hidden_act", "layer_norm_eps", "model_type"},
}

# Generic keys that every transformers PretrainedConfig serialises.
_PRETRAINED_CONFIG_KEYS = {
    "architectures", "output_hidden_states", "output_attentions", "return_dict", "dtype", "torch_dtype",
    "chunk_size_feed_forward", "is_encoder_decoder", "id2label", "label2id", "problem_type", "_name_or_path",
    "transformers_version", "tie_word_embeddings",
}


@dataclass
class SamHQConfig:
    vision_config: SamHQVisionConfig = field(default_factory=SamHQVisionConfig)
    prompt_encoder_config: SamHQPromptEncoderConfig = field(default_factory=SamHQPromptEncoderConfig)
    mask_decoder_config: SamHQMaskDecoderConfig = field(default_factory=SamHQMaskDecoderConfig)
    model_type: str = "sam_hq"
    # The mask source (a MaskSource value) the checkpoint's makers recommend, e.g. "hq_only"
    # for a model whose HQ token was trained alone; None: the official SAM + HQ output.
    mask_source: Optional[str] = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError if the sub-configs disagree with each other."""
        v, p, d = self.vision_config, self.prompt_encoder_config, self.mask_decoder_config
        problems = []
        if self.mask_source is not None and self.mask_source not in {m.value for m in MaskSource}:
            problems.append(f"mask_source must be one of {', '.join(m.value for m in MaskSource)} or null, got "
                            f"{self.mask_source!r}")
        if self.mask_source == MaskSource.HQ_ONLY and not d.hq:
            problems.append("mask_source hq_only needs an HQ mask decoder (mask_decoder_config.hq)")
        if v.encoder_type not in ("vit", "tiny_vit"):
            problems.append(f"vision_config.encoder_type must be 'vit' or 'tiny_vit', got {v.encoder_type!r}")
        if p.image_size != v.image_size:
            problems.append(f"prompt_encoder_config.image_size ({p.image_size}) != vision_config.image_size ({v.image_size})")
        if v.image_size % 16:
            problems.append(f"vision_config.image_size ({v.image_size}) must be a multiple of 16")
        if p.patch_size != 16 or (v.encoder_type == "vit" and v.patch_size != 16):
            problems.append("SAM's decoder upsamples 4x to a quarter of the input: patch_size must be 16")
        if d.hq and d.vit_dim != v.early_dim:
            problems.append(f"mask_decoder_config.vit_dim ({d.vit_dim}) != encoder early feature width ({v.early_dim})")
        if v.output_channels != p.hidden_size or p.hidden_size != d.hidden_size:
            problems.append("vision output_channels, prompt encoder and mask decoder hidden_size must be equal")
        if v.encoder_type == "vit":
            if not v.global_attn_indexes or max(v.global_attn_indexes) >= v.num_hidden_layers:
                problems.append("vision_config.global_attn_indexes must be non-empty block indexes < num_hidden_layers")
        # Fixed by SAM's architecture (HF configs carry them); other values would be ignored.
        if v.num_pos_feats != p.hidden_size // 2:
            problems.append(f"vision_config.num_pos_feats ({v.num_pos_feats}) must be half the prompt encoder's "
                            f"hidden_size ({p.hidden_size // 2}): SAM's positional encoding has that many features")
        if p.num_point_embeddings != 4:
            problems.append(f"prompt_encoder_config.num_point_embeddings ({p.num_point_embeddings}) must be 4: SAM has "
                            "four point embeddings (background, foreground, two box corners)")
        if problems:
            raise ValueError("invalid SamHQConfig: " + "; ".join(problems))

    @classmethod
    def from_variant(cls, variant: str, **vision_overrides: Any) -> "SamHQConfig":
        """Preset of an official variant: vit_b, vit_l, vit_h or vit_tiny.

        Arguments:
          variant (str): the variant's name.
          **vision_overrides (Any): SamHQVisionConfig fields that replace the preset's (e.g.
            image_size); the prompt encoder's image size and the decoder's vit_dim follow them.

        Returns:
          (SamHQConfig): the config, with the HQ decoder.

        Raises:
          ValueError: for an unknown variant, or overrides that make the config invalid.
        """
        if variant not in _VISION_PRESETS:
            raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        vision = SamHQVisionConfig(**{**_VISION_PRESETS[variant], **vision_overrides})
        return cls(
            vision_config=vision,
            prompt_encoder_config=SamHQPromptEncoderConfig(image_size=vision.image_size),
            mask_decoder_config=SamHQMaskDecoderConfig(vit_dim=vision.early_dim),
        )

    @property
    def variant(self) -> Optional[str]:
        """The official variant whose image encoder this config has (at any input size).

        Returns:
          (str or None): vit_b, vit_l, vit_h or vit_tiny, or None for an encoder of another
            shape.
        """
        v = self.vision_config
        return next((name for name, preset in _VISION_PRESETS.items()
                     if all(getattr(v, key) == value for key, value in preset.items())), None)

    @property
    def default_mask_source(self) -> MaskSource:
        """The mask source to use when the caller names none: the checkpoint's recommendation
        (`mask_source`), else the official SAM + HQ output.

        Returns:
          (MaskSource): the mask source.
        """
        return MaskSource(self.mask_source) if self.mask_source is not None else MaskSource.SAM_PLUS_HQ

    @property
    def embedding_size(self) -> Tuple[int, int]:
        """Spatial size of the image embedding: a sixteenth of the input size per side.

        Returns:
          (tuple(int, int)): (h, w).
        """
        side = self.vision_config.image_size // 16
        return side, side

    def to_dict(self) -> Dict[str, Any]:
        """The config as plain data, as `save` writes it and `from_dict` reads it.

        Returns:
          (dict): one nested dict per sub-config, plus model_type.
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "SamHQConfig":
        """Build from a dict such as a SAM-HQ `config.json`; unknown keys are an error. Keys
        that transformers writes and this model has no use for are dropped.

        Arguments:
          data (dict): the config, with model_type "sam_hq" or "sam" (or none), the sections
            vision_config, prompt_encoder_config and mask_decoder_config, and optionally the
            recommended mask_source.

        Returns:
          (SamHQConfig): the validated config.

        Raises:
          ValueError: for another model_type, unknown keys, or sub-configs that disagree.
        """
        if data.get("model_type", "sam_hq") not in ("sam_hq", "sam"):
            raise ValueError(f"config model_type is {data['model_type']!r}, expected 'sam_hq'")
        kwargs: Dict[str, Any] = {}
        unknown = []
        for section, section_cls in _SECTIONS.items():
            values = {k: v for k, v in (data.get(section) or {}).items() if k not in _PRETRAINED_CONFIG_KEYS}
            known = {f.name for f in dataclasses.fields(section_cls)}
            kept = {k: v for k, v in values.items() if k in known}
            unknown += [f"{section}.{k}" for k in values if k not in known and k not in _IGNORED_KEYS[section]]
            kwargs[section] = section_cls(**kept)
        if unknown:
            raise ValueError(f"config has keys this model does not know: {', '.join(sorted(unknown))}")
        return cls(**kwargs, mask_source=data.get("mask_source"))

    def save(self, path: str) -> None:
        """Write the config as JSON (`to_dict`, keys sorted), in the layout of a `config.json`.

        Arguments:
          path (str): the file to write.
        """
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)

    @classmethod
    def load(cls, path: str) -> "SamHQConfig":
        """Read a config JSON file, such as `save` or transformers writes (`from_dict`).

        Arguments:
          path (str): the file to read.

        Returns:
          (SamHQConfig): the validated config.
        """
        with open(path) as f:
            return cls.from_dict(json.load(f))
