"""`python -m pipeline demo`: a small synthetic dataset through the whole pipeline, locally.

Until the project ships a trained demo checkpoint, the model is a randomly initialised
vit_tiny: its masks are meaningless, and the demo says so.
"""

import io
import os
from typing import List, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from samhq_core import SamHQConfig, SamHQModel

from .config import parse_config

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]


def synthetic_scene(rng: np.random.Generator, height: int, width: int) -> Tuple[bytes, List[List[float]], List[str]]:
    """A textured background with a few ellipses and rectangles; boxes are the shapes'
    bounding boxes with a few pixels of detector-like jitter."""
    yy, xx = np.mgrid[:height, :width]
    image = np.stack([xx * 200 // width, yy * 200 // height, 80 + 40 * np.sin(xx / 9.0) * np.cos(yy / 7.0)],
                     axis=-1).astype(np.uint8)
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    boxes, labels = [], []
    for _ in range(int(rng.integers(2, 5))):
        w, h = (int(v) for v in rng.integers(width // 8, width // 3, 2))
        x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        kind = "ellipse" if rng.random() < 0.5 else "rectangle"
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        getattr(draw, kind)([x0, y0, x0 + w, y0 + h], fill=fill)
        jitter = rng.normal(0, 3, 4)
        boxes.append([float(x0 + jitter[0]), float(y0 + jitter[1]), float(x0 + w + jitter[2]), float(y0 + h + jitter[3])])
        labels.append(kind)
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=92)
    return buffer.getvalue(), boxes, labels


def write_sample_dataset(path: str, num_images: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(num_images):
        height, width = (int(v) for v in rng.integers(240, 480, 2))
        data, boxes, labels = synthetic_scene(rng, height, width)
        rows.append({"image_id": f"demo_{i:04d}", "image": data, "boxes": boxes, "labels": labels})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def write_overlays(input_path: str, output_dir: str, overlay_dir: str, limit: int = 4) -> List[str]:
    """PNGs of the first images with their masks (coloured) and boxes (outlined)."""
    images = {r["image_id"]: r for r in pq.read_table(input_path).to_pylist()}
    results = sorted(pq.read_table(output_dir).to_pylist(), key=lambda r: r["image_id"])[:limit]
    os.makedirs(overlay_dir, exist_ok=True)
    paths = []
    for result in results:
        source = images[result["image_id"]]
        canvas = np.asarray(Image.open(io.BytesIO(source["image"])).convert("RGB")).astype(np.float32)
        for k, rle in enumerate(result["masks"]):
            mask = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
            canvas[mask] = 0.5 * canvas[mask] + 0.5 * np.array(PALETTE[k % len(PALETTE)])
        image = Image.fromarray(canvas.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for k, box in enumerate(source["boxes"]):
            draw.rectangle(box, outline=PALETTE[k % len(PALETTE)], width=2)
        path = os.path.join(overlay_dir, f"{result['image_id']}.png")
        image.save(path)
        paths.append(path)
    return paths


def run_demo(workdir: str, num_images: int = 8) -> int:
    import ray

    from .coco import export_coco
    from .job import run_job

    workdir = os.path.abspath(workdir)
    print("NOTE: the demo model is a RANDOMLY INITIALISED vit_tiny SAM-HQ (no trained weights ship with this\n"
          "      repository yet): the pipeline runs for real, but its masks are meaningless shapes.")
    input_path = os.path.join(workdir, "input", "images.parquet")
    write_sample_dataset(input_path, num_images)
    checkpoint = os.path.join(workdir, "checkpoint_random_vit_tiny")
    torch.manual_seed(0)
    SamHQModel(SamHQConfig.from_variant("vit_tiny")).save_pretrained(checkpoint)
    output = os.path.join(workdir, "output")
    config = parse_config({
        "input": {"path": input_path, "id_column": "image_id", "image_column": "image", "boxes_column": "boxes",
                  "category_column": "labels"},
        "output": {"path": output, "overwrite": True},
        "model": {"checkpoint": checkpoint},
        "compute": {"num_actors": 1, "batch_size": 2, "torch_threads": os.cpu_count() or 1},
    })
    if not ray.is_initialized():
        ray.init()
    summary = run_job(config, image_size=1024)
    coco_path = os.path.join(workdir, "instances.json")
    counts = export_coco(output, coco_path, id_column="image_id", category_column="labels")
    overlays = write_overlays(input_path, output, os.path.join(workdir, "overlays"))
    print(f"job summary: {summary.render()}")
    print(f"input:    {input_path}")
    print(f"results:  {output}")
    print(f"COCO:     {coco_path} ({counts['images']} images, {counts['annotations']} annotations)")
    print("overlays: " + ", ".join(overlays))
    print("reminder: random weights — the masks show the pipeline works, not what a trained SAM-HQ produces.")
    return 0
