"""Fuzz platform parsing and matching (imagestore.oci.platforms).

Input: platform strings, one per line (``linux/arm64/v8``); also read as the
JSON ``platform`` object of an index entry. Every parsed platform prints to a
string that parses back to it, and matching ranks any offer without error.
"""

from __future__ import annotations

import json

import atheris

with atheris.instrument_imports(include=["imagestore"]):
    from imagestore import errors
    from imagestore.oci import platforms

from tests.fuzz.harness import expected_errors, main, text


def _parsed(lines: list[str]) -> list[platforms.Platform]:
    found = []
    for line in lines[:8]:
        try:
            platform = platforms.parse_platform(line)
        except errors.ImageStoreError:
            continue  # refused: fine
        assert platforms.parse_platform(str(platform)) == platform, line
        found.append(platform)
    return found


def _from_json(raw: str) -> None:
    try:
        document = json.loads(raw)
    except ValueError:
        return
    if isinstance(document, dict):
        platform = platforms.platform_from_json(document)
        if platform is not None:
            platform.to_json()


def target(data: bytes) -> None:
    value = text(data)
    offered = _parsed(value.split("\n"))
    for wanted in offered[:3]:
        platforms.best_match(wanted, [(platform, str(platform)) for platform in offered])
        for platform in offered:
            platforms.compatible(wanted, platform)
    with expected_errors():
        _from_json(value)


if __name__ == "__main__":
    main(target)
