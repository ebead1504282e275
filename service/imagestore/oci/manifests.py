"""Manifests, indexes and image configs: parsed and validated from their bytes.

Docker v2 schema 2 and OCI are accepted (they are the same shape); schema 1,
foreign layers and non-image artifacts are refused with UnsupportedContent.
Sizes are capped before parsing (docs/design.md §6: 4 MiB).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from imagestore import errors, jsonparse
from imagestore.oci import mediatypes as mt
from imagestore.oci.digests import parse_digest
from imagestore.oci.platforms import Platform, platform_from_json
from imagestore.oci.times import parse_rfc3339

MAX_DOCUMENT_SIZE = 4 << 20


@dataclass(frozen=True, slots=True)
class Descriptor:
    """What points at a blob: media type, digest, size (+ platform in an index)."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True, slots=True)
class Manifest:
    """One platform's image: a config and its layers, base first."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True, slots=True)
class Index:
    """A list of manifests, one per platform (OCI index or Docker manifest list)."""

    media_type: str
    manifests: tuple[Descriptor, ...]


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    created: datetime | None
    created_by: str
    comment: str
    author: str
    empty_layer: bool


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """The parts of an image config the store reads; ``raw`` keeps the rest."""

    architecture: str
    os: str
    variant: str
    os_version: str
    created: datetime | None
    author: str
    diff_ids: tuple[str, ...]
    history: tuple[HistoryEntry, ...]
    raw: Mapping[str, Any] = field(hash=False, compare=False)

    @property
    def container_config(self) -> Mapping[str, Any]:
        """The ``config`` object: Env, Cmd, Entrypoint, Labels, …"""
        value = self.raw.get("config")
        return value if isinstance(value, Mapping) else {}

    @property
    def labels(self) -> dict[str, str]:
        labels = self.container_config.get("Labels")
        if not isinstance(labels, Mapping):
            return {}
        return {str(k): str(v) for k, v in labels.items()}


def _malformed(what: str, problem: str) -> errors.MalformedContent:
    return errors.MalformedContent(f"invalid {what}: {problem}", metadata={"content": what})


def _load_json(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_DOCUMENT_SIZE:
        raise errors.SizeLimitExceeded(
            f"{what} is {len(data)} bytes; the limit is {MAX_DOCUMENT_SIZE}",
            metadata={"content": what, "size": str(len(data))},
        )
    try:
        document = jsonparse.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _malformed(what, f"not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise _malformed(what, "not a JSON object")
    return document


def parse_descriptor(obj: Any, what: str) -> Descriptor:
    if not isinstance(obj, Mapping):
        raise _malformed(what, "descriptor is not an object")
    media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise _malformed(what, "descriptor has no mediaType")
    if not isinstance(digest, str):
        raise _malformed(what, "descriptor has no digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _malformed(what, f"descriptor {digest[:80]} has no valid size")
    annotations = obj.get("annotations") or {}
    if not isinstance(annotations, Mapping):
        raise _malformed(what, "annotations is not an object")
    try:
        digest = parse_digest(digest)
    except errors.InvalidArgument as exc:
        raise _malformed(what, exc.message) from None
    _catalog_text(obj, "mediaType", what)
    platform = obj.get("platform")
    if platform is not None and not isinstance(platform, Mapping):
        raise _malformed(what, "platform is not an object")
    if platform is not None:
        for key in PLATFORM_FIELDS:
            _catalog_text(platform, key, what)
    return Descriptor(
        media_type,
        digest,
        size,
        platform_from_json(platform),
        {str(k): str(v) for k, v in annotations.items()},
    )


def detect_media_type(document: Mapping[str, Any], declared: str | None) -> str:
    """The document's media type: its own field, else the declared one, else by shape."""
    own = document.get("mediaType")
    if own is not None and not isinstance(own, str):
        raise _malformed("manifest", "mediaType is not a string")
    if own and declared and own != declared and declared not in ("", "application/json"):
        raise _malformed("manifest", f"declared as {declared} but says it is {own}")
    if own:
        return own
    if declared:
        return declared
    # umoci writes OCI manifests without mediaType; tell them apart by shape.
    return mt.OCI_INDEX if "manifests" in document else mt.OCI_MANIFEST


def parse_document(data: bytes, declared_media_type: str | None = None) -> Manifest | Index:
    """Parse a manifest or an index from its exact bytes."""
    document = _load_json(data, "manifest")
    if document.get("schemaVersion") == 1 or declared_media_type in mt.SCHEMA1:
        raise errors.UnsupportedMediaType(
            "Docker image manifest schema 1 is not supported: push the image with a newer tool",
            metadata={"mediaType": (declared_media_type or mt.SCHEMA1_MANIFEST)[:200]},
        )
    if document.get("schemaVersion") != 2:
        raise _malformed("manifest", "schemaVersion must be 2")
    media_type = detect_media_type(document, declared_media_type)
    if media_type in mt.SCHEMA1:
        raise errors.UnsupportedMediaType(
            "Docker image manifest schema 1 is not supported", metadata={"mediaType": media_type}
        )
    if media_type in mt.INDEXES:
        entries = document.get("manifests")
        if not isinstance(entries, list):
            raise _malformed("index", "manifests is not a list")
        return Index(media_type, tuple(parse_descriptor(e, "index") for e in entries))
    if media_type in mt.MANIFESTS:
        return _parse_manifest(document, media_type)
    raise errors.UnsupportedMediaType(
        f"unsupported manifest media type {media_type[:100]!r}",
        metadata={"mediaType": media_type[:200]},
    )


def _parse_manifest(document: Mapping[str, Any], media_type: str) -> Manifest:
    config = parse_descriptor(document.get("config"), "manifest config")
    layers_json = document.get("layers")
    if not isinstance(layers_json, list):
        raise _malformed("manifest", "layers is not a list")
    layers = tuple(parse_descriptor(layer, "manifest layer") for layer in layers_json)
    if config.media_type not in mt.CONFIGS:
        raise errors.UnsupportedMediaType(
            f"not a container image: config media type is {config.media_type[:100]!r}",
            metadata={"mediaType": config.media_type[:200], "digest": config.digest},
        )
    for layer in layers:
        if layer.media_type in mt.FOREIGN_LAYERS:
            raise errors.UnsupportedMediaType(
                f"foreign (non-distributable) layer {layer.digest} is not supported",
                metadata={"digest": layer.digest, "mediaType": layer.media_type[:200]},
            )
        if layer.media_type not in mt.LAYERS:
            raise errors.UnsupportedMediaType(
                f"unsupported layer media type {layer.media_type[:100]!r}",
                metadata={"digest": layer.digest, "mediaType": layer.media_type[:200]},
            )
    return Manifest(media_type, config, layers)


def parse_time(value: Any) -> datetime | None:
    """RFC 3339 with up to nanoseconds (Go's format); None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    parsed = parse_rfc3339(value)
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


#: platform fields, which the catalog indexes
PLATFORM_FIELDS = ("os", "architecture", "variant", "os.version")


def _catalog_text(document: Mapping[str, Any], key: str, what: str = "image config") -> str:
    """A string the catalog keeps: no NUL (a PostgreSQL text cannot hold one,
    and every catalog must answer alike)."""
    value = str(document.get(key, "") or "")
    if "\x00" in value:
        raise _malformed(what, f"{key} contains a NUL character")
    return value


def parse_config(data: bytes) -> ImageConfig:
    """Parse an image config; diff_ids must be valid sha256 digests."""
    document = _load_json(data, "image config")
    rootfs = document.get("rootfs")
    if not isinstance(rootfs, Mapping) or not isinstance(rootfs.get("diff_ids"), list):
        raise _malformed("image config", "rootfs.diff_ids is missing")
    try:
        diff_ids = tuple(parse_digest(str(d)) for d in rootfs["diff_ids"])
    except errors.InvalidArgument as exc:
        raise _malformed("image config", exc.message) from None
    history = []
    for entry in document.get("history") or []:
        if not isinstance(entry, Mapping):
            raise _malformed("image config", "history entry is not an object")
        history.append(
            HistoryEntry(
                created=parse_time(entry.get("created")),
                created_by=str(entry.get("created_by", "") or ""),
                comment=str(entry.get("comment", "") or ""),
                author=str(entry.get("author", "") or ""),
                empty_layer=bool(entry.get("empty_layer", False)),
            )
        )
    non_empty = sum(1 for h in history if not h.empty_layer)
    if history and non_empty > len(diff_ids):
        raise _malformed("image config", "too many non-empty layers in History section")
    return ImageConfig(
        architecture=_catalog_text(document, "architecture"),
        os=_catalog_text(document, "os"),
        variant=_catalog_text(document, "variant"),
        os_version=_catalog_text(document, "os.version"),
        created=parse_time(document.get("created")),
        author=str(document.get("author", "") or ""),
        diff_ids=diff_ids,
        history=tuple(history),
        raw=document,
    )
