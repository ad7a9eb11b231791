"""How numbers and lists read in the messages every command prints: counts with their noun,
a few names of many, byte sizes and durations."""

from typing import List


def plural(n: int, noun: str) -> str:
    """"1 file", "2 files"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def byte_size(n: float) -> str:
    """Bytes in the largest unit that keeps the number at least 1: "812 bytes", "3.4 MiB"."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def duration(seconds: float) -> str:
    """Seconds under 90 s, minutes under 90 min, else hours."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def some(names: List[str], limit: int = 3) -> str:
    """A few of `names`, for a message: "3 entries: a, b, c, ..." (or the one name)."""
    shown = ", ".join(sorted(names)[:limit])
    return f"{len(names)} entries: {shown}{', ...' if len(names) > limit else ''}" if len(names) > 1 else shown


def clipped(value: object, limit: int = 120) -> str:
    """`repr(value)` for a message, cut to its first `limit` characters and "... (N chars)" when
    longer, so that a message never prints a whole long value."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"
