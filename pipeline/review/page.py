"""`python -m pipeline review`: a static HTML page for looking over a job's masks (no
server: `index.html` and its pictures in one directory, opened from disk).

The page shows the totals (rows, failed rows by error kind, images, masks), the masks per
category, histograms of the predicted IoU and the stability score, and at most `max_images`
images with their masks and boxes (a segment-everything mask: the point that found it): first
the `needs_review` images with the lowest review score (an image's lowest predicted IoU or
stability over its masks), then a seeded sample of the others. It filters by category and by
what found the masks (`selection.found_by_kinds`) in the browser (also from the address:
`index.html#category=<name>&found_by=<kind>`), enlarges an image on a click, and keeps a
reviewer's good / bad marks per mask in the browser's storage, downloadable as the JSON or CSV
that `pipeline.output.marks` reads (`export --exclude` / `--only`).

Bounded over any output size: one pass over the results (`ResultReader`) keeps only counters,
histogram bins, a heap of the `needs_review` lowest-scored images and a reservoir sample of
the rest, so never more than `max_images` images' masks at once; then a second, targeted read
of the images input fetches only the row groups that hold the chosen images, and draws them
one at a time. The page is made beside `--out` and takes its place when complete.

`--out` may be missing, empty or hold an earlier page: the page lists its own files (index.html
and those under img/) in `.samhq-review.json`, and a later page replaces only those, file by
file (index.html after its pictures), leaving whatever else the directory holds.
"""

import dataclasses
import json
import os
import re
import shutil
import tempfile
from typing import Any, Dict, List, Optional

import numpy as np
from PIL import Image

from ..config import ImageColumnsConfig, JobConfig
from ..ids import id_key, json_value
from ..inputs.images import default_uri_prefixes
from ..masks import drawing, rle
from ..output import JobOutput
from ..output.results import ResultColumns, ResultImage, ResultReader, job_columns
from ..schema import FOUND_BY
from ..storage import Location
from ..storage.urls import basename
from .pictures import Picture, read_pictures
from .selection import FOUND_BY_KINDS, Selection, finite_score, found_by_kinds, review_score, select

PAGE = "index.html"
PICTURES = "img"  # the page's thumbnails and mask layers, beside it
MANIFEST = ".samhq-review.json"  # the page's own files: all that a later page replaces
_GENERATOR = "samhq-annotate review"
_OWN_PICTURE = re.compile(r"[0-9]+(_[0-9]+)?\.(jpg|png)")  # the names `_card` gives
_TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "review_page.html")


def _prompt_box(boxes: Optional[List[Any]], prompt: Optional[int]) -> Optional[Any]:
    """The box of a mask's prompt, if it has one (segment-everything's masks have no prompt)."""
    return boxes[prompt] if boxes and prompt is not None and prompt < len(boxes) else None


def _card(image: ResultImage, section: str, picture: Picture, number: int, out_dir: str, side: int,
          category_names: Dict[int, str]) -> Dict[str, Any]:
    """One image's entry in the page's data, its thumbnail and mask layers written to `out_dir`."""
    masks = [{"box": m.mask_index, "category": category_names.get(m.category_id, str(m.category_id)),
              "iou": m.score, "stability": finite_score(m.stability), "bbox": m.bbox, "color": "#%02x%02x%02x" % drawing.color(k),
              "prompt": _prompt_box(picture.boxes, m.box_index), FOUND_BY: m.found_by,
              "kinds": found_by_kinds(m.found_by), "point": m.point}
             for k, m in enumerate(image.masks)]
    card = {"id": json_value(image.row_id), "file": image.file_name, "name": basename(image.file_name) or image.file_name,
            "section": section, "score": review_score(image),
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
        pixels = rle.decode(mask.rle, f"{image.file_name}", f"mask {mask.mask_index}")
        # A pixel of the thumbnail is in the mask when at least half of what it covers is.
        small = np.asarray(Image.fromarray(pixels.astype(np.uint8) * 255).resize(size, Image.Resampling.BOX)) >= 128
        layer = f"{number}_{k}.png"
        with open(os.path.join(out_dir, PICTURES, layer), "wb") as f:
            f.write(drawing.png_bytes(drawing.mask_layer(small, drawing.color(k))))
        entry["layer"] = f"{PICTURES}/{layer}"
    return card


def _check_out(out_dir: str) -> Optional[List[str]]:
    """The files of the earlier review page in `out_dir` (its manifest's), or None when `out_dir`
    is missing or empty. ValueError for anything else: a file or a link, a directory holding
    other files and no earlier page, or a page whose img/ is not a directory."""
    if os.path.islink(out_dir):
        raise ValueError(f"--out {out_dir} is a symbolic link: name the directory itself")
    if not os.path.lexists(out_dir):
        return None
    if not os.path.isdir(out_dir):
        raise ValueError(f"--out {out_dir} is a file, not a directory")
    if not os.listdir(out_dir):
        return None
    earlier = _earlier_page(out_dir)
    if earlier is None:
        raise ValueError(f"--out {out_dir} is not empty and holds no earlier review page (its {MANIFEST}): choose "
                         "another directory")
    pictures = os.path.join(out_dir, PICTURES)
    if os.path.lexists(pictures) and (os.path.islink(pictures) or not os.path.isdir(pictures)):
        raise ValueError(f"--out {out_dir}: {pictures} is not a directory (a link?): remove it, or choose another "
                         "directory")
    return earlier


def _earlier_page(out_dir: str) -> Optional[List[str]]:
    """The files an earlier page's manifest lists, only names the page itself gives (so that an
    edited manifest cannot make a new page remove anything else); None without a manifest."""
    try:
        # O_NOFOLLOW: a link planted as the manifest is no earlier page.
        with os.fdopen(os.open(os.path.join(out_dir, MANIFEST), os.O_RDONLY | os.O_NOFOLLOW), encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("generator") != _GENERATOR:
        return None
    files = manifest.get("files")
    return [name for name in files if isinstance(name, str) and _own_file(name)] if isinstance(files, list) else None


def _own_file(name: str) -> bool:
    folder, _, picture = name.rpartition("/")
    return name == PAGE or (folder == PICTURES and _OWN_PICTURE.fullmatch(picture) is not None)


def _write_manifest(directory: str, files: List[str]) -> None:
    with open(os.path.join(directory, MANIFEST), "w", encoding="utf-8") as f:
        json.dump({"generator": _GENERATOR, "files": files}, f, indent=0)


def _replace_page(work: str, out_dir: str, earlier: List[str], files: List[str]) -> None:
    """Put the page made in `work` in place of the earlier page in `out_dir`, file by file, each
    by a rename (which replaces a link there rather than following it), index.html after its
    pictures; then the earlier page's files the new one lacks go. The manifest lists both
    pages' files until then, so that an interrupted replacement leaves no file of either
    unlisted."""
    out_fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        try:
            os.mkdir(PICTURES, dir_fd=out_fd)
        except FileExistsError:
            pass
        pictures_fd = os.open(PICTURES, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=out_fd)
        try:
            _write_manifest(work, sorted(set(earlier) | set(files)))
            os.replace(os.path.join(work, MANIFEST), MANIFEST, dst_dir_fd=out_fd)
            for name in files:
                if name != PAGE:
                    picture = name.rpartition("/")[2]
                    os.replace(os.path.join(work, PICTURES, picture), picture, dst_dir_fd=pictures_fd)
            os.replace(os.path.join(work, PAGE), PAGE, dst_dir_fd=out_fd)
            for name in set(earlier) - set(files):
                try:
                    os.unlink(name.rpartition("/")[2], dir_fd=pictures_fd)  # only pictures: both have a PAGE
                except (FileNotFoundError, IsADirectoryError):
                    pass
            _write_manifest(work, files)
            os.replace(os.path.join(work, MANIFEST), MANIFEST, dst_dir_fd=out_fd)
        finally:
            os.close(pictures_fd)
    finally:
        os.close(out_fd)


@dataclasses.dataclass
class ReviewSummary:
    page: str
    totals: Dict[str, Any]
    shown: int  # cards on the page
    unreadable: int  # of them, placeholders for images that could not be read


def write_review(output: JobOutput, out_dir: str, images: Optional[str] = None, config: Optional[JobConfig] = None,
                 id_column: Optional[str] = None, category_column: Optional[str] = None,
                 image_column: Optional[str] = None, max_images: int = 200, needs_review: int = 50, seed: int = 0,
                 side: int = 512) -> ReviewSummary:
    """Write the review page of the results at `output` into the local directory `out_dir`.

    `images`: the job's input Parquet (default: the job's input.path); `image_column` its
    column of encoded images or image URIs (default: the job's). The job's config (`config`,
    else the description beside the results) also gives the id and category columns, the
    prompt boxes' column and format, and the limits and allowed URIs its images are read
    within. `side`: thumbnails' longest side.

    Raises ValueError for what the page cannot be made from (unknown columns, no images input,
    a non-empty `out_dir` that holds no earlier page: `_check_out`) and FileNotFoundError for
    missing inputs. Of an earlier page, only its own files are replaced or removed.
    """
    if side < 16:
        raise ValueError(f"thumbnails need a side of at least 16 pixels, got {side}")
    location = output.location
    if not any(ch in location.path for ch in "*?[") and not location.exists():
        raise FileNotFoundError(f"results not found: {output.url}")
    if config is None:
        description = output.read_description()
        config = description.config if description is not None else None
    columns: ResultColumns = job_columns(output, config, id_column, category_column)
    images = images or (config.input.path if config else None)
    image_column = image_column or (config.input.image_source_column if config else None)
    if images is None or image_column is None:
        raise ValueError(f"--images / --image-column: {output.url} has no job description naming its input: give the "
                         "job's input Parquet and its column of images or image URIs")
    out_dir = os.path.normpath(out_dir)  # "page/" would follow a link where "page" does not
    earlier = _check_out(out_dir)
    storage = location.storage
    source = _image_source(config, columns.id_column, images, image_column)
    boxes_column = config.input.boxes_column if config is not None else None
    reader = ResultReader(output, columns)
    selection = select(reader.images(), max_images, needs_review, seed)
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
        for key, picture in read_pictures([image.row_id for image, _ in chosen], Location(images, storage), source,
                                            boxes_column):
            for n in places[key]:
                cards[n] = _card(chosen[n][0], chosen[n][1], picture, n + 1, work, side, names)
        _write_page(work, output.url, images, reader, selection, cards, names, max_images, needs_review, seed)
        files = [PAGE] + sorted(f"{PICTURES}/{name}" for name in os.listdir(os.path.join(work, PICTURES)))
        if earlier is None:
            _write_manifest(work, files)
            os.replace(work, out_dir)  # takes the place of an empty directory only
        else:
            _replace_page(work, out_dir, earlier, files)
            shutil.rmtree(work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return ReviewSummary(os.path.join(out_dir, PAGE), _totals(reader), len(cards),
                         sum(1 for c in cards if c["thumbnail"] is None))


def _image_source(config: Optional[JobConfig], id_column: str, images: str, image_column: str) -> ImageColumnsConfig:
    """How the page reads its images: as the job read them where the job is known (its limits,
    allowed URIs and boxes), from the columns the arguments name; by default under the job's
    default URI prefixes for an input at `images`."""
    if config is None:
        return ImageColumnsConfig(id_column=id_column, image_column=image_column,
                                 allowed_uri_prefixes=default_uri_prefixes(images))
    prefixes = config.input.allowed_uri_prefixes
    return config.input.model_copy(update={
        "id_column": id_column, "image_column": image_column, "image_uri_column": None,
        "allowed_uri_prefixes": default_uri_prefixes(images) if prefixes is None else prefixes})


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
        FOUND_BY: [{"name": kind, "num_masks": selection.masks_per_kind[kind]} for kind in FOUND_BY_KINDS
                   if kind in selection.masks_per_kind],
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


__all__ = ["ReviewSummary", "write_review"]
