"""YOLO segmentation dataset export (the layout Ultralytics trains on) of a job's results.

`write_yolo_seg` streams the results (`pipeline.output.results.ResultReader`) into a new local
directory:

    data.yaml            path (the directory), train and val (both `images`), names
    images/<stem><ext>   a symlink to each local image (relative paths are taken from the
                         working directory)
    labels/<stem>.txt    one line per mask: `class x1 y1 x2 y2 ...`, normalised to [0, 1]
    unlinked_images.txt  `<URI or path>\t<images/stem.ext>` per image that is not a local
                         file (object-store or HTTP URIs, or no image column), if any:
                         fetch each to its path to complete the dataset

Ultralytics finds an image's labels by replacing `images/` with `labels/` in its path, so
every image gets its own stem: the image's file name without its extension, and on a clash
with an earlier image's `<stem>_<8 hex digits of the SHA-1 of its URI or path>` (then a
running number), so that the same input always gives the same names.

Each mask is one polygon (`pipeline.masks.polygons.single_polygon`: holes and further parts joined
by zero-width bridges). Images whose rows failed get no label file; images without any
exported mask get an empty one (Ultralytics reads it as background).
"""

import hashlib
import itertools
import os
import shutil
import urllib.parse
from typing import Any, Dict, List

import numpy as np
import yaml

from ..masks import polygons, rle
from ..output.results import ResultImage, ResultReader
from ..storage import is_local, local_path

IMAGES, LABELS, DATA_YAML, UNLINKED = "images", "labels", "data.yaml", "unlinked_images.txt"


def write_yolo_seg(reader: ResultReader, output_dir: str, simplify: float = 0.0) -> Dict[str, int]:
    """Write the results `reader` streams as a YOLO segmentation dataset in `output_dir` (a
    local directory that must not exist or be empty). It is built beside it and moved into
    place once the whole input has been read, so a bad input (ValueError) leaves nothing.

    Classes: the 0-based index into `names`; with string categories (or none) the category id
    - 1; with integer categories the id itself, and `names` lists every id from 0 to the
    largest (ids unused by the data named too), since Ultralytics wants indices 0..n-1.

    Returns counts: images, objects (label lines), linked and unlinked images, empty label
    files, and the reader's skipped_rows, skipped_boxes and categories.
    """
    polygons.check_tolerance(simplify)
    if not is_local(output_dir):
        raise ValueError(f"--output {output_dir}: yolo-seg writes a local directory (its images are symlinks)")
    final = os.path.abspath(local_path(output_dir))
    if os.path.exists(final) and (not os.path.isdir(final) or os.listdir(final)):
        raise ValueError(f"--output {output_dir} exists and is not an empty directory: yolo-seg writes a new one")
    building = f"{final}.partial-{os.getpid()}"
    os.makedirs(os.path.join(building, IMAGES))
    os.makedirs(os.path.join(building, LABELS))
    counts = {"linked": 0, "unlinked": 0, "empty_labels": 0}
    try:
        with open(os.path.join(building, UNLINKED), "w", encoding="utf-8") as unlinked:
            for image in reader.images():
                stem = _claim_stem(building, image)
                _write_labels(os.path.join(building, LABELS, f"{stem}.txt"), image, reader, simplify)
                if not image.masks:
                    counts["empty_labels"] += 1
                image_name = f"{stem}{_extension(image.file_name)}"
                source = local_path(image.file_name) if is_local(image.file_name) else None
                if source is not None and os.path.isfile(source):
                    os.symlink(source, os.path.join(building, IMAGES, image_name))
                    counts["linked"] += 1
                else:
                    unlinked.write(f"{image.file_name}\t{IMAGES}/{image_name}\n")
                    counts["unlinked"] += 1
        with open(os.path.join(building, DATA_YAML), "w", encoding="utf-8") as f:
            f.write(f"# YOLO segmentation dataset written by samhq-annotate from {reader.output.url}\n"
                    "# train and val are the same images: split them as the training needs.\n")
            yaml.safe_dump({"path": final, "train": IMAGES, "val": IMAGES, "names": _names(reader)}, f,
                           sort_keys=False, allow_unicode=True)
        if not counts["unlinked"]:
            os.remove(os.path.join(building, UNLINKED))
        if os.path.isdir(final):
            os.rmdir(final)  # empty, checked above
        os.rename(building, final)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return {"images": reader.num_images, "objects": reader.num_masks, **counts, "skipped_rows": reader.skipped_rows,
            "skipped_boxes": reader.skipped_boxes, "categories": len(reader.categories())}


def label_line(class_index: int, polygon: np.ndarray, height: int, width: int) -> str:
    """One object of a label file: its class and its (n, 2) x, y polygon over the image's size."""
    coordinates = (polygon / [width, height]).ravel()
    return f"{class_index} " + " ".join(f"{v:.6g}" for v in coordinates)


def _write_labels(path: str, image: ResultImage, reader: ResultReader, simplify: float) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for mask in image.masks:
            decoded = rle.decode(mask.rle, f"image {image.file_name!r}", f"mask {mask.box_index}")
            polygon = polygons.single_polygon(decoded, simplify)
            f.write(label_line(_class_index(mask.category_id, reader), polygon, image.height, image.width) + "\n")


def _class_index(category_id: int, reader: ResultReader) -> int:
    if not reader.integer_categories:
        return category_id - 1  # ids 1, 2, ... in order of first appearance
    if category_id < 0:
        raise ValueError(f"yolo-seg classes are indices from 0: category id {category_id} has none")
    return category_id


def _names(reader: ResultReader) -> Dict[int, str]:
    categories: List[Dict[str, Any]] = reader.categories()
    if not reader.integer_categories:
        return {c["id"] - 1: c["name"] for c in categories}
    largest = max((c["id"] for c in categories), default=-1)
    return {i: str(i) for i in range(largest + 1)}


def _claim_stem(directory: str, image: ResultImage) -> str:
    """A label file name no earlier image took, created empty (the directory keeps the names
    taken, so memory does not grow with the number of images)."""
    name = os.path.splitext(_file_part(image.file_name))[0] or f"image_{image.index}"
    digest = hashlib.sha1(image.file_name.encode()).hexdigest()[:8]
    candidates = itertools.chain([name, f"{name}_{digest}"], (f"{name}_{digest}_{n}" for n in itertools.count(2)))
    for candidate in candidates:
        try:
            with open(os.path.join(directory, LABELS, f"{candidate}.txt"), "x"):
                return candidate
        except FileExistsError:
            continue
    raise AssertionError("unreachable: the candidates never end")


def _file_part(uri: str) -> str:
    """The last path segment of a path or URI, without a query or fragment."""
    path = urllib.parse.urlsplit(uri).path if "://" in uri else uri
    return os.path.basename(path.rstrip("/"))


def _extension(uri: str) -> str:
    return os.path.splitext(_file_part(uri))[1]


__all__ = ["label_line", "write_yolo_seg"]
