"""The check's models and inputs: random boxes, a synthetic scene as pixels, the pipeline run's input Parquet and job config."""

import functools
import io
import os
from typing import Any, Dict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from bench.gpu_check.settings import Settings
from pipeline.config import JobConfig, parse_config
from samhq_core import SamHQConfig, SamHQModel, SamHQProcessor
from samhq_core.training.synthetic import make_scene


def random_boxes(rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
    """(count, 4) xyxy float32 boxes inside a height x width image, sides from 1/16 to 1/2 of it."""
    sides = rng.uniform(1 / 16, 1 / 2, size=(count, 2)) * [width, height]
    corners = rng.uniform(0, 1, size=(count, 2)) * ([width, height] - sides)
    return np.concatenate([corners, corners + sides], axis=1).astype(np.float32)


@functools.lru_cache(maxsize=2)
def scene_pixels(side: int, seed: int) -> torch.Tensor:
    """One synthetic scene at the model's input size `side`, as its pixel_values (1, 3, S, S);
    cached: three checks use it, and a 1024 px scene takes a second to draw."""
    scene = make_scene(np.random.default_rng(seed), side, side)
    return SamHQProcessor(side).model_input(torch.from_numpy(scene.image))[None]


def empty_masks(model: SamHQModel) -> SamHQModel:
    """Zero the last layer of every hypernetwork (SAM's and the HQ token's), so that every mask
    logit is 0 and every mask empty: one run each, what mask coding costs at the least. The
    encoder and the rest of the decoder still do all their work."""
    decoder = model.mask_decoder
    hypernetworks = [*decoder.output_hypernetworks_mlps, *([decoder.hf_mlp] if hasattr(decoder, "hf_mlp") else [])]
    with torch.no_grad():
        for mlp in hypernetworks:
            mlp.layers[-1].weight.zero_()
            mlp.layers[-1].bias.zero_()
    return model


def write_pipeline_input(path: str, settings: Settings) -> int:
    """`pipeline_images` rows (image_id, image: JPEG bytes, boxes) cycling through a few
    distinct scenes (decoding costs the same for each; generating 1080p scenes is slow), each
    row with boxes of its own; returns the number of boxes."""
    rng = np.random.default_rng(settings.seed)
    height, width = settings.pipeline_hw
    jpegs = []
    for _ in range(settings.pipeline_scenes):
        buffer = io.BytesIO()
        Image.fromarray(make_scene(rng, height, width).image).save(buffer, format="JPEG", quality=90)
        jpegs.append(buffer.getvalue())
    rows = [{"image_id": f"img{i:06d}", "image": jpegs[i % len(jpegs)],
             "boxes": random_boxes(rng, settings.pipeline_boxes, height, width).tolist()}
            for i in range(settings.pipeline_images)]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return settings.pipeline_images * settings.pipeline_boxes


def job_config(work: str, checkpoint: str, input_path: str, settings: Settings, actors: int, gpus: float,
               concurrent: int = 1) -> JobConfig:
    compute: Dict[str, Any] = {"num_actors": actors, "num_gpus_per_actor": gpus, "batch_size": settings.pipeline_batch_size,
                               "concurrent_batches_per_actor": concurrent}
    if settings.torch_threads:
        compute["torch_threads"] = settings.torch_threads
    return parse_config({
        "input": {"path": input_path, "id_column": "image_id", "image_column": "image", "boxes_column": "boxes"},
        "output": {"path": os.path.join(work, f"output-{actors}x{gpus:g}x{concurrent}"), "mode": "overwrite"},
        "model": {"checkpoint": checkpoint, "dtype": settings.pipeline_dtype},
        "compute": compute,
    })


def describe(config: SamHQConfig) -> str:
    v = config.vision_config
    return f"ViT {v.hidden_size} x {v.num_hidden_layers} blocks at {v.image_size} px"
