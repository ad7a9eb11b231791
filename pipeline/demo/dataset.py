"""The demo's data: synthetic scenes with exact masks (`samhq_core.training.synthetic`) as a
pipeline input, an evaluation ground truth and fine-tuning's labelled data."""

import io
import os
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from samhq_core.training.synthetic import make_scene

from ..masks import rle
from ..schema import GROUND_TRUTH_MASKS

DEMO_CHECKPOINT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                               "models", "samhq-demo-synthetic")
DEMO_SEED = 2024  # the demo model trained on seeds 0 and 1, and was evaluated on 1000
SCENE_SIDE = 256


def write_sample_dataset(path: str, num_images: int, seed: int = DEMO_SEED, ground_truth_path: Optional[str] = None,
                         side: int = SCENE_SIDE, images_dir: Optional[str] = None,
                         labelled_path: Optional[str] = None) -> None:
    """Synthetic scenes (`samhq_core.training.synthetic.make_scene`, side x side PNGs) as a
    pipeline input Parquet: image_id, image, boxes (jittered, xyxy), labels (object kinds).
    With `ground_truth_path`, also the exact masks there as an evaluation ground truth:
    image_id, masks (COCO RLE aligned with the boxes), labels. With `images_dir`, the PNGs
    are also written there as files, and the input gets their absolute paths (image_path).
    With `labelled_path`, the input rows with their masks, as fine-tuning reads them."""
    rng = np.random.default_rng(seed)
    rows, truth = [], []
    for i in range(num_images):
        scene = make_scene(rng, side, side)
        buffer = io.BytesIO()
        Image.fromarray(scene.image).save(buffer, format="PNG")
        image_id = f"scene_{seed}_{i:05d}"
        row = {"image_id": image_id, "image": buffer.getvalue(), "boxes": scene.boxes.tolist(), "labels": scene.kinds}
        if images_dir is not None:
            os.makedirs(images_dir, exist_ok=True)
            row["image_path"] = os.path.join(os.path.abspath(images_dir), f"{image_id}.png")
            with open(row["image_path"], "wb") as f:
                f.write(buffer.getvalue())
        rows.append(row)
        truth.append({"image_id": image_id, GROUND_TRUTH_MASKS: [rle.encode(m) for m in scene.masks],
                      "labels": scene.kinds})
    labelled = [{**row, GROUND_TRUTH_MASKS: t[GROUND_TRUTH_MASKS]} for row, t in zip(rows, truth, strict=True)]
    for target, table in ((path, rows), (ground_truth_path, truth), (labelled_path, labelled)):
        if target is not None:
            os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
            pq.write_table(pa.Table.from_pylist(table), target)
