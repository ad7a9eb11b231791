"""Stable keys and hashes of row ids: the same in every process and run (unlike `hash`), so
that the evaluation's hash join and fine-tuning's validation split fall the same way
everywhere; the ids of a column that repeat, for the job's checks; and the 64-bit keys a
job's plan keeps of its input's ids instead of the ids themselves."""

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Iterable, List, Tuple, Union

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


_KEY_BASE = np.uint64(0x100000001B3)  # FNV's 64-bit prime: odd, so no byte's weight is lost mod 2**64


def id_keys(ids: Union[pa.Array, pa.ChunkedArray]) -> np.ndarray:
    """64-bit keys (uint64) of the non-null `ids`, in their order: equal ids give equal keys in
    every process, whatever their Arrow width (int32 or int64, string or large_string);
    different ids the same key only by a rare collision (never for integers, their own key).

    Arguments:
      ids: one id column, or part of one.
    Returns:
      one key per non-null id.
    """
    chunks = ids.chunks if isinstance(ids, pa.ChunkedArray) else [ids]
    return np.concatenate([_chunk_keys(chunk.drop_null()) for chunk in chunks] or [np.zeros(0, np.uint64)])


def _chunk_keys(ids: pa.Array) -> np.ndarray:
    kind = ids.type
    if pa.types.is_integer(kind):
        wide = ids.cast(pa.uint64()) if pa.types.is_unsigned_integer(kind) else ids.cast(pa.int64())
        return wide.to_numpy(zero_copy_only=False).view(np.uint64)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind) \
            or pa.types.is_large_binary(kind):
        return _bytes_keys(ids.cast(pa.large_binary()))
    return np.array([stable_hash(value) for value in ids.to_pylist()], dtype=np.uint64)


def _bytes_keys(ids: pa.Array) -> np.ndarray:
    """A polynomial hash of each id's bytes (mod 2**64, all ids at once), its length mixed in,
    then SplitMix64's finalizer so that near ids spread over the keys."""
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int64, count=len(ids) + 1, offset=8 * ids.offset)
    lengths = np.diff(offsets)
    data = np.frombuffer(ids.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]].astype(np.uint64)
    keys = lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    filled = lengths > 0
    if data.size:
        powers = np.cumprod(np.full(int(lengths.max()), _KEY_BASE, dtype=np.uint64))
        starts = offsets[:-1] - offsets[0]
        position = np.arange(data.size) - np.repeat(starts, lengths)  # of each byte in its id
        keys[filled] += np.add.reduceat(data * powers[position], starts[filled])
    keys ^= keys >> np.uint64(30)
    keys *= np.uint64(0xBF58476D1CE4E5B9)
    keys ^= keys >> np.uint64(27)
    keys *= np.uint64(0x94D049BB133111EB)
    keys ^= keys >> np.uint64(31)
    return keys


@dataclass
class InputIdKeys:
    """The 64-bit keys (`id_keys`) of an input's non-null ids, sorted, and its null ids: what a
    job's plan keeps of the input's ids (8 bytes an id, whatever the ids' size)."""

    keys: np.ndarray
    nulls: int

    @classmethod
    def of(cls, columns: Iterable[Union[pa.Array, pa.ChunkedArray]]) -> "InputIdKeys":
        """The keys of every id of `columns` (e.g. one per file)."""
        columns = list(columns)
        keys = np.concatenate([id_keys(c) for c in columns] or [np.zeros(0, np.uint64)])
        keys.sort()
        return cls(keys, sum(c.null_count for c in columns))

    @classmethod
    def joined(cls, parts: List["InputIdKeys"]) -> "InputIdKeys":
        """The keys of several parts' ids together (e.g. one part per file)."""
        keys = np.concatenate([part.keys for part in parts] or [np.zeros(0, np.uint64)])
        keys.sort()
        return cls(keys, sum(part.nulls for part in parts))

    def may_repeat(self) -> bool:
        """Whether two ids share a key: the same id twice, or (rarely) a collision."""
        return bool(np.any(self.keys[1:] == self.keys[:-1]))

    def lacks(self, ids: Union[pa.Array, pa.ChunkedArray]) -> int:
        """How many of the non-null `ids` have a key that no input id has: ids the input does
        not hold (an id whose key collides with an input id's is taken as held)."""
        keys = id_keys(ids)
        if not len(self.keys):
            return len(keys)
        found = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return int(np.count_nonzero(self.keys[found] != keys))


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
