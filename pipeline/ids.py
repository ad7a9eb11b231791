"""Stable keys and hashes of row ids: the same in every process and run (unlike `hash`), so
that the evaluation's hash join and fine-tuning's validation split fall the same way
everywhere; and the ids of a column that repeat, for the job's checks."""

import hashlib
import math
from typing import Any, List, Tuple

import pyarrow as pa
import pyarrow.compute as pc


def id_key(value: Any) -> bytes:
    """A stable byte key of an id: equal ids of one type give equal keys in every process."""
    payload = value if isinstance(value, bytes) else value.encode() if isinstance(value, str) else repr(value).encode()
    return type(value).__name__.encode() + b":" + payload


def stable_hash(value: Any) -> int:
    """A 64-bit hash of an id that is the same in every process and run (unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(id_key(value), digest_size=8).digest(), "little")


def repeated_ids(columns: List[pa.ChunkedArray], examples: int = 3) -> Tuple[int, int, List[Any]]:
    """(null ids, distinct ids that appear more than once, a few of them) over id columns of
    one type (e.g. one per file)."""
    chunks = [chunk for column in columns for chunk in column.chunks]
    if not chunks:
        return 0, 0, []
    values = pa.chunked_array(chunks, type=chunks[0].type)
    counts = pc.value_counts(values.drop_null())
    repeated = pc.filter(counts, pc.greater(counts.field("counts"), 1))
    return values.null_count, len(repeated), repeated.field("values")[:examples].to_pylist()


def json_value(value: Any) -> Any:
    """A row id as a JSON value: strings, integers, booleans and finite floats as they are,
    bytes decoded as UTF-8 (hex if not UTF-8), anything else (dates, decimals, ...) as str."""
    if isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.hex()
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    return str(value)


def id_text(row_id: Any) -> str:
    """A row id as the text the review page and the marks files show it as."""
    value = json_value(row_id)
    return value if isinstance(value, str) else str(value)
