"""How numbers read in the messages every command prints: counts with their noun, byte sizes
and durations."""


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
