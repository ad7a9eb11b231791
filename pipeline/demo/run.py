"""`python -m pipeline demo`: synthetic scenes through the whole pipeline, locally, with the
project's demo model (models/samhq-demo-synthetic: a small SAM-HQ trained on synthetic
scenes, see its model card), then COCO export, evaluation against the exact masks and
overlay PNGs.
"""

import os
from typing import List, Optional

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from ..masks import drawing, rle
from ..schema import MASKS
from .dataset import DEMO_CHECKPOINT, write_sample_dataset


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
    from ..config import parse_config
    from ..evaluation.evaluate import evaluate_masks
    from ..evaluation.report import write_report
    from ..exports.coco import export_coco
    from ..job.run import run_job
    from ..stages.cluster import connect
    from ..storage import Location, is_local

    checkpoint = checkpoint or DEMO_CHECKPOINT
    if not os.path.exists(checkpoint) and is_local(checkpoint):
        raise FileNotFoundError(f"no checkpoint at {checkpoint}: the demo model ships in the repository "
                                "(models/samhq-demo-synthetic); run from a clone, or pass --checkpoint")
    workdir = os.path.abspath(workdir)
    print(f"model: {checkpoint}\n"
          "      a small SAM-HQ trained by this project on synthetic scenes only (see its README.md):\n"
          "      a demo of the pipeline, not a model for real images.")
    input_path = os.path.join(workdir, "input", "images.parquet")
    truth_path = os.path.join(workdir, "ground_truth", "masks.parquet")
    labelled_path = os.path.join(workdir, "labelled", "train.parquet")
    images_dir = os.path.join(workdir, "images")
    write_sample_dataset(input_path, num_images, ground_truth_path=truth_path, images_dir=images_dir,
                         labelled_path=labelled_path)
    output = os.path.join(workdir, "output")
    # The job reads the PNG files by path (the input also holds their bytes, for the overlays):
    # its output then names each image by its file, which every export links or points at.
    config = parse_config({
        "input": {"path": input_path, "id_column": "image_id", "image_uri_column": "image_path",
                  "boxes_column": "boxes", "category_column": "labels"},
        "output": {"path": output, "mode": "overwrite"},
        "model": {"checkpoint": checkpoint},
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
    write_report(result, Location(report))
    overlays = write_overlays(input_path, output, os.path.join(workdir, "overlays"))
    print(f"job summary: {summary.render()}")
    print(f"input:      {input_path} (images also as PNG files in {os.path.join(workdir, 'images')})")
    print(f"labelled:   {labelled_path} (images, boxes and exact masks, for fine-tuning)")
    print(f"results:    {output}")
    print(f"COCO:       {coco_path} ({counts['images']} images, {counts['annotations']} annotations)")
    print(f"evaluation: {report}\n{result.metrics_table()}")
    print("overlays:   " + ", ".join(overlays))
    return 0
