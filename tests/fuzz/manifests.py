"""Fuzz the manifest, index and image-config parsers (imagestore.oci.manifests).

Input: a document's bytes, parsed as a manifest or index under each kind of
declared media type a registry or an archive may claim, and as an image config.
Whatever parses must also serialise back and answer the questions pull, load
and inspect ask of it.
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["imagestore"]):
    from imagestore.oci import manifests
    from imagestore.oci import mediatypes as mt
    from imagestore.oci.platforms import best_match, parse_platform

from tests.fuzz.harness import expected_errors, main

DECLARED = (None, "", "application/json", mt.OCI_INDEX, mt.DOCKER_MANIFEST, mt.SCHEMA1_MANIFEST)
WANTED = parse_platform("linux/arm64")


def _document(data: bytes, declared: str | None) -> None:
    document = manifests.parse_document(data, declared)
    if isinstance(document, manifests.Index):
        for entry in document.manifests:
            entry.to_json()
        best_match(WANTED, [(entry.platform, entry.digest) for entry in document.manifests])
    else:
        document.config.to_json()
        for layer in document.layers:
            layer.to_json()


def _config(data: bytes) -> None:
    config = manifests.parse_config(data)
    assert isinstance(config.labels, dict)
    assert isinstance(config.container_config, dict | object)
    for entry in config.history:
        assert entry.created is None or entry.created.tzinfo is not None


def target(data: bytes) -> None:
    for declared in DECLARED:
        with expected_errors():
            _document(data, declared)
    with expected_errors():
        _config(data)


if __name__ == "__main__":
    main(target)
