"""The repeated-id check the input check, the closing check and `status` share."""

import collections
import random

import pyarrow as pa
import pytest

from pipeline.ids import repeated_ids


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
