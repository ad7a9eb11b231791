"""The images the review page draws, read from the job's input as the job reads them: only the
row groups that hold a chosen image, each image through the decode stage's own reader (its
limits and allowed URIs), with its prompt boxes."""

import dataclasses
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import pyarrow.parquet as pq

from ..config import ImageColumnsConfig, PromptColumns
from ..ids import id_key, json_value
from ..inputs.images import ImageReader, input_directory
from ..inputs.prompts import read_prompts
from ..storage import Location, ParquetInput


@dataclasses.dataclass
class Picture:
    """What the images input gives for one chosen image: its bytes and prompt boxes, or why not."""

    data: Optional[bytes] = None
    boxes: Optional[List[Optional[List[float]]]] = None  # per prompt, xyxy or None, in the input's order
    error: Optional[str] = None


def read_pictures(wanted: Iterable[Any], images: Location, source: ImageColumnsConfig,
                  boxes_column: Optional[str] = None) -> Iterator[Tuple[bytes, Picture]]:
    """(`ids.id_key` of the id, its Picture) for each id in `wanted`, from the images input, in
    the input's order, one image at a time: its id column is read row group by row group and
    only the row groups holding a wanted id are read further. `source` names the columns (the
    boxes are drawn where `boxes_column` is in the file) and gives the limits the job reads
    its images within: encoded bytes or URIs read through fsspec, only under its
    allowed_uri_prefixes, so that data cannot make the page show arbitrary files, by the decode
    stage's own reader. An unreadable image, or an id not in the input, is a Picture with its
    error."""
    reader = ImageReader(source, images.storage, input_directory(images))
    id_column, image_column = source.id_column, source.image_source_column
    missing = {id_key(v): v for v in wanted}
    parquet_input = ParquetInput(images, "images")
    for path in parquet_input.files:
        with parquet_input.fs.open(path, "rb") as f:
            parquet = pq.ParquetFile(f)
            names = parquet.schema_arrow.names
            columns = [c for c in (image_column, boxes_column) if c in names]
            if image_column not in names or id_column not in names:
                raise ValueError(f"images {images.url_of(path)}: missing column(s) "
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
                        yield key, _picture(values, source, boxes_column, reader)
                if not missing:
                    return
    for key, value in missing.items():
        yield key, Picture(error=f"id {json_value(value)!r} is not in the images input {images.url}")


def _picture(values: Dict[str, Any], source: ImageColumnsConfig, boxes_column: Optional[str],
             reader: ImageReader) -> Picture:
    picture = Picture()
    if boxes_column is not None and boxes_column in values:
        try:
            prompts = read_prompts(values, PromptColumns("input", source.box_format, boxes=boxes_column))
            picture.boxes = [box.tolist() if has_box else None
                             for box, has_box in zip(prompts.boxes, prompts.has_box, strict=True)]
        except ValueError:
            pass  # the job wrote this row's error; the masks are drawn without their boxes
    try:
        picture.data = reader.image_bytes(values[source.image_source_column], source.image_source_column)
    except Exception as e:  # noqa: BLE001 - any read failure belongs to this image's card
        picture.error = f"cannot read the image: {type(e).__name__}: {e}"
    return picture
