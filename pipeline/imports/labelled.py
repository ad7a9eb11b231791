"""The labelled Parquet an import writes: one file, `pipeline.schema.LABELLED_FIELDS` after the
id column, that `finetune` reads as it is (`finetune_keys` names its columns for the config).

The file is new: an existing file at the output is never replaced (locally the check and the
write hold a lock; on S3 the write is conditional; elsewhere best effort: `ConditionalFile`).
Ids are integers when every id is one, else text (`pipeline.ids.id_text`); ids that repeat
are refused, as fine-tuning's hold-out by id would put such rows together."""

import os
from collections import Counter
from typing import Any, Dict, List, Tuple

import pyarrow as pa
import pyarrow.parquet as pq

from ..ids import id_text
from ..inputs.images import default_uri_prefixes
from ..schema import (
    LABELLED_BOXES,
    LABELLED_CATEGORIES,
    LABELLED_CHANGED,
    LABELLED_FIELDS,
    LABELLED_ID,
    LABELLED_IMAGE_URI,
    LABELLED_MASKS,
)
from ..storage import Location, is_local, plain_path, store_root, uri_allowed
from ..storage.conditional import ConditionalFile
from ..text import clipped
from .records import LabelledRow

_SHOWN = 3


def check_new_output(output: Location) -> None:
    """ValueError unless `output` names a Parquet file that does not exist yet (fine-tuning
    reads only files named *.parquet)."""
    if not output.url.endswith(".parquet"):
        raise ValueError(f"--output {output.url}: name a new .parquet file (fine-tuning reads *.parquet files)")
    if output.exists():
        raise ValueError(f"--output {output.url} exists; import writes a new file and replaces none: choose another "
                         "path, or remove it first")


def write_labelled(rows: List[LabelledRow], output: Location) -> List[str]:
    """Write the rows at `output` (a new file; ValueError if one appeared since
    `check_new_output`, or for repeated ids). Returns notes on how the ids were written."""
    ids, notes = _id_array([row.row_id for row in rows])
    repeated = [value for value, n in Counter(ids.to_pylist()).items() if n > 1]
    if repeated:
        raise ValueError(f"{len(repeated)} ids belong to more than one task or image (e.g. "
                         f"{', '.join(clipped(v) for v in repeated[:_SHOWN])}), so nothing was written: the same "
                         "images imported twice into the project? Keep one task per image")
    values = {LABELLED_IMAGE_URI: [row.image_uri for row in rows], LABELLED_BOXES: [row.boxes for row in rows],
              LABELLED_MASKS: [row.masks for row in rows], LABELLED_CATEGORIES: [row.categories for row in rows],
              LABELLED_CHANGED: [row.changed for row in rows]}
    table = pa.Table.from_arrays([ids, *(pa.array(values[f.name], f.type) for f in LABELLED_FIELDS)],
                                 schema=pa.schema([pa.field(LABELLED_ID, ids.type), *LABELLED_FIELDS]))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    try:
        ConditionalFile(output).create(sink.getvalue().to_pybytes())
    except FileExistsError:
        raise ValueError(f"--output {output.url} was created by something else while the import ran; nothing was "
                         "replaced: choose another path") from None
    return notes


def _id_array(values: List[Any]) -> Tuple[pa.Array, List[str]]:
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return pa.array(values, pa.int64()), []
    text = [id_text(v) for v in values]
    mixed = not all(isinstance(v, str) for v in values)
    return pa.array(text, pa.string()), (["ids of several types (e.g. a task id beside source ids) written as text"]
                                         if mixed else [])


def finetune_keys(output: Location, rows: List[LabelledRow]) -> Dict[str, Any]:
    """The fine-tuning config's data keys that read the file at `output`: its columns, and the
    allowed URI prefixes its images need when they lie outside fine-tuning's default (the
    directory above the file's, or its bucket)."""
    train = os.path.abspath(plain_path(output.url)) if output.is_local else output.url
    keys: Dict[str, Any] = {"train": train, "id_column": LABELLED_ID, "image_uri_column": LABELLED_IMAGE_URI,
                            "boxes_column": LABELLED_BOXES, "masks_column": LABELLED_MASKS}
    default = default_uri_prefixes(train)
    outside = sorted({row.image_uri for row in rows if not uri_allowed(row.image_uri, default)})
    if outside:
        keys["allowed_uri_prefixes"] = _prefixes(outside)
    return keys


def _prefixes(uris: List[str]) -> List[str]:
    """Prefixes that hold `uris`: their directories' common directory (each directory, when
    that is the filesystem's root), and the buckets or hosts of the URLs."""
    directories = sorted({os.path.dirname(uri) for uri in uris if is_local(uri)})
    common = [os.path.commonpath(directories)] if directories else []
    local = directories if common and common[0] == os.path.dirname(common[0]) else common
    return local + sorted({store_root(uri) for uri in uris if not is_local(uri)})


__all__ = ["check_new_output", "finetune_keys", "write_labelled"]
