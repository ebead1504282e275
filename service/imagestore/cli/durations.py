"""Durations as `imagestore serve` takes them: plain seconds (``10``, ``0.5``) or
Go / systemd forms (``500ms``, ``10s``, ``1m30s``, ``2h``, ``7d``, ``1.5h``).

Standard library only: the CLI parses these before it imports the server.
"""

from __future__ import annotations

import math
import re

#: seconds per unit; ``d`` is systemd's (Go has no day unit)
_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Seconds from ``text``; ValueError (saying what is accepted) when it is not
    a non-negative number of seconds or a duration."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        seconds = _units(value)
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise ValueError(_expected(text))
    return seconds


def _units(value: str) -> float:
    position, seconds = 0, 0.0
    for match in _PART.finditer(value):
        if match.start() != position:
            break
        seconds += float(match[1]) * _UNITS[match[2]]
        position = match.end()
    if position == 0 or position != len(value):
        raise ValueError(_expected(value))
    return seconds


def _expected(text: str) -> str:
    return (
        f"{text[:100]!r} is not a duration: seconds, or a duration such as 500ms, 10s,"
        " 1m30s, 2h or 7d"
    )


def format_duration(seconds: float) -> str:
    """A default as help texts show it: ``10s``, ``1h``, ``7d``, ``1m30s``."""
    if seconds == 0:
        return "0s"
    if seconds != int(seconds) or seconds < 60:
        return f"{seconds:g}s"
    rest = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
