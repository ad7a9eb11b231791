"""SAM-HQ models with random weights for tests and benchmarks: no pretrained weights are needed
to check numerics against the official code or to time the model, as long as every weight
takes part, zero-initialised biases, LayerNorm affines and position tables included."""

import torch
from torch import nn

from .config import SamHQConfig, SamHQMaskDecoderConfig, SamHQPromptEncoderConfig, SamHQVisionConfig
from .modeling import SamHQModel


def smallest_config(width: int = 32, side: int = 64) -> SamHQConfig:
    """The smallest SAM-HQ the code runs: a `side` px ViT of one `width`-wide global block and a
    `width`-wide decoder.

    Arguments:
      width (int): the encoder's and the decoder's width.
      side (int): the input size in pixels, a multiple of 16.

    Returns:
      (SamHQConfig): the config.
    """
    return SamHQConfig(
        vision_config=SamHQVisionConfig(hidden_size=width, output_channels=width, num_hidden_layers=1,
                                        num_attention_heads=1, image_size=side, window_size=4,
                                        global_attn_indexes=[0], num_pos_feats=width // 2),
        prompt_encoder_config=SamHQPromptEncoderConfig(hidden_size=width, image_size=side),
        mask_decoder_config=SamHQMaskDecoderConfig(hidden_size=width, mlp_dim=64, num_attention_heads=1,
                                                   iou_head_hidden_dim=width, vit_dim=width),
    )


def perturb(model: nn.Module, seed: int, scale: float = 0.1) -> nn.Module:
    """Add `scale` * N(0, 1) to every floating parameter and buffer of any model (samhq_core's,
    the official one, transformers'), in place; BatchNorm variances are redrawn positive and SAM's
    pixel normalisation constants are kept. The model is left in eval mode, which also refreshes
    the official TinyViT's cached attention biases from the new weights.

    Arguments:
      model (nn.Module): the model.
      seed (int): seeds the noise, so that the same model gets the same weights.
      scale (float): the noise's standard deviation.

    Returns:
      (nn.Module): the same model.
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))  # the noise is drawn there
    gen = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if not tensor.is_floating_point() or name.endswith(("pixel_mean", "pixel_std")):
                continue
            noise = torch.randn(tensor.shape, generator=gen, device=device).to(tensor.dtype)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + noise.abs())
            else:
                tensor.add_(scale * noise)
    return model.eval()


def random_model(config: SamHQConfig, seed: int, scale: float = 0.02, device: str = "cpu") -> SamHQModel:
    """A SamHQModel of `config` with seeded random weights, built on `device` (a vit_h is built in
    seconds on a GPU, not on the host).

    Arguments:
      config (SamHQConfig): the architecture.
      seed (int): seeds the initialisation and the noise.
      scale (float): the noise added to the initialisation (`perturb`).
      device (str): where the model is built.

    Returns:
      (SamHQModel): the model, in eval mode.
    """
    torch.manual_seed(seed)
    with torch.device(device):
        model = SamHQModel(config)
    perturb(model, seed, scale)
    return model
