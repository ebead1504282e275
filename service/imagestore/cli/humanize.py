"""Sizes and ages the way the docker CLI prints them (go-units)."""

from __future__ import annotations

from datetime import UTC, datetime

_DECIMAL = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


def size(value: float, precision: int = 3) -> str:
    """``HumanSizeWithPrecision``: decimal units, ``precision`` significant digits
    (``docker images`` uses 3: "7.84MB"; prune's total uses 4)."""
    unit = 0
    while value >= 1000 and unit < len(_DECIMAL) - 1:
        value /= 1000
        unit += 1
    return f"{value:.{precision}g}{_DECIMAL[unit]}"


def duration(seconds: float) -> str:
    """``HumanDuration``: "Less than a second", "About an hour", "3 weeks"."""
    if int(seconds) < 1:
        return "Less than a second"
    if int(seconds) == 1:
        return "1 second"
    if seconds < 60:
        return f"{int(seconds)} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def since(when: datetime | None, now: datetime | None = None) -> str:
    """docker's CREATED column: "2 days ago", or "N/A" when unknown."""
    if when is None:
        return "N/A"
    now = now or datetime.now(UTC)
    return duration((now - when).total_seconds()) + " ago"


def go_time(when: datetime | None) -> str:
    """Go's ``time.Time.String()`` in UTC: "2024-05-06 07:08:09 +0000 UTC"."""
    if when is None:
        return ""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def rfc3339(when: datetime | None) -> str:
    """RFC 3339 with nanoseconds trimmed like Go's RFC3339Nano."""
    if when is None:
        return ""
    text = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def rfc3339_seconds(when: datetime | None) -> str:
    """Go's ``time.RFC3339`` in local time, whole seconds ("2024-05-06T07:08:09Z",
    "…+02:00"): docker history's CREATED AT and ``--human=false`` times."""
    if when is None:
        return ""
    text = when.astimezone().isoformat(timespec="seconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text
