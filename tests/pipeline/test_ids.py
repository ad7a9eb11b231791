"""The repeated-id check the input check, the closing check and `status` share."""

import collections
import random

import numpy as np
import pyarrow as pa
import pytest

from pipeline.checks.samples import check_ids_unique
from pipeline.ids import InputIdKeys, id_keys, repeated_ids


def _reference(values):
    counts = collections.Counter(v for v in values if v is not None)
    return sorted(v for v, n in counts.items() if n > 1)


@pytest.mark.parametrize("kind", ["string", "int64", "binary"])
def test_repeated_ids_over_files_match_a_plain_count(kind):
    rng = random.Random(7)
    make = {"string": lambda i: f"img{i:06}", "int64": lambda i: i * 7919 - 50_000, "binary": lambda i: b"%d" % i}[kind]
    # Repeats within one file and across files, some ids three times, nulls apart.
    values = [make(rng.randrange(3_000)) for _ in range(2_000)] + [None] * 5
    rng.shuffle(values)
    files = [pa.chunked_array([values[i:i + 300]], type=getattr(pa, kind)()) for i in range(0, len(values), 300)]
    expected = _reference(values)
    assert len(expected) > 100 and any(values.count(v) > 2 for v in expected)

    nulls, repeated, examples = repeated_ids(files, examples=4)

    assert (nulls, repeated, examples) == (5, len(expected), expected[:4])


def test_unique_and_empty_ids_have_no_repeats():
    assert repeated_ids([pa.chunked_array([["a", "b"]]), pa.chunked_array([["c", None]])]) == (1, 0, [])
    assert repeated_ids([pa.chunked_array([], type=pa.string())]) == (0, 0, [])
    assert repeated_ids([]) == (0, 0, [])


def test_id_keys_are_equal_for_equal_ids_of_any_width_and_differ_otherwise():
    words = [f"img{i:06}" for i in range(5_000)] + ["", "a", "ab", "ba", "é", "x" * 300]
    keys = id_keys(pa.array(words))
    assert len(set(keys.tolist())) == len(words)  # no collision among near ids
    sliced = pa.array(["pad"] + words).slice(1)  # an array that starts inside its buffers
    for same in (pa.array(words, pa.large_string()), pa.array([w.encode() for w in words]), sliced):
        assert id_keys(same).tolist() == keys.tolist()
    # A file's key of an id does not depend on the other ids there (a very long one, say).
    assert id_keys(pa.array(["img000001", "z" * 100_000]))[0] == keys[1]
    numbers = [3, -7, 2**40, None]
    assert id_keys(pa.array(numbers, pa.int64())).tolist() == (
        id_keys(pa.array([3, -7], pa.int32())).tolist() + id_keys(pa.chunked_array([[2**40, None]])).tolist())
    assert len(id_keys(pa.array([None, "a", None]))) == 1


def test_input_id_keys_find_repeats_and_ids_the_input_lacks():
    files = [pa.array([f"img{i:06}" for i in range(s, s + 100)] + [None]) for s in range(0, 1_000, 100)]
    keys = InputIdKeys.joined([InputIdKeys.of([f]) for f in files])
    assert (keys.nulls, len(keys.keys), keys.may_repeat()) == (10, 1_000, False)
    assert keys.lacks(pa.chunked_array([["img000005", "img000999", "img001000", "other"]])) == 2
    assert InputIdKeys.of(files + [pa.array(["img000500"])]).may_repeat()
    assert InputIdKeys.of([]).lacks(pa.array(["a"])) == 1


def test_repeated_keys_are_told_apart_from_repeated_ids_by_reading_the_ids_again():
    ids = pa.chunked_array([["a", "b", "c"]])
    reads = []

    def read_ids():
        reads.append(1)
        return ids

    unique = InputIdKeys.of([ids])
    assert check_ids_unique(unique, read_ids, "id", resuming=False) == ([], []) and not reads
    # Two different ids under one key (a collision, made here): read again, and not repeats.
    collided = InputIdKeys(np.sort(np.concatenate([unique.keys, unique.keys[:1]])), 0)
    assert check_ids_unique(collided, read_ids, "id", resuming=False) == ([], []) and reads == [1]
    repeated = pa.chunked_array([["a", "b", "a", None]])
    problems, warnings = check_ids_unique(InputIdKeys.of([repeated]), lambda: repeated, "id", resuming=False)
    assert len(problems) == 1 and "1 ids appear more than once (e.g. 'a')" in problems[0]
    assert len(warnings) == 1 and "1 rows have a null 'id'" in warnings[0]
