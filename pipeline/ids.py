"""Stable keys and hashes of row ids: the same in every process and run (unlike `hash`), so
that the evaluation's hash join and fine-tuning's validation split fall the same way
everywhere."""

import hashlib
from typing import Any


def id_key(value: Any) -> bytes:
    """A stable byte key of an id: equal ids of one type give equal keys in every process."""
    payload = value if isinstance(value, bytes) else value.encode() if isinstance(value, str) else repr(value).encode()
    return type(value).__name__.encode() + b":" + payload


def stable_hash(value: Any) -> int:
    """A 64-bit hash of an id that is the same in every process and run (unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(id_key(value), digest_size=8).digest(), "little")
