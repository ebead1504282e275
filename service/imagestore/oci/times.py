"""RFC 3339 times as Go writes them (up to nanoseconds), read into datetimes."""

from __future__ import annotations

from datetime import datetime


def parse_rfc3339(text: str) -> datetime | None:
    """``2024-01-02T03:04:05.123456789Z`` → datetime (µs precision); None if
    not an ISO time. A time without a zone comes back naive."""
    value = text.strip().replace("Z", "+00:00").replace("z", "+00:00")
    head, dot, rest = value.partition(".")
    if dot:  # Python reads at most 6 fractional digits
        digits = len(rest) - len(rest.lstrip("0123456789"))
        value = f"{head}.{rest[:digits][:6].ljust(6, '0')}{rest[digits:]}"
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
