"""Fuzz the ListImages and Prune filter parsers (imagestore.store.filters).

Input: filters, one per line (``reference=…``, ``until=…``, ``label=…``).
Each line is also read alone as an ``until`` value and as a Go duration.
"""

from __future__ import annotations

from datetime import UTC, datetime

import atheris

with atheris.instrument_imports(include=["imagestore"]):
    from imagestore.store import filters

from tests.fuzz.harness import expected_errors, main, text

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def _until(value: str) -> None:
    moment = filters.parse_timestamp(value, NOW)
    assert isinstance(moment, datetime)


def target(data: bytes) -> None:
    lines = text(data).split("\n")
    with expected_errors():
        filters.parse_list_filters(lines, NOW)
    with expected_errors():
        filters.parse_prune_filters(lines, NOW)
    for line in lines[:8]:
        with expected_errors():
            _until(line)
        filters.parse_go_duration(line)  # None when it is not one: never an error


if __name__ == "__main__":
    main(target)
