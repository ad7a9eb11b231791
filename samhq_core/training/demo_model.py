"""Train the project's demo model: a small SAM-HQ on synthetic scenes, in the paper's two
phases, on a CPU in under an hour (on the 2-core Xeon the shipped model was trained on; an
AVX2-only 2-core EPYC takes about twice as long per step, see the model card).

    python -m samhq_core.training.demo_model --out models/samhq-demo-synthetic

Phase "sam" trains the SAM part from scratch on coarse masks (`synthetic.coarsen`, standing
in for SA-1B's polygon-like labels); phase "hq" freezes it and trains only the HQ parameters
on the exact masks. Scenes are generated on the fly from `--seed`; evaluation scenes use
other seeds (see models/samhq-demo-synthetic/README.md).
"""

import argparse
import json
import os
import time
from typing import Any, Dict, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from ..config import SamHQConfig, SamHQMaskDecoderConfig, SamHQPromptEncoderConfig, SamHQVisionConfig
from ..modeling import SamHQModel
from ..processor import SamHQProcessor
from .recipe import Batch, train_phase
from .synthetic import coarsen, make_scene

SCENE_SIZE = 256


def demo_config(image_size: int = SCENE_SIZE, encoder: str = "tiny_vit") -> SamHQConfig:
    """A reduced SAM-HQ with a 128-wide decoder: a small TinyViT (convolutional first stage,
    as Light HQ-SAM) or a 4-block ViT of width 128 (2 windowed, 2 global blocks).

    Arguments:
      image_size (int): the input size in pixels.
      encoder (str): "tiny_vit" for the TinyViT, "vit" for the ViT.

    Returns:
      (SamHQConfig): the config.
    """
    width = 128
    if encoder == "tiny_vit":
        vision = SamHQVisionConfig(encoder_type="tiny_vit", output_channels=width, image_size=image_size,
                                   tiny_embed_dims=[32, 64, width, width], tiny_depths=[1, 2, 2, 1],
                                   tiny_num_heads=[1, 2, 4, 4], tiny_window_sizes=[8, 8, 16, 16],
                                   num_pos_feats=width // 2)
    else:
        vision = SamHQVisionConfig(hidden_size=width, output_channels=width, num_hidden_layers=4, num_attention_heads=4,
                                   image_size=image_size, window_size=8, global_attn_indexes=[1, 3],
                                   num_pos_feats=width // 2)
    return SamHQConfig(
        vision_config=vision,
        prompt_encoder_config=SamHQPromptEncoderConfig(hidden_size=width, image_size=image_size),
        mask_decoder_config=SamHQMaskDecoderConfig(hidden_size=width, mlp_dim=4 * width, iou_head_hidden_dim=width,
                                                   vit_dim=vision.early_dim),
    )


def synthetic_batches(seed: int, batch_size: int, image_size: int, coarse_cell: Optional[int],
                      max_objects: int = 4) -> Iterator[Batch]:
    """Endless batches of fresh synthetic scenes with up to `max_objects` labelled objects;
    targets are the exact masks, or with `coarse_cell` their coarse version on that grid
    (`coarsen`). Scenes are drawn at SCENE_SIZE and resized to `image_size`.

    Arguments:
      seed (int): seeds the scenes.
      batch_size (int): scenes per batch.
      image_size (int): the model's input size; boxes and targets are scaled to it.
      coarse_cell (int or None): the grid of the coarse targets (px of the scene), or None for
        the exact masks.
      max_objects (int): labelled objects per scene, at most.

    Returns:
      (Iterator[Batch]): the batches, on the CPU.
    """
    rng = np.random.default_rng(seed)
    processor = SamHQProcessor(image_size)
    scale = image_size / SCENE_SIZE
    while True:
        scenes = [make_scene(rng, SCENE_SIZE, SCENE_SIZE, max_objects) for _ in range(batch_size)]
        pixels = torch.stack([processor.preprocess_image(s.image)[0] for s in scenes])
        targets = []
        for s in scenes:
            scene_masks = np.array([coarsen(m, coarse_cell) for m in s.masks]) if coarse_cell else s.masks
            masks = torch.from_numpy(scene_masks.astype(np.float32)).reshape(-1, 1, SCENE_SIZE, SCENE_SIZE)
            targets.append(torch.nn.functional.interpolate(masks, (image_size, image_size), mode="nearest")[:, 0])
        yield Batch(pixels, [torch.from_numpy(s.boxes) * scale for s in scenes], targets)


class _SceneStream(IterableDataset):
    def __init__(self, **batch_args: Any) -> None:
        self.batch_args = batch_args

    def __iter__(self) -> Iterator[Batch]:
        return synthetic_batches(**self.batch_args)


def prefetched_batches(**batch_args: Any) -> Iterator[Batch]:
    """`synthetic_batches(**batch_args)`, drawn in a worker process a few batches ahead, so
    that drawing scenes (about a fifth of a CPU step) overlaps training; same batches, same order.

    Arguments:
      **batch_args (Any): the arguments of `synthetic_batches`.

    Returns:
      (Iterator[Batch]): the batches, on the CPU.
    """
    return iter(DataLoader(_SceneStream(**batch_args), batch_size=None, num_workers=1, prefetch_factor=4))


def main() -> None:
    """Train the demo model in both phases and save it, as the command line asks."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="directory for the HF-layout checkpoint and training log")
    parser.add_argument("--image-size", type=int, default=SCENE_SIZE)
    parser.add_argument("--encoder", choices=("tiny_vit", "vit"), default="tiny_vit")
    parser.add_argument("--sam-steps", type=int, default=5000)
    parser.add_argument("--hq-steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-objects", type=int, default=8,
                        help="labelled objects per training scene, at most (evaluation scenes have up to 4): more masks "
                             "per image make each encoder pass, the cost of a step, teach more")
    parser.add_argument("--coarse-cell", type=int, default=8,
                        help="grid (px of the 256 scene) of the SAM phase's coarse masks: a finer grid makes SAM's own "
                             "masks better but not the HQ output (the model card gives the coarse masks' IoU on each "
                             "grid and the experiment)")
    parser.add_argument("--sam-lr", type=float, default=1e-3)
    parser.add_argument("--hq-lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads on CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = SamHQModel(demo_config(args.image_size, args.encoder)).to(device)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, input {args.image_size}")
    start = time.perf_counter()
    log: Dict[str, Any] = {"args": vars(args)}
    for phase, seed, steps, lr in (("sam", args.seed, args.sam_steps, args.sam_lr),
                                   ("hq", args.seed + 1, args.hq_steps, args.hq_lr)):
        coarse_cell = args.coarse_cell if phase == "sam" else None
        batches = prefetched_batches(seed=seed, batch_size=args.batch_size, image_size=args.image_size,
                                     coarse_cell=coarse_cell, max_objects=args.max_objects)
        log[phase] = train_phase(model, phase, (batch.to(device) for batch in batches), steps, lr)
    log["seconds"] = time.perf_counter() - start
    model.cpu().save_pretrained(args.out)
    with open(os.path.join(args.out, "training_log.json"), "w") as f:
        json.dump(log, f, indent=1)
    print(f"saved {args.out} after {log['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
