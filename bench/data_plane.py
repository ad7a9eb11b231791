"""CPU cost of the pipeline's data plane: everything a GPU job does per image outside the model,
on one core, by the pipeline's own stage code.

Images: the two JPEG photos scikit-learn ships (`china.jpg`, `flower.jpg`, 640 x 427: COCO's
size), and the same photos cropped to 16:9 and scaled up to 1920 x 1080 and 3840 x 2160, saved
as JPEG at quality 90 (scaled-up photos are smoother than native ones, so their decode may be
a little cheaper than a camera's). Boxes: 50 per image, random, 5-40% of each side, with an
elliptical mask inside each box for the run-length steps.

Steps, each timed as CPU time of this process (torch and Pillow on one thread), median over the
rounds, per image:
1. decode: `DecodeUDF` on batches of 8 rows (bytes column): JPEG decode, EXIF orientation,
   resize to 1024 (PIL bilinear, the official preprocessing), box parsing, clipping and scaling,
   the output columns.
2. transfer: the decoded batch through Arrow IPC, written and read back: a stand-in for what Ray
   does when a block moves to the model actor (its pickle-5 path copies the same buffers). The
   bytes per image are given next to the JPEG's.
3. model host: what `ModelUDF` does on the host around the model: reading the row (pixels to a
   tensor) and `RunLengthCoder.unpack` (the run lengths from the boundaries) for 50 masks at the
   original size. The masks, their boundaries (`RunLengthCoder.add`, `transfer`) are the
   device's work on a GPU and are not counted.
4. encode: `EncodeUDF` (COCO RLE compression, the output columns) and the Parquet write of its
   table (snappy, as Ray Data writes), per image.
Options weighed (decode and resize alone), against the exact path and the array path it had
before (`to_rgb_array` then `resize_longest_side`: the same pixels, three more full-size
copies); not on by default: JPEG DCT-domain downscaling (`Image.draft`, effective when
an image is at least twice the model's input size: 4K here) and Pillow's `reducing_gap`
resize. Both change pixels, so the report gives the mean absolute pixel difference of the
resized image and, through a random-weight vit_b (weights perturbed by 0.02 N(0, 1), as in
bench_core), the mask IoU against the exact path over the 50 boxes. Random weights say how much
the masks move, not how good they are.

Usage: python -m bench.data_plane [--rounds 5] [--out bench/results/data_plane.md] [--no-iou]
"""

import argparse
import datetime
import io
import os
import platform
import time
from pathlib import Path
from statistics import median
from typing import Callable, Dict, List, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import sklearn.datasets
import torch
from PIL import Image

from bench.common.compare import mask_iou
from bench.common.machine import contention, cpu_counters, cpu_model
from pipeline.config import ImageSourceConfig, StorageConfig
from pipeline.schema import IMAGE_SIZE, PIXELS, RESIZED_HW, RESULT_FIELDS, RUN_LENGTHS
from pipeline.stages.contract import StageRunner
from pipeline.stages.decode import DecodeUDF
from pipeline.stages.encode import EncodeUDF
from pipeline.stages.run_lengths import RunLengthCoder
from samhq_core import SamHQConfig, SamHQModel, SamHQProcessor
from samhq_core.processor import resize_longest_side, to_rgb_array

SIZES = {"COCO 640x427": None, "1080p": (1920, 1080), "4K": (3840, 2160)}
BOXES_PER_IMAGE = 50
BATCH = 8
IMAGE_SIZE_MODEL = 1024
DEFAULT_OUT = Path(__file__).parent / "results" / "data_plane.md"


def photos() -> List[Image.Image]:
    folder = Path(sklearn.datasets.__file__).parent / "images"
    return [Image.open(folder / name).convert("RGB") for name in ("china.jpg", "flower.jpg")]


def scaled(photo: Image.Image, size: Tuple[int, int]) -> Image.Image:
    width, height = photo.size
    crop_h = round(width * size[1] / size[0])
    top = (height - crop_h) // 2
    return photo.crop((0, top, width, top + crop_h)).resize(size, Image.Resampling.LANCZOS)


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def random_boxes(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    sides = rng.uniform(0.05, 0.4, size=(BOXES_PER_IMAGE, 2)) * [width, height]
    corners = rng.uniform(0, 1, size=(BOXES_PER_IMAGE, 2)) * ([width, height] - sides)
    return np.concatenate([corners, corners + sides], axis=1).astype(np.float32)


def ellipse_masks(boxes: np.ndarray, width: int, height: int) -> torch.Tensor:
    ys, xs = torch.arange(height)[:, None] + 0.5, torch.arange(width)[None, :] + 0.5
    masks = []
    for x1, y1, x2, y2 in boxes.tolist():
        cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
        masks.append(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1)
    return torch.stack(masks)


def cpu_ms(fn: Callable[[], object], rounds: int, per: int) -> float:
    """Median CPU milliseconds of fn per item (fn handles `per` items)."""
    times = []
    for _ in range(rounds):
        start = time.process_time()
        fn()
        times.append((time.process_time() - start) * 1000 / per)
    return median(times)


def measure_size(name: str, data: List[bytes], rounds: int) -> Dict[str, float]:
    rng = np.random.default_rng(0)
    sizes = [Image.open(io.BytesIO(d)).size for d in data]
    rows = [{"id": f"img-{i}", "image": data[i % len(data)],
             "boxes": random_boxes(*sizes[i % len(data)], rng).tolist()} for i in range(BATCH)]
    batch = pa.Table.from_pylist(rows)
    inputs = ImageSourceConfig(id_column="id", image_column="image", boxes_column="boxes")
    decode = StageRunner(DecodeUDF.stage(inputs, StorageConfig(), IMAGE_SIZE_MODEL, BATCH, keep_image=False))
    decoded = decode(batch)
    out: Dict[str, float] = {"jpeg_kb": float(np.mean([len(d) for d in data]) / 1024)}
    out["decode"] = cpu_ms(lambda: decode(batch), rounds, BATCH)

    def transfer() -> pa.Table:
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, decoded.schema) as writer:
            writer.write_table(decoded)
        return pa.ipc.open_stream(sink.getvalue()).read_all()

    out["transfer"] = cpu_ms(transfer, rounds, BATCH)
    out["shipped_kb"] = decoded.column(PIXELS).nbytes / BATCH / 1024

    width, height = sizes[0]
    boxes = random_boxes(width, height, rng)
    masks = ellipse_masks(boxes, width, height)
    scores = torch.rand(BOXES_PER_IMAGE)

    def row_read() -> None:  # ModelUDF._image and _embed_images: the row's pixels into a tensor
        for i in range(decoded.num_rows):
            pixels = decoded.column(PIXELS)[i].as_py()
            rh, rw = decoded.column(RESIZED_HW)[i].as_py()
            torch.frombuffer(bytearray(pixels), dtype=torch.uint8).view(rh, rw, 3)

    coder = RunLengthCoder(height, width)
    coder.add(masks)  # the device's work (on a GPU), not timed
    packed = coder.transfer(scores, scores)
    out["model_host"] = cpu_ms(row_read, rounds, BATCH) + cpu_ms(lambda: coder.unpack(packed, 2), rounds, 1)
    stats = coder.unpack(packed, 2)
    encode_input = {"id": [r["id"] for r in rows], IMAGE_SIZE: [[height, width]] * BATCH,
                    RUN_LENGTHS: [[c.tolist() for c in stats.counts]] * BATCH}
    for field in RESULT_FIELDS:
        if field.name not in encode_input:
            encode_input[field.name] = pa.nulls(BATCH, field.type)
    encode_batch = pa.table(encode_input)
    encode = StageRunner(EncodeUDF.stage(["id"], "-"))

    def encode_and_write() -> None:
        table = encode(encode_batch)
        pq.write_table(table, io.BytesIO(), compression="snappy")

    out["encode_write"] = cpu_ms(encode_and_write, rounds, BATCH)
    out["total"] = out["decode"] + out["transfer"] + out["model_host"] + out["encode_write"]
    return out


def resize_variants(image_bytes: bytes) -> Dict[str, np.ndarray]:
    """The model-input image of one JPEG by the exact path and by each option."""
    processor = SamHQProcessor(IMAGE_SIZE_MODEL)
    exact, _ = processor.resize_image(Image.open(io.BytesIO(image_bytes)))
    drafted = Image.open(io.BytesIO(image_bytes))
    drafted.draft("RGB", (IMAGE_SIZE_MODEL, IMAGE_SIZE_MODEL))
    draft, _ = processor.resize_image(drafted)
    image = Image.open(io.BytesIO(image_bytes))
    scale = IMAGE_SIZE_MODEL / max(image.size)
    target = (round(image.width * scale), round(image.height * scale))
    reducing = np.asarray(image.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0))
    return {"exact": exact, "draft": draft, "reducing_gap=2": reducing}


def option_costs(data: List[bytes], rounds: int) -> Dict[str, float]:
    processor = SamHQProcessor(IMAGE_SIZE_MODEL)

    def exact() -> None:
        for d in data:
            processor.resize_image(Image.open(io.BytesIO(d)))

    def array_path() -> None:  # what resize_image did before its PIL path: the same pixels
        for d in data:
            resize_longest_side(to_rgb_array(Image.open(io.BytesIO(d))), IMAGE_SIZE_MODEL)

    def draft() -> None:
        for d in data:
            image = Image.open(io.BytesIO(d))
            image.draft("RGB", (IMAGE_SIZE_MODEL, IMAGE_SIZE_MODEL))
            processor.resize_image(image)

    def reducing() -> None:
        for d in data:
            image = Image.open(io.BytesIO(d))
            scale = IMAGE_SIZE_MODEL / max(image.size)
            image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR, reducing_gap=2.0)

    return {"exact": cpu_ms(exact, rounds, len(data)), "array path": cpu_ms(array_path, rounds, len(data)),
            "draft": cpu_ms(draft, rounds, len(data)),
            "reducing_gap=2": cpu_ms(reducing, rounds, len(data))}


def random_vit_b() -> SamHQModel:
    torch.manual_seed(0)
    model = SamHQModel(SamHQConfig()).eval()
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    return model


@torch.inference_mode()
def option_mask_iou(model: SamHQModel, image_bytes: bytes, variants: Dict[str, np.ndarray]) -> Dict[str, float]:
    processor = SamHQProcessor.for_model(model)
    original = Image.open(io.BytesIO(image_bytes)).size[::-1]
    boxes = random_boxes(original[1], original[0], np.random.default_rng(1))
    scaled_boxes = torch.from_numpy(processor.scale_boxes(boxes, original))[None]
    masks = {}
    for name, resized in variants.items():
        pixels = processor.model_input(torch.from_numpy(np.ascontiguousarray(resized)))[None]
        embeddings, intermediate = model.get_image_embeddings(pixels)
        out = model.decode_prompts(embeddings, intermediate, input_boxes=scaled_boxes, multimask_output=False)
        masks[name] = out.pred_masks[0, :, 0] > 0
    return {name: float(mask_iou(masks[name], masks["exact"]).mean()) for name in variants if name != "exact"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-iou", action="store_true", help="skip the mask IoU of the options (a vit_b on CPU)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    wall_start, counters_at_start = time.time(), cpu_counters()
    sources = photos()
    data = {name: [jpeg(p if size is None else scaled(p, size)) for p in sources] for name, size in SIZES.items()}
    results = {}
    for name in SIZES:
        results[name] = measure_size(name, data[name], args.rounds)
        print(f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in results[name].items()), flush=True)
    options = {name: option_costs(data[name], args.rounds) for name in ("1080p", "4K")}
    differences: Dict[str, Dict[str, float]] = {}
    ious: Dict[str, Dict[str, float]] = {}
    model = None if args.no_iou else random_vit_b()
    for name in ("1080p", "4K"):
        variants = resize_variants(data[name][0])
        differences[name] = {k: float(np.abs(v.astype(np.int16) - variants["exact"].astype(np.int16)).mean())
                             for k, v in variants.items() if k != "exact"}
        if model is not None:
            ious[name] = option_mask_iou(model, data[name][0], variants)
        print(f"{name} options: cpu ms {options[name]}, pixel diff {differences[name]}, IoU {ious.get(name)}", flush=True)
    load_after = os.getloadavg()

    lines = [
        "# Data plane: CPU ms per image outside the model",
        "",
        f"Run {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')} on {cpu_model()}, "
        f"{os.cpu_count()} CPUs, {platform.python_version()}, torch {torch.__version__} (1 thread); load average "
        f"before {load_before[0]:.2f}, after {load_after[0]:.2f}; {time.time() - wall_start:.0f} s wall; "
        f"{contention(counters_at_start, time.time() - wall_start)}. "
        f"Method: `bench/data_plane.py` docstring. {BOXES_PER_IMAGE} boxes per image, batches of {BATCH}, "
        f"median of {args.rounds} rounds.",
        "",
        "| images | JPEG KiB | decode + resize + boxes | transfer (Arrow IPC) | shipped KiB | model host "
        "| RLE + Parquet | total CPU ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['jpeg_kb']:.0f} | {r['decode']:.2f} | {r['transfer']:.2f} | {r['shipped_kb']:.0f} "
                     f"| {r['model_host']:.2f} | {r['encode_write']:.2f} | **{r['total']:.2f}** |")
    lines += ["", "Options (decode + resize only, CPU ms per image; pixel difference: mean |Δ| of the 1024 px "
              "model input vs the exact path, 0-255; mask IoU vs the exact path, random vit_b, 50 boxes):", "",
              "| images | exact | exact, through an array (before) | draft | reducing_gap=2 | draft Δ px "
              "| reducing Δ px | draft mask IoU | reducing mask IoU |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in options:
        iou = ious.get(name, {})
        lines.append(f"| {name} | {options[name]['exact']:.2f} | {options[name]['array path']:.2f} "
                     f"| {options[name]['draft']:.2f} "
                     f"| {options[name]['reducing_gap=2']:.2f} | {differences[name]['draft']:.2f} "
                     f"| {differences[name]['reducing_gap=2']:.2f} | {iou.get('draft', float('nan')):.4f} "
                     f"| {iou.get('reducing_gap=2', float('nan')):.4f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
