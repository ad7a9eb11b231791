"""Checkpoint loading and saving (`PretrainedModel`); where the files come from is
`checkpoint_sources`'s.

Formats:
- official SysCV / segment-anything `.pth` state dicts (SAM-HQ or plain SAM), read with
  `torch.load(weights_only=True)` so that a checkpoint can never execute code;
- Hugging Face layout: a directory with `config.json` + `model.safetensors`, key names as
  transformers' `convert_samhq_to_hf.py` writes them.
Sources are local paths, any fsspec URL (s3://, gs://, https://, file://), whose remote files
are downloaded once into a local cache, or Hugging Face Hub model ids (`org/name`,
`org/name@revision`; see `checkpoint_sources.hub_model` for how one is told from a local
path), which go through huggingface_hub and its cache (HF_HOME, HF_HUB_OFFLINE, HF_TOKEN).
"""

import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple, Type, TypeVar

import fsspec
import torch
from fsspec.implementations.local import LocalFileSystem
from safetensors.torch import save_file
from torch import nn

from .checkpoint_sources import HF_CONFIG, HF_WEIGHTS, WEIGHTS_SUFFIXES, fetch, file_sha256, hub_header_source, hub_model
from .config import SamHQConfig
from .weights_file import read_header_tensors, read_weights

# Official key fragment → HF key fragment, applied in order as plain substring replacements.
_HF_RENAMES: List[Tuple[str, str]] = [
    ("iou_prediction_head.layers.0", "iou_prediction_head.proj_in"),
    ("iou_prediction_head.layers.1", "iou_prediction_head.layers.0"),
    ("iou_prediction_head.layers.2", "iou_prediction_head.proj_out"),
    ("mask_decoder.output_upscaling.0", "mask_decoder.upscale_conv1"),
    ("mask_decoder.output_upscaling.1", "mask_decoder.upscale_layer_norm"),
    ("mask_decoder.output_upscaling.3", "mask_decoder.upscale_conv2"),
    ("mask_downscaling.0", "mask_embed.conv1"),
    ("mask_downscaling.1", "mask_embed.layer_norm1"),
    ("mask_downscaling.3", "mask_embed.conv2"),
    ("mask_downscaling.4", "mask_embed.layer_norm2"),
    ("mask_downscaling.6", "mask_embed.conv3"),
    ("point_embeddings", "point_embed"),
    ("pe_layer.positional_encoding_gaussian_matrix", "shared_embedding.positional_embedding"),
    ("image_encoder", "vision_encoder"),
    ("neck.0", "neck.conv1"),
    ("neck.1", "neck.layer_norm1"),
    ("neck.2", "neck.conv2"),
    ("neck.3", "neck.layer_norm2"),
    ("patch_embed.proj", "patch_embed.projection"),
    (".norm", ".layer_norm"),
    ("blocks", "layers"),
    ("mask_decoder.hf_token", "mask_decoder.hq_token"),
    ("mask_decoder.compress_vit_feat.0", "mask_decoder.compress_vit_conv1"),
    ("mask_decoder.compress_vit_feat.1", "mask_decoder.compress_vit_norm"),
    ("mask_decoder.compress_vit_feat.3", "mask_decoder.compress_vit_conv2"),
    ("mask_decoder.embedding_encoder.0", "mask_decoder.encoder_conv1"),
    ("mask_decoder.embedding_encoder.1", "mask_decoder.encoder_norm"),
    ("mask_decoder.embedding_encoder.3", "mask_decoder.encoder_conv2"),
    ("mask_decoder.embedding_maskfeature.0", "mask_decoder.mask_conv1"),
    ("mask_decoder.embedding_maskfeature.1", "mask_decoder.mask_norm"),
    ("mask_decoder.embedding_maskfeature.3", "mask_decoder.mask_conv2"),
    ("mask_decoder.hf_mlp", "mask_decoder.hq_mask_mlp"),
] + [
    (f"{mlp}.layers.{i}", f"{mlp}.{new}")
    for mlp in [f"output_hypernetworks_mlps.{j}" for j in range(4)] + ["hq_mask_mlp"]
    for i, new in ((0, "proj_in"), (1, "layers.0"), (2, "proj_out"))
]
_HF_POSITIONAL = "prompt_encoder.shared_embedding.positional_embedding"
_HF_POSITIONAL_ALIAS = "shared_image_embedding.positional_embedding"
# In official checkpoints but unused by the model: TinyViT's classification head, SAM's
# normalisation constants.
_UNUSED_KEYS = re.compile(r"^(image_encoder\.(norm_head|head)\.|pixel_mean$|pixel_std$)")


def to_hf_key(key: str) -> str:
    """Rename an official state-dict key to the key transformers' SAM-HQ conversion gives it.

    Arguments:
      key (str): a key of the official (SysCV / segment-anything) layout.

    Returns:
      (str): the key in the HF layout.
    """
    for old, new in _HF_RENAMES:
        if old in key:
            key = key.replace(old, new)
    return key


def from_hf_state_dict(state: Dict[str, torch.Tensor], model_keys: List[str]) -> Dict[str, torch.Tensor]:
    """Rename an HF-layout state dict to this model's (official) key names. The positional
    encoding's alias that transformers also writes is used only where the prompt encoder's own
    key is missing.

    Arguments:
      state (dict(str, torch.Tensor)): the HF-layout state dict; it is not modified.
      model_keys (list(str)): the model's state-dict keys, in the official layout.

    Returns:
      (dict(str, torch.Tensor)): the same tensors under the official key names; keys that no
        model key maps to keep their names.
    """
    state = dict(state)
    alias = state.pop(_HF_POSITIONAL_ALIAS, None)
    if alias is not None:
        state.setdefault(_HF_POSITIONAL, alias)
    to_official = {to_hf_key(k): k for k in model_keys}
    return {to_official.get(k, k): v for k, v in state.items()}


def infer_config(state: Dict[str, torch.Tensor]) -> SamHQConfig:
    """Derive the architecture of an official-layout state dict from its tensor shapes: ViT or
    TinyViT encoder, widths, depths, heads, window sizes, input size and whether it has the HQ
    weights.

    Arguments:
      state (dict(str, torch.Tensor)): the state dict (meta tensors suffice: only shapes are
        read).

    Returns:
      (SamHQConfig): the config of the model the weights fit.

    Raises:
      KeyError or IndexError: for a state dict without a tensor it reads, or with one of
        another rank: not a SAM / SAM-HQ checkpoint.
    """
    hq = "mask_decoder.hf_token.weight" in state
    decoder: Dict[str, Any] = dict(
        hidden_size=state["mask_decoder.iou_token.weight"].shape[1],
        num_multimask_outputs=state["mask_decoder.mask_tokens.weight"].shape[0] - 1,
        num_hidden_layers=_count(state, r"mask_decoder\.transformer\.layers\.(\d+)\."),
        mlp_dim=state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0],
        hq=hq,
    )
    vision: Dict[str, Any]
    if "image_encoder.patch_embed.seq.0.c.weight" in state:
        dims = [state[f"image_encoder.layers.{i}.blocks.0.conv1.c.weight"].shape[1] if i == 0 else
                state[f"image_encoder.layers.{i}.blocks.0.attn.qkv.weight"].shape[1] for i in range(4)]
        heads = [2] + [state[f"image_encoder.layers.{i}.blocks.0.attn.attention_biases"].shape[0] for i in range(1, 4)]
        windows = [7] + [round(state[f"image_encoder.layers.{i}.blocks.0.attn.attention_biases"].shape[1] ** 0.5)
                         for i in range(1, 4)]
        vision = dict(
            encoder_type="tiny_vit",
            tiny_embed_dims=dims,
            tiny_depths=[_count(state, rf"image_encoder\.layers\.{i}\.blocks\.(\d+)\.") for i in range(4)],
            tiny_num_heads=heads,
            tiny_window_sizes=windows,
            output_channels=state["image_encoder.neck.0.weight"].shape[0],
        )
    else:
        hidden = state["image_encoder.patch_embed.proj.weight"].shape[0]
        grid = state["image_encoder.pos_embed"].shape[1]
        depth = _count(state, r"image_encoder\.blocks\.(\d+)\.")
        rel_lengths = [state[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0] for i in range(depth)]
        head_dim = state["image_encoder.blocks.0.attn.rel_pos_h"].shape[1]
        windowed = [n for n in rel_lengths if n != 2 * grid - 1]
        vision = dict(
            hidden_size=hidden,
            num_hidden_layers=depth,
            num_attention_heads=hidden // head_dim,
            image_size=grid * 16,
            window_size=(windowed[0] + 1) // 2 if windowed else 14,
            global_attn_indexes=[i for i, n in enumerate(rel_lengths) if n == 2 * grid - 1],
            output_channels=state["image_encoder.neck.0.weight"].shape[0],
        )
    base = SamHQConfig.from_variant("vit_tiny" if vision.get("encoder_type") == "tiny_vit" else "vit_b")
    data = base.to_dict()
    data["vision_config"].update(vision, num_pos_feats=decoder["hidden_size"] // 2)
    data["prompt_encoder_config"].update(image_size=data["vision_config"]["image_size"], hidden_size=decoder["hidden_size"])
    vit_dim = vision["tiny_embed_dims"][2] if "tiny_embed_dims" in vision else vision["hidden_size"]
    data["mask_decoder_config"].update(decoder, vit_dim=vit_dim)
    return SamHQConfig.from_dict(data)


def _count(state: Dict[str, torch.Tensor], pattern: str) -> int:
    indexes = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(indexes) + 1 if indexes else 0


M = TypeVar("M", bound="PretrainedModel")


class PretrainedModel(nn.Module):
    """A model built from a `SamHQConfig`, with weights in this module's checkpoint formats:
    the loading and saving half of `SamHQModel`, which subclasses it. Kept here, not in
    modeling/, so that the model and the checkpoint code do not import each other."""

    config: SamHQConfig

    def __init__(self, config: SamHQConfig) -> None:
        super().__init__()
        self.config = config

    @classmethod
    def from_pretrained(
        cls: Type[M],
        src: str,
        variant: Optional[str] = None,
        sha256: Optional[str] = None,
        cache_dir: Optional[str] = None,
        storage_options: Optional[dict] = None,
        map_location: str = "cpu",
    ) -> M:
        """Load a model with its weights from a checkpoint. Hub models are downloaded by
        huggingface_hub into its cache (HF_HOME / HF_HUB_CACHE), read from the cache alone under
        HF_HUB_OFFLINE=1, with the token of HF_TOKEN or `hf auth login`, never an argument.

        Arguments:
          src (str): a path or fsspec URL of an official `.pth` / `.safetensors` file, or of an
            HF-layout directory (`config.json` + `model.safetensors`), or a Hugging Face Hub
            model id of that layout, `org/name` or `org/name@revision` (a branch, tag or
            commit; how an id is told from a local path: `hub_model`).
          variant (str or None): "vit_b" | "vit_l" | "vit_h" | "vit_tiny" for a `.pth`;
            inferred from the tensor shapes when omitted (plain SAM checkpoints are recognised
            by their missing HQ weights).
          sha256 (str or None): expected hex digest of the weights file; a mismatch raises
            ValueError.
          cache_dir (str or None): where files of fsspec URLs are cached (default
            ~/.cache/samhq_core); a file is downloaded once per version (size, ETag or
            modification time). Not for Hub ids, which use the Hugging Face cache.
          storage_options (dict or None): fsspec options for fsspec URLs (e.g.
            {"client_kwargs": {"endpoint_url": ...}} for an S3-compatible store).
          map_location (str): where the tensors are read to before the model takes them.

        Returns:
          (SamHQModel): the model (an instance of the class it is called on), on the CPU, in
            eval mode.

        Raises:
          FileNotFoundError: for a missing source.
          ValueError: for a sha256 mismatch, a file that is not a SAM / SAM-HQ checkpoint, or
            weights that do not fit the model exactly.
        """
        local = fetch(src, cache_dir=cache_dir, storage_options=storage_options)
        config: Optional[SamHQConfig] = None
        weights = local
        if os.path.isdir(local):
            check_hf_directory(local, src)
            weights = os.path.join(local, HF_WEIGHTS)
            config = SamHQConfig.load(os.path.join(local, HF_CONFIG))
        if sha256 is not None:
            actual = file_sha256(weights)
            if actual != sha256.lower():
                raise ValueError(f"sha256 mismatch for {src}: expected {sha256.lower()}, got {actual}")
        state = _read_state_dict(weights, map_location)
        model, state = cls._model_for(state, config, variant, src, "cpu")
        _check_keys(model, state, src)
        model.load_state_dict(state, strict=True)
        return model.eval()

    @classmethod
    def config_from_pretrained(cls, src: str, variant: Optional[str] = None,
                               storage_options: Optional[dict] = None) -> SamHQConfig:
        """The architecture of the checkpoint at `src`, checked against its weights without
        reading them: the config (an HF directory's `config.json`, else inferred from the
        tensor shapes or the given variant) and the tensor names and shapes from the weights
        file's header, which must fit the model exactly. A few KB are read, also from object
        storage or HTTP; nothing is downloaded or cached, except a Hub model's config.json,
        which huggingface_hub keeps in its cache (the weights' header is read from the cached
        model.safetensors when there is one, else by range requests to the Hub).

        Arguments:
          src (str): the checkpoint, as `from_pretrained` takes it.
          variant (str or None): as `from_pretrained`'s: the official variant of a `.pth`,
            inferred from the tensor shapes when omitted.
          storage_options (dict or None): fsspec options for fsspec URLs.

        Returns:
          (SamHQConfig): the checkpoint's config.

        Raises:
          FileNotFoundError: for a missing source.
          ValueError: for a file that is not a SAM / SAM-HQ checkpoint (naming what it looks
            like instead, e.g. a JPEG image), a safetensors file whose tensors' data would lie
            past its end (truncated, or a forged header), or tensors that do not fit the model.
        """
        hub = hub_model(src)
        fs, path = hub_header_source(hub, src) if hub is not None else _source_fs(src, storage_options)
        config: Optional[SamHQConfig] = None
        weights = path
        if _is_directory(fs, path):
            config_path, weights = f"{path.rstrip('/')}/{HF_CONFIG}", f"{path.rstrip('/')}/{HF_WEIGHTS}"
            if isinstance(fs, LocalFileSystem):
                check_hf_directory(path, src)
            missing = [name for name, file in ((HF_CONFIG, config_path), (HF_WEIGHTS, weights))
                       if not _exists(fs, file)]
            if len(missing) == 2:
                raise FileNotFoundError(f"checkpoint not found: {src} (neither a weights file nor a directory with "
                                        f"{HF_CONFIG} and {HF_WEIGHTS})")
            if missing:
                raise FileNotFoundError(f"{src} is a directory without {missing[0]}: an HF-layout checkpoint has "
                                        f"{HF_CONFIG} and {HF_WEIGHTS}")
            with fs.open(config_path, "r") as f:
                try:
                    config = SamHQConfig.from_dict(json.load(f))
                except (ValueError, TypeError, KeyError) as e:
                    raise ValueError(f"{src}: {HF_CONFIG} is not a SAM-HQ config: {e}") from e
        name = src if weights == path else f"{src.rstrip('/')}/{HF_WEIGHTS}"
        with fs.open(weights, "rb", block_size=1 << 16) as f:
            state = {k: v for k, v in read_header_tensors(f, name).items() if not _UNUSED_KEYS.match(k)}
        model, state = cls._model_for(state, config, variant, src, "meta")
        _check_keys(model, state, src)
        return model.config

    def save_pretrained(self, directory: str) -> None:
        """Write `config.json` + `model.safetensors` in the HF layout, with transformers' key
        names (what `from_pretrained` and transformers' SamHQModel load).

        Arguments:
          directory (str): where the two files go; created if missing.
        """
        os.makedirs(directory, exist_ok=True)
        state = {to_hf_key(k): v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        state[_HF_POSITIONAL_ALIAS] = state[_HF_POSITIONAL].clone()
        save_file(state, os.path.join(directory, HF_WEIGHTS))
        with open(os.path.join(directory, HF_CONFIG), "w") as f:
            json.dump(self.config.to_dict(), f, indent=2, sort_keys=True)

    @classmethod
    def _model_for(cls: Type[M], state: Dict[str, torch.Tensor], config: Optional[SamHQConfig],
                   variant: Optional[str], src: str, device: str) -> Tuple[M, Dict[str, torch.Tensor]]:
        """The model (uninitialised, on `device`) that a state dict is for, and the state dict
        under its key names (HF-layout keys are renamed to the official ones)."""
        hf_layout = _HF_POSITIONAL in state or _HF_POSITIONAL_ALIAS in state
        if config is None:
            if hf_layout:
                raise ValueError(f"{src} holds HF-layout weights without a config.json beside them")
            config = _config_for(state, variant, src)
        with torch.device(device):
            model = cls(config)
        if hf_layout:
            state = from_hf_state_dict(state, list(model.state_dict()))
        return model, state


def check_hf_directory(directory: str, src: str) -> None:
    """Raise ValueError when a local directory given as a checkpoint holds neither file of the
    HF layout: it is no checkpoint, and the message names the checkpoints one level down (the
    usual slip: the parent of the checkpoint's directory).

    Arguments:
      directory (str): the local directory.
      src (str): the source as the caller named it, for the message.

    Raises:
      ValueError: when the directory has neither config.json nor model.safetensors.
    """
    if any(os.path.exists(os.path.join(directory, name)) for name in (HF_CONFIG, HF_WEIGHTS)):
        return
    below = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if os.path.isfile(os.path.join(path, HF_CONFIG)) and os.path.isfile(os.path.join(path, HF_WEIGHTS)):
            below.append(f"{os.path.join(src, name)} (HF layout)")
        elif os.path.isfile(path) and name.endswith(WEIGHTS_SUFFIXES):
            below.append(os.path.join(src, name))
    found = (f"the checkpoints in it: {', '.join(below[:5])}{', ...' if len(below) > 5 else ''}" if below
             else "nor does any entry of it look like one")
    raise ValueError(f"{src} is a directory, not a checkpoint: it has neither {HF_CONFIG} nor {HF_WEIGHTS} (an "
                     f"HF-layout checkpoint has both; an official checkpoint is a .pth file); {found}")


def _source_fs(src: str, storage_options: Optional[dict]) -> Tuple[fsspec.AbstractFileSystem, str]:
    options = (storage_options or {}) if "://" in src else {}
    fs, path = fsspec.core.url_to_fs(src, **options)
    if not _is_directory(fs, path) and not _exists(fs, path):  # a directory's files are looked for by the caller
        raise FileNotFoundError(f"checkpoint not found: {src}")
    return fs, path


def _exists(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """Whether a file exists, asked with `info` (an HTTP HEAD), not fsspec's HTTP `exists`,
    which starts downloading the file."""
    try:
        fs.info(path)
        return True
    except FileNotFoundError:
        return False


def _is_directory(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """Whether a checkpoint source is an HF-layout directory. Remote sources are told by name
    (a weights file's suffix, else a directory), as `fetch` does: asking HTTP whether a URL
    is a directory downloads it."""
    if isinstance(fs, LocalFileSystem):
        return os.path.isdir(path)
    return not path.endswith(WEIGHTS_SUFFIXES)


def _config_for(state: Dict[str, torch.Tensor], variant: Optional[str], src: str) -> SamHQConfig:
    """The config of an official-layout state dict: the variant's preset (plain SAM when it
    has no HQ weights), or inferred from the tensor shapes."""
    if variant:
        config = SamHQConfig.from_variant(variant)
        config.mask_decoder_config.hq = "mask_decoder.hf_token.weight" in state
        return config
    try:
        return infer_config(state)
    except (KeyError, IndexError) as e:
        keys = sorted(state)
        raise ValueError(f"{src} does not look like a SAM / SAM-HQ checkpoint: it has no tensor {e} (its tensors: "
                         f"{', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''})") from None


def _check_keys(model: nn.Module, state: Dict[str, torch.Tensor], src: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or misshaped:
        parts = [f"{name} ({len(keys)}): {', '.join(keys[:20])}{' ...' if len(keys) > 20 else ''}"
                 for name, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)) if keys]
        raise ValueError(f"checkpoint {src} does not fit the model: " + "; ".join(parts))


def _read_state_dict(path: str, map_location: str) -> Dict[str, torch.Tensor]:
    """The tensors of a weights file, without the keys the model does not use."""
    return {k: v for k, v in read_weights(path, map_location).items() if not _UNUSED_KEYS.match(k)}
