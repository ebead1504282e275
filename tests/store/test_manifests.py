"""Manifest, index and config parsing: what is accepted, what is refused and why."""

from __future__ import annotations

import json

import pytest

from imagestore import errors
from imagestore.oci import mediatypes as mt
from imagestore.oci.manifests import Index, Manifest, parse_config, parse_document, parse_time

DIGEST = "sha256:" + "a" * 64
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"


def manifest(**changes: object) -> bytes:
    document: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": DIGEST, "size": 10},
        "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": DIGEST, "size": 20}],
    }
    document.update(changes)
    return json.dumps({k: v for k, v in document.items() if v is not None}).encode()


def test_oci_and_docker_manifests_parse_and_umoci_style_needs_no_media_type() -> None:
    parsed = parse_document(manifest())
    assert isinstance(parsed, Manifest)
    assert parsed.config.digest == DIGEST
    assert parse_document(manifest(mediaType=None)).media_type == mt.OCI_MANIFEST
    docker = manifest(
        mediaType=mt.DOCKER_MANIFEST,
        config={"mediaType": mt.DOCKER_CONFIG, "digest": DIGEST, "size": 1},
        layers=[{"mediaType": mt.DOCKER_LAYER_GZIP, "digest": DIGEST, "size": 2}],
    )
    assert parse_document(docker).media_type == mt.DOCKER_MANIFEST


def test_an_index_parses_with_platforms() -> None:
    body = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": mt.OCI_MANIFEST,
                    "digest": DIGEST,
                    "size": 5,
                    "platform": {"os": "linux", "architecture": "aarch64"},
                }
            ],
        }
    ).encode()
    index = parse_document(body, mt.OCI_INDEX)
    assert isinstance(index, Index)
    assert str(index.manifests[0].platform) == "linux/arm64"


@pytest.mark.parametrize(
    ("body", "declared", "error", "message"),
    [
        (b'{"schemaVersion": 1, "fsLayers": []}', None, errors.UnsupportedContent, "schema 1"),
        (manifest(), mt.SCHEMA1_SIGNED_MANIFEST, errors.UnsupportedContent, "schema 1"),
        (
            manifest(layers=[{"mediaType": mt.DOCKER_FOREIGN_LAYER, "digest": DIGEST, "size": 1}]),
            None,
            errors.UnsupportedContent,
            "foreign",
        ),
        (
            manifest(config={"mediaType": HELM_CONFIG, "digest": DIGEST, "size": 1}),
            None,
            errors.UnsupportedContent,
            "not a container image",
        ),
        (manifest(mediaType=mt.OCI_INDEX), mt.OCI_MANIFEST, errors.MalformedContent, "declared as"),
        (b"{not json", None, errors.MalformedContent, "not JSON"),
        (b"[]", None, errors.MalformedContent, "not a JSON object"),
        (manifest(schemaVersion=3), None, errors.MalformedContent, "schemaVersion must be 2"),
        (
            manifest(layers=[{"mediaType": mt.OCI_LAYER_GZIP, "digest": "md5:abc", "size": 1}]),
            None,
            errors.MalformedContent,
            "unsupported digest algorithm .md5.",
        ),
        (
            manifest(layers=[{"mediaType": mt.OCI_LAYER_GZIP, "digest": DIGEST, "size": -1}]),
            None,
            errors.MalformedContent,
            "no valid size",
        ),
        (b" " * (4 << 20) + b"{}", None, errors.SizeLimitExceeded, "limit"),
        (
            manifest(layers=[{"mediaType": "a\x00b", "digest": DIGEST, "size": 1}]),
            None,
            errors.MalformedContent,
            "mediaType contains a NUL",
        ),
    ],
)
def test_bad_or_unsupported_documents_are_refused_clearly(
    body: bytes, declared: str | None, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        parse_document(body, declared)


def test_a_config_with_more_non_empty_history_than_layers_is_refused() -> None:
    config = {
        "rootfs": {"type": "layers", "diff_ids": [DIGEST]},
        "history": [{"created_by": "a"}, {"created_by": "b"}],
    }
    with pytest.raises(errors.MalformedContent, match="too many non-empty layers"):
        parse_config(json.dumps(config).encode())


def test_go_timestamps_with_nanoseconds_parse() -> None:
    parsed = parse_time("2024-01-02T03:04:05.123456789Z")
    assert parsed is not None
    assert parsed.microsecond == 123456
    assert parse_time("2024-01-02T03:04:05+02:00") is not None
    assert parse_time("yesterday") is None
