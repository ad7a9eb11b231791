"""Label Studio export of a job's results: pre-annotations for review.

`write_label_studio` streams the results (`pipeline.output.results.ResultReader`) into a JSON array
of Label Studio tasks, one per image, with the masks as a prediction of brush regions:

    {"data": {"image": <the image's URI, or /data/local-files/?d=<path> under the root>,
              "source_id": <the row's id>},
     "predictions": [{"model_version": ..., "score": <lowest predicted IoU of the image's masks>,
                      "result": [{"id", "type": "brushlabels", "from_name": "label",
                                  "to_name": "image", "original_width", "original_height",
                                  "image_rotation": 0, "score": <the mask's predicted IoU>,
                                  "value": {"format": "rle", "rle": [...],
                                            "brushlabels": [<category name>]}}, ...]}]}

Label Studio opens object-store URIs through a cloud storage of the project and HTTP URLs as
they are; it serves local files only under its document root: with `--label-studio-root DIR`
(started with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and
LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=DIR, and a Local Files storage of the project for a
folder below DIR),
a local image under DIR becomes `/data/local-files/?d=<its path under DIR>`.

The prediction's score is its least confident mask's, so that sorting tasks by prediction
score puts the images most in need of review first; an image without masks has no score.
Brush RLE is Label Studio's own (`pipeline.masks.brush`). Beside the tasks, `<output stem>.labeling_config.xml` is the
labeling interface they fit (BrushLabels named "label" on an Image named "image", with the
category names). XML 1.0 cannot hold some characters even escaped (NUL and other control
characters but tab and newlines, lone surrogates, U+FFFE, U+FFFF): a category name holding one
is refused (ValueError naming it) rather than written as a config Label Studio cannot parse or
as a label the tasks' brushlabels would not match.

Tasks are spooled to a local temporary file while the input streams and copied to the output
once all of it has been read, so memory stays bounded and a bad input leaves no output.
"""

import json
import os
import re
import shutil
import tempfile
from typing import Any, Dict, List, Optional
from xml.sax.saxutils import quoteattr

import numpy as np

from ..ids import json_value
from ..masks import brush, rle
from ..output.results import ResultImage, ResultReader
from ..storage import Location
from .image_refs import ImageSources, NoImageToPointAt

FROM_NAME, TO_NAME = "label", "image"
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def write_label_studio(reader: ResultReader, output: Location, model_version: str = "samhq-annotate",
                       images: Optional[ImageSources] = None) -> Dict[str, int]:
    """Write the results `reader` streams as Label Studio tasks at `output` (local or any
    fsspec URL) and their labeling config beside it (`labeling_config_path`). Each task's
    image is its URI as the job read it (`images`: relative paths against the job's input
    directory), a local-files URL for a file under `images.root` (Label Studio's document
    root). Returns counts: tasks, regions (masks), images served as local files, and the
    reader's skipped_rows, skipped_boxes and categories. NoImageToPointAt, writing nothing,
    when every image is named by its id alone (no image URI): Label Studio could show none."""
    images = images or ImageSources()
    names: Dict[int, str] = {}
    local_files = by_id = 0
    with tempfile.TemporaryDirectory(prefix="label_studio_export_") as tmp:
        spool = os.path.join(tmp, "tasks.json")
        with open(spool, "w", encoding="utf-8") as tasks:
            for image in reader.images():
                for mask in image.masks:
                    if mask.category_id not in names:  # a new category: the table grows as rows are read
                        names = {c["id"]: c["name"] for c in reader.categories()}
                source = images.source(image.uri)
                shown = images.label_studio_url(source) if source is not None else image.file_name
                local_files += source is not None and shown != source
                by_id += source is None
                tasks.write(("[" if image.index == 1 else ",\n")
                            + _dumps(_task(image, shown, names, model_version)))
            tasks.write("[]" if reader.num_images == 0 else "]\n")
        if reader.num_images and by_id == reader.num_images:
            raise NoImageToPointAt(f"label-studio: the output names all {by_id} images by id alone, so Label Studio "
                                   "could show none of them")
        config = labeling_config([c["name"] for c in reader.categories()])
        with output.open_for_write() as out, open(spool, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
    with Location(labeling_config_path(output.url), output.storage).open_for_write() as out:
        out.write(config.encode())
    return {"tasks": reader.num_images, "regions": reader.num_masks, "local_files": local_files,
            "skipped_rows": reader.skipped_rows,
            "skipped_boxes": reader.skipped_boxes, "categories": len(reader.categories())}


def labeling_config_path(output_path: str) -> str:
    """Where the labeling config of the tasks at `output_path` goes."""
    stem = output_path[:-len(".json")] if output_path.endswith(".json") else output_path
    return f"{stem}.labeling_config.xml"


def labeling_config(category_names: List[str]) -> str:
    """Label Studio's labeling interface for the tasks: brush labels on the image. ValueError
    for a name that XML cannot hold."""
    for name in category_names:
        bad = _NOT_XML.search(name)
        if bad:
            raise ValueError(f"category {name!r} holds {bad.group()!r}, which an XML document cannot hold even "
                             "escaped, so Label Studio's labeling config cannot name it: rename that category in the "
                             "job's input (its category column) and export again")
    labels = "".join(f"    <Label value={quoteattr(name)}/>\n" for name in category_names)
    return (f'<View>\n  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
            f'  <BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}  </BrushLabels>\n</View>\n')


def brush_region(region_id: str, mask: np.ndarray, category: str) -> Dict[str, Any]:
    """A Label Studio brush region of `mask` (bool, H x W) labelled `category`, on the labeling
    config's image."""
    h, w = mask.shape
    return {"id": region_id, "type": "brushlabels", "from_name": FROM_NAME, "to_name": TO_NAME, "original_width": w,
            "original_height": h, "image_rotation": 0,
            "value": {"format": "rle", "rle": brush.encode(mask), "brushlabels": [category]}}


def _task(image: ResultImage, shown: str, names: Dict[int, str], model_version: str) -> Dict[str, Any]:
    results = []
    for mask in image.masks:
        decoded = rle.decode(mask.rle, f"image {image.file_name!r}", f"mask {mask.mask_index}")
        results.append({**brush_region(f"{image.index}_{mask.mask_index}", decoded, names[mask.category_id]),
                        "score": mask.score})
    prediction: Dict[str, Any] = {"model_version": model_version, "result": results}
    if image.masks:
        prediction["score"] = min(mask.score for mask in image.masks)
    return {"data": {"image": shown, "source_id": json_value(image.row_id)}, "predictions": [prediction]}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


__all__ = ["brush_region", "labeling_config", "labeling_config_path", "write_label_studio"]
