"""`python -m pipeline review`: a static HTML page for looking over a job's masks (no
server: `index.html` and its pictures in one directory, opened from disk).

The page shows the totals (rows, failed rows by error kind, images, masks), the masks per
category, histograms of the predicted IoU and the stability score, and at most `max_images`
images with their masks and boxes: first the `needs_review` images with the lowest review
score (an image's lowest predicted IoU or stability over its masks), then a seeded sample of
the others. It filters by category in the browser (also from the address:
`index.html#category=<name>`).

Bounded over any output size: one pass over the results (`ResultReader`) keeps only counters,
histogram bins, a heap of the `needs_review` lowest-scored images and a reservoir sample of
the rest, so never more than `max_images` images' masks at once; then a second, targeted read
of the images input fetches only the row groups that hold the chosen images, and draws them
one at a time. The page is made beside `--out` and takes its place when complete.
"""

import dataclasses
import heapq
import json
import math
import os
import random
import shutil
import tempfile
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from . import drawing, rle
from .config import ImageSourceConfig, StorageConfig
from .ids import id_key
from .output_files import read_job_description
from .preflight import default_uri_prefixes
from .results import ResultColumns, ResultImage, ResultReader, job_columns, json_value
from .stages.decode import boxes_to_xyxy, parse_boxes
from .stages.image_reader import ImageReader
from .storage import ParquetInput, filesystem

HISTOGRAM_BINS = 20
PAGE = "index.html"
PICTURES = "img"  # the page's thumbnails and mask layers, beside it
_GENERATOR = '<meta name="generator" content="samhq-annotate review">'
_TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "review_page.html")


def review_score(image: ResultImage) -> Optional[float]:
    """The lowest predicted IoU or stability over the image's masks; None without masks."""
    scores = [s for m in image.masks for s in (m.score, _finite(m.stability)) if s is not None]
    return min(scores) if scores else None


def _finite(value: Optional[float]) -> Optional[float]:
    """A score, or None for a missing or non-finite one (the reader passes any stability on)."""
    return value if value is not None and math.isfinite(value) else None


@dataclasses.dataclass
class Histogram:
    """Counts of scores in [0, 1] in equal bins (values outside are clamped into the end bins);
    `missing`: masks without the score."""

    bins: List[int] = dataclasses.field(default_factory=lambda: [0] * HISTOGRAM_BINS)
    missing: int = 0

    def add(self, value: Optional[float]) -> None:
        if value is None:
            self.missing += 1
        else:
            self.bins[min(len(self.bins) - 1, max(0, int(value * len(self.bins))))] += 1


@dataclasses.dataclass
class Selection:
    """What one pass over the results keeps: the images to show and the counts of all."""

    needs_review: List[ResultImage]  # lowest review score first
    sample: List[ResultImage]  # in result order
    masks_per_category: Dict[int, int]
    iou: Histogram
    stability: Histogram
    images_seen: int


def select(images: Iterable[ResultImage], max_images: int, needs_review: int, seed: int = 0) -> Selection:
    """One pass: the `needs_review` lowest-scored images (ties: the earlier first) and a
    uniform sample (reservoir, seeded) of the others, `max_images` in all when there are as
    many; images without masks are only sampled. Holds at most `max_images` images."""
    if max_images < 1 or not 0 <= needs_review <= max_images:
        raise ValueError(f"need max_images >= 1 and 0 <= needs_review <= max_images, got {max_images}, {needs_review}")
    rng = random.Random(seed)
    lowest: List[Tuple[float, int, ResultImage]] = []  # a max-heap by score, as (-score, -index, image)
    reservoir: List[ResultImage] = []
    offered = 0
    per_category: Dict[int, int] = {}
    iou, stability = Histogram(), Histogram()
    seen = 0

    def offer(image: ResultImage) -> None:
        # Algorithm R over the images that end up outside the heap (evicted ones when they
        # leave it): a uniform sample of the rest, whatever order they are offered in.
        nonlocal offered
        offered += 1
        if len(reservoir) < max_images - needs_review:
            reservoir.append(image)
        else:
            slot = rng.randrange(offered)
            if slot < len(reservoir):
                reservoir[slot] = image

    for image in images:
        seen += 1
        for mask in image.masks:
            per_category[mask.category_id] = per_category.get(mask.category_id, 0) + 1
            iou.add(mask.score)
            stability.add(_finite(mask.stability))
        score = review_score(image)
        if score is None or needs_review == 0:
            offer(image)
        elif len(lowest) < needs_review:
            heapq.heappush(lowest, (-score, -image.index, image))
        elif (-score, -image.index) > lowest[0][:2]:
            offer(heapq.heapreplace(lowest, (-score, -image.index, image))[2])
        else:
            offer(image)
    return Selection([entry[2] for entry in sorted(lowest, reverse=True)], sorted(reservoir, key=lambda i: i.index),
                     per_category, iou, stability, seen)


@dataclasses.dataclass
class Picture:
    """What the images input gives for one chosen image: its bytes and prompt boxes, or why not."""

    data: Optional[bytes] = None
    boxes: Optional[List[List[float]]] = None  # xyxy, in the input's order
    error: Optional[str] = None


def read_pictures(wanted: Iterable[Any], images: str, storage: StorageConfig, id_column: str, image_column: str,
                  boxes_column: Optional[str] = None, box_format: str = "xyxy",
                  allowed_uri_prefixes: Optional[Sequence[str]] = None,
                  limits: Optional[Dict[str, Any]] = None) -> Iterator[Tuple[bytes, Picture]]:
    """(`ids.id_key` of the id, its Picture) for each id in `wanted`, from the images input, in
    the input's order, one image at a time: its id column is read row group by row group and
    only the row groups holding a wanted id are read further. `image_column` holds encoded
    bytes or URIs, read through fsspec as the job reads them: only under `allowed_uri_prefixes`
    (default: the job's default for an input at `images`), so that data cannot make the page
    show arbitrary files, and within the job's `limits` (input.max_image_bytes,
    input.read_timeout_s), by the decode stage's own reader. An unreadable image, or an id not
    in the input, is a Picture with its error."""
    prefixes = default_uri_prefixes(images) if allowed_uri_prefixes is None else list(allowed_uri_prefixes)
    reader = ImageReader(ImageSourceConfig(id_column=id_column, boxes_column=boxes_column or "boxes",
                                           image_column=image_column, allowed_uri_prefixes=prefixes, **(limits or {})),
                         storage)
    missing = {id_key(v): v for v in wanted}
    source = ParquetInput(images, storage, "images")
    for path in source.files:
        with source.fs.open(path, "rb") as f:
            parquet = pq.ParquetFile(f)
            names = parquet.schema_arrow.names
            columns = [c for c in (image_column, boxes_column) if c is not None and c in names]
            if image_column not in names or id_column not in names:
                raise ValueError(f"images {source.fs.unstrip_protocol(path)}: missing column(s) "
                                 f"{', '.join(repr(c) for c in (id_column, image_column) if c not in names)} "
                                 f"(columns present: {', '.join(names)}); name them with --id-column / --image-column")
            for group in range(parquet.num_row_groups):
                ids = parquet.read_row_group(group, columns=[id_column]).column(0).to_pylist()
                hits = [row for row, value in enumerate(ids) if value is not None and id_key(value) in missing]
                if not hits:
                    continue
                table = parquet.read_row_group(group, columns=columns).take(hits).to_pylist()
                for row, values in zip(hits, table, strict=True):
                    key = id_key(ids[row])
                    if missing.pop(key, None) is not None:  # an id twice in the input: its first row
                        yield key, _picture(values, image_column, boxes_column, box_format, reader)
                if not missing:
                    return
    for key, value in missing.items():
        yield key, Picture(error=f"id {json_value(value)!r} is not in the images input {images}")


def _picture(values: Dict[str, Any], image_column: str, boxes_column: Optional[str], box_format: str,
             reader: ImageReader) -> Picture:
    picture = Picture()
    if boxes_column in values:
        try:
            picture.boxes = boxes_to_xyxy(parse_boxes(values[boxes_column]), box_format).tolist()
        except ValueError:
            pass  # the job wrote this row's error; the masks are drawn without their boxes
    try:
        picture.data = reader.image_bytes(values[image_column], image_column)
    except Exception as e:  # noqa: BLE001 - any read failure belongs to this image's card
        picture.error = f"cannot read the image: {type(e).__name__}: {e}"
    return picture


def _card(image: ResultImage, section: str, picture: Picture, number: int, out_dir: str, side: int,
          category_names: Dict[int, str]) -> Dict[str, Any]:
    """One image's entry in the page's data, its thumbnail and mask layers written to `out_dir`."""
    masks = [{"box": m.box_index, "category": category_names.get(m.category_id, str(m.category_id)),
              "iou": m.score, "stability": _finite(m.stability), "bbox": m.bbox, "color": "#%02x%02x%02x" % drawing.color(k),
              "prompt": picture.boxes[m.box_index] if picture.boxes and m.box_index < len(picture.boxes) else None}
             for k, m in enumerate(image.masks)]
    card = {"id": json_value(image.row_id), "file": image.file_name, "section": section, "score": review_score(image),
            "width": image.width, "height": image.height, "segments": masks, "thumbnail": None, "problem": picture.error}
    if picture.data is None:
        return card
    try:
        thumbnail = drawing.open_rgb(picture.data)
    except Exception as e:  # noqa: BLE001 - corrupt or unsupported image: a placeholder card
        card["problem"] = f"cannot decode the image: {type(e).__name__}: {e}"
        return card
    if thumbnail.size != (image.width, image.height):
        card["problem"] = (f"the image is {thumbnail.width} x {thumbnail.height}, the results say {image.width} x "
                         f"{image.height}: not the image the job read?")
        return card
    scale = min(1.0, side / max(image.width, image.height))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    name = f"{number}.jpg"
    thumbnail.resize(size, Image.Resampling.LANCZOS).save(os.path.join(out_dir, PICTURES, name), quality=85)
    card["thumbnail"] = f"{PICTURES}/{name}"
    for k, (entry, mask) in enumerate(zip(masks, image.masks, strict=True)):
        pixels = rle.decode(mask.rle, f"{image.file_name}", f"mask {mask.box_index}")
        # A pixel of the thumbnail is in the mask when at least half of what it covers is.
        small = np.asarray(Image.fromarray(pixels.astype(np.uint8) * 255).resize(size, Image.Resampling.BOX)) >= 128
        layer = f"{number}_{k}.png"
        with open(os.path.join(out_dir, PICTURES, layer), "wb") as f:
            f.write(drawing.png_bytes(drawing.mask_layer(small, drawing.color(k))))
        entry["layer"] = f"{PICTURES}/{layer}"
    return card


def _check_out(out_dir: str) -> None:
    """ValueError unless `out_dir` is missing, empty or an earlier review page's directory
    (which the new page replaces): nothing else is ever removed."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out {out_dir} is a file, not a directory")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        page = os.path.join(out_dir, PAGE)
        earlier = False
        if os.path.isfile(page):
            with open(page, encoding="utf-8", errors="replace") as f:
                earlier = _GENERATOR in f.read(4096)
        if not earlier:
            raise ValueError(f"--out {out_dir} is not empty and holds no earlier review page: choose another directory")


@dataclasses.dataclass
class ReviewSummary:
    page: str
    totals: Dict[str, Any]
    shown: int  # cards on the page
    unreadable: int  # of them, placeholders for images that could not be read


def write_review(input_path: str, out_dir: str, images: Optional[str] = None,
                 storage: StorageConfig = StorageConfig(),  # noqa: B008 - never mutated
                 job: Optional[Dict[str, Any]] = None, id_column: Optional[str] = None,
                 category_column: Optional[str] = None, image_column: Optional[str] = None,
                 max_images: int = 200, needs_review: int = 50, seed: int = 0, side: int = 512) -> ReviewSummary:
    """Write the review page of the results at `input_path` into the local directory `out_dir`.

    `images`: the job's input Parquet (default: the job's input.path); `image_column` its
    column of encoded images or image URIs (default: the job's). The job (`job`: its config as
    a dict, else the `_samhq_job.json` beside the results) also gives the id and category
    columns and the prompt boxes' column and format. `side`: thumbnails' longest side.

    Raises ValueError for what the page cannot be made from (unknown columns, no images input,
    a non-empty `out_dir` that is no earlier review) and FileNotFoundError for missing inputs.
    """
    if side < 16:
        raise ValueError(f"thumbnails need a side of at least 16 pixels, got {side}")
    fs, path = filesystem(input_path, storage)
    if not any(ch in path for ch in "*?[") and not fs.exists(path):
        raise FileNotFoundError(f"results not found: {input_path}")
    if job is None:
        description = read_job_description(input_path, storage)
        job = description["config"] if description else None
    inputs = job["input"] if job else {}
    columns: ResultColumns = job_columns(input_path, storage, job, id_column, category_column)
    images = images or inputs.get("path")
    image_column = image_column or inputs.get("image_column") or inputs.get("image_uri_column")
    if images is None or image_column is None:
        raise ValueError(f"--images / --image-column: {input_path} has no job description naming its input: give the "
                         "job's input Parquet and its column of images or image URIs")
    _check_out(out_dir)
    reader = ResultReader(input_path, columns, storage)
    selection = select(reader.images(), max_images, needs_review, seed)
    boxes_column = inputs.get("boxes_column")
    chosen = [(image, "review") for image in selection.needs_review] + [(image, "sample") for image in selection.sample]
    names = {c["id"]: str(c["name"]) for c in reader.categories()}
    places: Dict[bytes, List[int]] = {}
    for n, (image, _) in enumerate(chosen):
        places.setdefault(id_key(image.row_id), []).append(n)
    # The page is made beside `out_dir` and put in its place when complete, so that a failure
    # leaves an earlier page as it was.
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".review-", dir=parent)
    try:
        os.chmod(work, 0o755)  # a page to share, not mkdtemp's private directory
        os.makedirs(os.path.join(work, PICTURES))
        cards: List[Dict[str, Any]] = [{}] * len(chosen)
        for key, picture in read_pictures([image.row_id for image, _ in chosen], images, storage, columns.id_column,
                                          image_column, boxes_column, inputs.get("box_format", "xyxy"),
                                          inputs.get("allowed_uri_prefixes"),
                                          {k: inputs[k] for k in ("max_image_bytes", "read_timeout_s") if k in inputs}):
            for n in places[key]:
                cards[n] = _card(chosen[n][0], chosen[n][1], picture, n + 1, work, side, names)
        _write_page(work, input_path, images, reader, selection, cards, names, max_images, needs_review, seed)
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)  # empty, or an earlier review (_check_out)
        os.replace(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return ReviewSummary(os.path.join(out_dir, PAGE), _totals(reader), len(cards),
                         sum(1 for c in cards if c["thumbnail"] is None))


def _totals(reader: ResultReader) -> Dict[str, Any]:
    return {"rows": reader.num_images + reader.skipped_rows, "images": reader.num_images, "num_masks": reader.num_masks,
            "skipped_rows": reader.skipped_rows, "failed_rows": dict(sorted(reader.failed_rows.items())),
            "skipped_boxes": reader.skipped_boxes}


def _write_page(out_dir: str, input_path: str, images: str, reader: ResultReader, selection: Selection,
                cards: List[Dict[str, Any]], names: Dict[int, str], max_images: int, needs_review: int,
                seed: int) -> None:
    data = {
        "results": input_path, "images": images, "totals": _totals(reader),
        "categories": [{"name": names[cid], "num_masks": selection.masks_per_category.get(cid, 0)} for cid in names],
        "histograms": {"iou": dataclasses.asdict(selection.iou), "stability": dataclasses.asdict(selection.stability)},
        "selection": {"max_images": max_images, "needs_review": needs_review, "seed": seed,
                      "others": selection.images_seen - len(selection.needs_review)},
        "cards": cards,
    }
    with open(_TEMPLATE, encoding="utf-8") as f:
        template = f.read()
    # Every "<" as its JSON escape, so that no text in the data ("</script>", "<!--") can end or
    # change the script element it sits in.
    page = template.replace("__REVIEW_DATA__", json.dumps(data, allow_nan=False).replace("<", "\\u003c"))
    with open(os.path.join(out_dir, PAGE), "w", encoding="utf-8") as f:
        f.write(page)


__all__ = ["Histogram", "Picture", "ReviewSummary", "Selection", "read_pictures", "review_score", "select",
           "write_review"]
