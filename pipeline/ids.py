"""Stable keys and hashes of row ids: the same in every process and run (unlike `hash`), so
that the evaluation's hash join and fine-tuning's validation split fall the same way
everywhere; and the ids of a column that repeat, for the job's checks."""

import hashlib
import math
from typing import Any, List, Tuple

import numpy as np
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
    """(null ids, distinct ids that appear more than once, the first few of them in sort order)
    over id columns of one type (e.g. one per file).

    The ids are sorted and neighbours compared rather than counted in a hash table: on a job's
    millions of ids that holds half the memory (bench/results/closing_check_memory.md)."""
    chunks = [chunk for column in columns for chunk in column.chunks]
    if not chunks:
        return 0, 0, []
    nulls = sum(chunk.null_count for chunk in chunks)
    # 64-bit offsets: a job's ids together may pass the 2 GiB a string array can hold.
    wide = {pa.string(): pa.large_string(), pa.binary(): pa.large_binary()}.get(chunks[0].type)
    values = pa.concat_arrays([chunk.cast(wide) if wide is not None else chunk for chunk in chunks]).drop_null()
    if len(values) < 2:
        return nulls, 0, []
    ordered = values.take(pc.sort_indices(values))
    same_as_next = pc.equal(ordered[:-1], ordered[1:]).to_numpy(zero_copy_only=False)
    # A repeated id's run of equal neighbours starts where the one before differs.
    starts = np.flatnonzero(same_as_next & ~np.concatenate(([False], same_as_next[:-1])))
    return nulls, len(starts), ordered.take(pa.array(starts[:examples])).to_pylist()


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
