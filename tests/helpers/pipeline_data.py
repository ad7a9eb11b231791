"""Sample inputs for the pipeline tests: real encoded images and box lists in Parquet,
including the bad rows a real dataset has."""

import io
from typing import Dict, List

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.demo.dataset import write_sample_dataset

INPUT_SCHEMA = pa.schema([
    pa.field("id", pa.string()),
    pa.field("image", pa.binary()),
    pa.field("boxes", pa.list_(pa.list_(pa.float64()))),
    pa.field("labels", pa.list_(pa.string())),
    pa.field("source", pa.string()),
])


def png_bytes(height: int, width: int, seed: int) -> bytes:
    """A smooth image with a few flat shapes (not noise, so masks have structure)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    image = np.stack([(xx * 255 // max(width - 1, 1)), (yy * 255 // max(height - 1, 1)),
                      np.full_like(xx, 128)], axis=-1).astype(np.uint8)
    for _ in range(3):
        cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(5, max(6, min(height, width) // 3))
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def sample_rows(num_good: int = 6, seed: int = 0) -> List[Dict]:
    """`num_good` good rows, then one of each kind of bad row."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(num_good):
        h, w = (int(v) for v in rng.integers(90, 330, 2))
        boxes = [[5.0, 8.0, w * 0.6, h * 0.7], [w * 0.3, h * 0.2, w - 1.0, h - 1.0]]
        rows.append({"id": f"good{i}", "image": png_bytes(h, w, i), "boxes": boxes[: 1 + i % 2],
                     "labels": ["a", "b"][: 1 + i % 2], "source": f"src{i}"})
    image = png_bytes(120, 160, 99)
    rows += [
        {"id": "truncated", "image": image[: len(image) // 2], "boxes": [[1.0, 1.0, 20.0, 20.0]], "labels": ["a"],
         "source": "bad"},
        {"id": "garbage", "image": b"this is not an image", "boxes": [[1.0, 1.0, 20.0, 20.0]], "labels": ["a"],
         "source": "bad"},
        {"id": "null_image", "image": None, "boxes": [[1.0, 1.0, 20.0, 20.0]], "labels": ["a"], "source": "bad"},
        {"id": "bad_boxes", "image": image, "labels": ["a", "b", "c", "d", "e"], "source": "bad",
         "boxes": [[float("nan"), 1.0, 5.0, 5.0], [50.0, 50.0, 10.0, 10.0], [-40.0, -40.0, -5.0, -5.0],
                   [-10.0, -10.0, 60.0, 70.0], [200.0, 10.0, 400.0, 50.0]]},
        {"id": "no_boxes", "image": image, "boxes": [], "labels": [], "source": "bad"},
        {"id": "null_boxes", "image": image, "boxes": None, "labels": None, "source": "bad"},
        {"id": "short_box", "image": image, "boxes": [[1.0, 2.0, 3.0]], "labels": ["a"], "source": "bad"},
    ]
    return rows


def write_rows(path: str, rows: List[Dict], row_group_size: int = 64, filesystem=None) -> None:
    table = pa.Table.from_pylist(rows, schema=INPUT_SCHEMA)
    pq.write_table(table, path, row_group_size=row_group_size, filesystem=filesystem)


def labelled_parquet(tmp_path, num_images=10):
    """Synthetic scenes with their masks in one table, plus a corrupt image, a row whose
    masks are not aligned with its boxes and a training row (by its id's hash) with a
    malformed RLE."""
    images, truth = str(tmp_path / "images.parquet"), str(tmp_path / "truth.parquet")
    write_sample_dataset(images, num_images, seed=7, ground_truth_path=truth)
    masks = {r["image_id"]: r["masks"] for r in pq.read_table(truth).to_pylist()}
    rows = [{**r, "masks": masks[r["image_id"]]} for r in pq.read_table(images).to_pylist()]
    rows.append({**rows[0], "image_id": "corrupt", "image": b"not an image"})
    rows.append({**rows[1], "image_id": "misaligned", "masks": rows[1]["masks"][:-1] + rows[1]["masks"] * 2})
    malformed = [{**rows[2]["masks"][0], "counts": "not an rle"}] + rows[2]["masks"][1:]
    rows.append({**rows[2], "image_id": "bad_rle", "masks": malformed})
    path = str(tmp_path / "labelled.parquet")
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path, rows
