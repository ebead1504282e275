"""Fuzz the reference parser (imagestore.oci.references).

Input: a reference as text. What parses must print back to itself: the
canonical and familiar forms parse to the same reference.
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["imagestore"]):
    from imagestore.oci import references

from tests.fuzz.harness import expected_errors, main, text


def _reference(value: str) -> None:
    reference = references.parse_reference(value)
    assert references.parse_reference(str(reference)) == reference, value
    assert references.parse_reference(reference.familiar()) == reference, value
    bare = references.parse_reference(value, default_tag=False)
    assert bare.name == reference.name


def target(data: bytes) -> None:
    value = text(data)
    with expected_errors():
        _reference(value)
    with expected_errors():
        references.parse_tag_target(value)
    with expected_errors():
        references.normalize_domain(value)


if __name__ == "__main__":
    main(target)
