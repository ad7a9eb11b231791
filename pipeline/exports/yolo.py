"""YOLO segmentation dataset export (the layout Ultralytics trains on) of a job's results.

`write_yolo_seg` streams the results (`pipeline.output.results.ResultReader`) into a new local
directory:

    data.yaml              path (the directory), train and val (both `images`), names
    images/<stem><ext>     a symlink to each image of the image-URI column that is a local file
                           under the job's allowed URI prefixes (relative paths read against
                           the job's input directory, as the job reads them); a relative one
                           for images under the images root (`--images-root`), so that the
                           dataset and the images move together
    labels/<stem>.txt      one line per mask: `class x1 y1 x2 y2 ...`, normalised to [0, 1]
    images_to_fetch.jsonl  if any, one JSON object per line, `{"uri": ..., "path": "images/
                           <stem><ext>"}`, for each other image whose URI lies under those
                           prefixes (object-store or HTTP URIs, local paths that are no file):
                           fetch each URI to its path to complete the dataset
    images_in_input.jsonl  if any, `{"id": <row id>, "path": "images/<stem>"}` per line, for
                           each image whose URI is null: the job's input holds it; write each
                           to its path plus its format's extension (`.png`, `.jpg`, ...)

An id is never read as a path: only the image-URI column's values are linked or listed, and
only those under the allowed prefixes (`image_refs.ImageSources`), as the job itself reads only
those; the others are counted (`outside_prefixes`) and get a label file only. An export that
can link or list none of its images is refused (`NoImageToPointAt`).

Ultralytics finds an image's labels by replacing the last `/images/` of its path with
`/labels/` and everything after its last `.` with `txt`, so every image gets its own stem that
pairs under that rule: the image's file name (its id without a URI) without its extension
(kept only if it is 1 to 10 letters and digits), with `/`, `\\`, control characters and
`:*?"<>|` replaced by `_`, a leading `.` too, and every `.` where there is no extension; on a
clash with an earlier image's, `<stem>_<8 hex digits of the SHA-1 of its URI or id>` (then a
running number), so that the same input always gives the same names.

Each mask is one polygon through the centres of its boundary pixels
(`pipeline.masks.polygons.fillpoly_polygon`: holes and further parts joined by zero-width
bridges), which Ultralytics' own label pipeline (resampling, truncation, `cv2.fillPoly`) draws
back as the mask: exactly for a mask of one part, holes included; for a mask of several parts,
plus the line of pixels of each bridge between them (bench/results/ultralytics_fidelity.md).
Images whose rows failed get no label file; images without any exported mask get an empty one
(Ultralytics reads it as background).
"""

import hashlib
import itertools
import json
import os
import re
import shutil
import tempfile
import urllib.parse
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import yaml

from ..ids import json_value
from ..masks import polygons, rle
from ..output.results import ResultImage, ResultReader
from ..storage import is_local, plain_path
from .image_refs import ImageSources, NoImageToPointAt

IMAGES, LABELS, DATA_YAML = "images", "labels", "data.yaml"
TO_FETCH, IN_INPUT = "images_to_fetch.jsonl", "images_in_input.jsonl"
_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f/\\:*?"<>|\u2028\u2029\ud800-\udfff]')
_EXTENSION = re.compile(r"[A-Za-z0-9]{1,10}")
_MAX_STEM_BYTES = 200  # of a name's 255: room for the digest, a running number and the extension


def write_yolo_seg(reader: ResultReader, output_dir: str, simplify: float = 0.0,
                   images: Optional[ImageSources] = None) -> Dict[str, int]:
    """Write the results `reader` streams as a YOLO segmentation dataset in `output_dir` (a
    local directory that must not exist or be empty, and not a symbolic link). It is built in
    a private directory beside it and moved into place once the whole input has been read, so
    a bad input (ValueError) leaves nothing. `images`: where image URIs may point, what
    relative paths are read against, and the root that links are made relative to, if any
    (`ImageSources.of_job`); NoImageToPointAt when no image can be linked or listed to fetch.

    Classes: the 0-based index into `names`; with string categories (or none) the category id
    - 1; with integer categories the id itself, and `names` lists every id from 0 to the
    largest (ids unused by the data named too), since Ultralytics wants indices 0..n-1.

    Returns counts: images, objects (label lines), linked images, images to fetch, images
    without a URI (no_image_uri), images outside the prefixes, empty label files, and the
    reader's skipped_rows, skipped_boxes and categories.
    """
    polygons.check_tolerance(simplify)
    images = images or ImageSources()
    if not is_local(output_dir):
        raise ValueError(f"--output {output_dir}: yolo-seg writes a local directory (its images are symlinks)")
    final = _final_path(output_dir)
    os.makedirs(os.path.dirname(final), exist_ok=True)
    # mkdtemp's directory is new, unpredictable and only ours, so no one can plant a link in
    # what is built; the dataset inside it gets the umask's mode.
    private = tempfile.mkdtemp(prefix=f".{os.path.basename(final)[:64]}.partial-", dir=os.path.dirname(final))
    building = os.path.join(private, "dataset")
    counts = {"linked": 0, "to_fetch": 0, "no_image_uri": 0, "outside_prefixes": 0, "empty_labels": 0}
    try:
        for directory in (building, os.path.join(building, IMAGES), os.path.join(building, LABELS)):
            os.mkdir(directory)
        with (open(os.path.join(building, TO_FETCH), "x", encoding="utf-8") as to_fetch,
              open(os.path.join(building, IN_INPUT), "x", encoding="utf-8") as in_input):
            for image in reader.images():
                uri = image.uri
                stem, extension = _claim_stem(building, image, uri)
                _write_labels(os.path.join(building, LABELS, f"{stem}.txt"), image, reader, simplify)
                if not image.masks:
                    counts["empty_labels"] += 1
                entry = f"{IMAGES}/{stem}{extension}"
                source = images.source(uri)
                if source is None:
                    in_input.write(_json_line({"id": json_value(image.row_id), "path": entry}))
                    counts["no_image_uri"] += 1
                elif not images.allowed(source):
                    counts["outside_prefixes"] += 1
                elif is_local(source) and os.path.isfile(source):
                    relative = images.under_root(source)
                    # Under the images root the link is relative: the dataset and the images move together.
                    target = os.path.relpath(os.path.realpath(source), os.path.join(final, IMAGES)) \
                        if relative is not None else source
                    os.symlink(target, os.path.join(building, entry))
                    counts["linked"] += 1
                else:
                    to_fetch.write(_json_line({"uri": source, "path": entry}))
                    counts["to_fetch"] += 1
        if reader.num_images and not counts["linked"] + counts["to_fetch"]:
            raise NoImageToPointAt(f"yolo-seg: none of the {reader.num_images} images can be linked or listed to fetch "
                                   f"(named by id: {counts['no_image_uri']}, outside the job's allowed URI prefixes: "
                                   f"{counts['outside_prefixes']})")
        with open(os.path.join(building, DATA_YAML), "x", encoding="utf-8") as f:
            f.write(f"# YOLO segmentation dataset written by samhq-annotate from {reader.output.url}\n"
                    "# train and val are the same images: split them as the training needs.\n")
            yaml.safe_dump({"path": final, "train": IMAGES, "val": IMAGES, "names": _names(reader)}, f,
                           sort_keys=False, allow_unicode=True)
        for name, count in ((TO_FETCH, counts["to_fetch"]), (IN_INPUT, counts["no_image_uri"])):
            if not count:
                os.remove(os.path.join(building, name))
        # rename takes the place of an empty directory only, and never follows a link there.
        os.rename(building, final)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return {"images": reader.num_images, "objects": reader.num_masks, **counts, "skipped_rows": reader.skipped_rows,
            "skipped_boxes": reader.skipped_boxes, "categories": len(reader.categories())}


def label_line(class_index: int, polygon: np.ndarray, height: int, width: int) -> str:
    """One object of a label file: its class and its (n, 2) polygon of pixel-centre indices
    (`polygons.fillpoly_polygon`) as fractions of the image's width and height. A pixel's
    centre lies at its index + 0.5, which Ultralytics' truncation to integers takes back to
    the index. 8 significant digits: finer than the float32 that Ultralytics reads them into."""
    coordinates = ((polygon + 0.5) / [width, height]).ravel()
    return f"{class_index} " + " ".join(f"{v:.8g}" for v in coordinates)


def _final_path(output_dir: str) -> str:
    """The output's absolute path, its parent's links resolved but not its own; ValueError
    unless it is missing or an empty directory."""
    path = os.path.abspath(plain_path(output_dir))
    final = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
    if os.path.islink(final):
        raise ValueError(f"--output {output_dir} is a symbolic link: name the directory itself, or a new one")
    if os.path.lexists(final) and (not os.path.isdir(final) or os.listdir(final)):
        raise ValueError(f"--output {output_dir} exists and is not an empty directory: yolo-seg writes a new one")
    return final


def _write_labels(path: str, image: ResultImage, reader: ResultReader, simplify: float) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for mask in image.masks:
            decoded = rle.decode(mask.rle, f"image {image.file_name!r}", f"mask {mask.mask_index}")
            polygon = polygons.fillpoly_polygon(decoded, simplify)
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


def _claim_stem(directory: str, image: ResultImage, uri: Optional[str]) -> Tuple[str, str]:
    """A stem no earlier image took, its label file created empty (the directory keeps the
    names taken, so memory does not grow with the number of images), and the image's
    extension: from the URI's file name, or none for an image named by its id."""
    name, extension = _split_extension(_file_part(uri)) if uri is not None else (image.file_name, "")
    stem = _safe_stem(name, keep_dots=bool(extension)) or f"image_{image.index}"
    digest = hashlib.sha1(image.file_name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    candidates = itertools.chain([stem, f"{stem}_{digest}"], (f"{stem}_{digest}_{n}" for n in itertools.count(2)))
    for candidate in candidates:
        try:
            with open(os.path.join(directory, LABELS, f"{candidate}.txt"), "x"):
                return candidate, extension
        except FileExistsError:
            continue
    raise AssertionError("unreachable: the candidates never end")


def _safe_stem(name: str, keep_dots: bool) -> str:
    """`name` as a file name that Ultralytics pairs with its labels: no separators, control
    characters or hidden name, and no `.` at all when no extension follows (its label path is
    cut at the last `.`)."""
    stem = _UNSAFE.sub("_", name)
    stem = re.sub(r"^\.", "_", stem) if keep_dots else stem.replace(".", "_")
    return stem.encode("utf-8", "surrogatepass")[:_MAX_STEM_BYTES].decode("utf-8", "ignore")


def _split_extension(file_name: str) -> Tuple[str, str]:
    """(name, `.ext`) when the file name ends in a plausible image extension, else (it, "")."""
    name, dot, extension = file_name.rpartition(".")
    if dot and name and _EXTENSION.fullmatch(extension):
        return name, f".{extension}"
    return file_name, ""


def _file_part(uri: str) -> str:
    """The last path segment of a path or URI, without a query or fragment."""
    path = urllib.parse.urlsplit(uri).path if "://" in uri else uri
    return os.path.basename(path.rstrip("/"))


def _json_line(value: Dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=True) + "\n"


__all__ = ["label_line", "write_yolo_seg"]
