"""`python -m pipeline demo`: synthetic scenes through the whole pipeline, locally, with the
project's demo model (models/samhq-demo-synthetic: a small SAM-HQ trained on synthetic
scenes, see its model card), then COCO export, evaluation against the exact masks and
overlay PNGs.
"""

import io
import os
from typing import List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from samhq_core.training.synthetic import make_scene

from . import drawing, rle
from .config import parse_config
from .schema import GROUND_TRUTH_MASKS, MASKS

DEMO_CHECKPOINT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models",
                               "samhq-demo-synthetic")
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


def write_overlays(input_path: str, output_dir: str, overlay_dir: str, limit: int = 4) -> List[str]:
    """PNGs of the first images with their masks (coloured) and boxes (outlined)."""
    images = {r["image_id"]: r for r in pq.read_table(input_path).to_pylist()}
    results = sorted(pq.read_table(output_dir).to_pylist(), key=lambda r: r["image_id"])[:limit]
    os.makedirs(overlay_dir, exist_ok=True)
    paths = []
    for result in results:
        source = images[result["image_id"]]
        masks = [(rle.decode(stored, result["image_id"], f"mask {k}"), drawing.color(k))
                 for k, stored in enumerate(result[MASKS])]
        image = Image.fromarray(drawing.blend(np.asarray(drawing.open_rgb(source["image"])), masks))
        drawing.draw_boxes(image, [(box, drawing.color(k)) for k, box in enumerate(source["boxes"])])
        path = os.path.join(overlay_dir, f"{result['image_id']}.png")
        image.save(path)
        paths.append(path)
    return paths


def run_demo(workdir: str, num_images: int = 8, checkpoint: Optional[str] = None) -> int:
    from .cluster import connect
    from .coco import export_coco
    from .evaluation import evaluate_masks, write_report
    from .job import run_job

    checkpoint = checkpoint or DEMO_CHECKPOINT
    if not os.path.exists(checkpoint) and "://" not in checkpoint:
        raise FileNotFoundError(f"no checkpoint at {checkpoint}: the demo model ships in the repository "
                                "(models/samhq-demo-synthetic); run from a clone, or pass --checkpoint")
    workdir = os.path.abspath(workdir)
    print(f"model: {checkpoint}\n"
          "      a small SAM-HQ trained by this project on synthetic scenes only (see its README.md):\n"
          "      a demo of the pipeline, not a model for real images.")
    input_path = os.path.join(workdir, "input", "images.parquet")
    truth_path = os.path.join(workdir, "ground_truth", "masks.parquet")
    labelled_path = os.path.join(workdir, "labelled", "train.parquet")
    write_sample_dataset(input_path, num_images, ground_truth_path=truth_path, images_dir=os.path.join(workdir, "images"),
                         labelled_path=labelled_path)
    output = os.path.join(workdir, "output")
    config = parse_config({
        "input": {"path": input_path, "id_column": "image_id", "image_column": "image", "boxes_column": "boxes",
                  "category_column": "labels"},
        "output": {"path": output, "mode": "overwrite"},
        "model": {"checkpoint": checkpoint, "hq_token_only": True},
        "compute": {"num_actors": 1, "batch_size": 4, "torch_threads": os.cpu_count() or 1},
    })
    stderr = connect()
    try:
        summary = run_job(config)
    finally:
        stderr.stop()
    coco_path = os.path.join(workdir, "instances.json")
    counts = export_coco(output, coco_path, id_column="image_id", category_column="labels")
    result = evaluate_masks(output, truth_path, id_column="image_id", category_column="labels", worst=5,
                            overlays_dir=os.path.join(workdir, "worst"), images=input_path)
    report = os.path.join(workdir, "evaluation.md")
    write_report(result, report)
    overlays = write_overlays(input_path, output, os.path.join(workdir, "overlays"))
    print(f"job summary: {summary.render()}")
    print(f"input:      {input_path} (images also as PNG files in {os.path.join(workdir, 'images')})")
    print(f"labelled:   {labelled_path} (images, boxes and exact masks, for fine-tuning)")
    print(f"results:    {output}")
    print(f"COCO:       {coco_path} ({counts['images']} images, {counts['annotations']} annotations)")
    print(f"evaluation: {report}\n{result.metrics_table()}")
    print("overlays:   " + ", ".join(overlays))
    return 0
