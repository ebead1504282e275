"""Save: images → one tar that is both a docker-archive (``manifest.json``) and
an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/``).

The stored blobs go out as they are (layers compressed), each re-hashed on the
way out: a blob that no longer matches its digest stops the stream with
DataLoss instead of shipping corrupt bytes. The tar is written by hand, member
by member, so it streams in ≤ 1 MiB chunks without a temp file.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from imagestore import errors, hashing
from imagestore.oci import mediatypes as mt
from imagestore.oci.manifests import Index, Manifest
from imagestore.oci.platforms import best_match, host_platform
from imagestore.oci.references import parse_reference
from imagestore.store.leases import Lease
from imagestore.store.selection import (
    StoredDocument,
    lease_manifest,
    read_document,
    select_documents,
)
from imagestore.store.store import Store

CHUNK = 1 << 20
BLOCK = 512
OCI_REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


@dataclass
class _Image:
    image_id: str
    manifest: Manifest
    oci_manifest: bytes  # the OCI form of its manifest, for index.json
    tags: list[str] = field(default_factory=list)  # canonical names

    @property
    def oci_digest(self) -> str:
        return hashing.sha256_digest(self.oci_manifest)


def _oci_manifest(stored: bytes, manifest: Manifest) -> bytes:
    """The manifest in OCI media types: OCI layout readers (skopeo's among them)
    skip Docker-typed entries. Same config bytes, so the same image ID."""
    if manifest.media_type == mt.OCI_MANIFEST:
        return stored
    layer_types = {mt.DOCKER_LAYER_GZIP: mt.OCI_LAYER_GZIP}
    document = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {
            "mediaType": mt.OCI_CONFIG,
            "digest": manifest.config.digest,
            "size": manifest.config.size,
        },
        "layers": [
            {
                "mediaType": layer_types.get(layer.media_type, layer.media_type),
                "digest": layer.digest,
                "size": layer.size,
            }
            for layer in manifest.layers
        ],
    }
    return json.dumps(document, indent=3).encode()


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o444
    info.mtime = 0
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _padding(size: int) -> bytes:
    return b"\x00" * (-size % BLOCK)


@dataclass
class _IndexSave:
    """A name that points at an index: the index and every child, as stored."""

    index: StoredDocument
    children: list[StoredDocument]
    tag: str | None  # canonical name; None when it was named by digest
    #: (image ID, manifest) of each child, the host's platform first
    images: list[tuple[str, Manifest]] = field(init=False)

    def __post_init__(self) -> None:
        manifests = [
            (child.descriptor.platform, child.parsed)
            for child in self.children
            if isinstance(child.parsed, Manifest)
        ]
        first = best_match(host_platform(), manifests)
        ordered = sorted(manifests, key=lambda entry: entry[1] is not first)
        self.images = [(manifest.config.digest, manifest) for _, manifest in ordered]


@dataclass
class _Selection:
    images: dict[str, _Image] = field(default_factory=dict)
    indexes: list[_IndexSave] = field(default_factory=list)


def _image(store: Store, lease: Lease, image_id: str, item: str) -> _Image:
    manifest = store.manifest_of(image_id)
    if manifest is None:
        raise errors.ImageNotFound(f"No such image: {item}", metadata={"image": item[:300]})
    document = read_document(store, manifest)
    assert isinstance(document.parsed, Manifest)
    lease_manifest(document.parsed, lease)
    return _Image(image_id, document.parsed, _oci_manifest(document.data, document.parsed))


def _select(store: Store, lease: Lease, items: Sequence[str], platform: str) -> _Selection:
    """Resolve names and IDs. A name saves what it points at (an index whole,
    or with ``platform`` the one manifest under the name, as Push does); an ID
    saves its image with all its tags."""
    if not items:
        raise errors.ArgumentMissing("name at least one image to save", field="images")
    chosen = _Selection()
    for item in items:
        resolved = store.resolve(item)
        if resolved.name is not None and resolved.target is not None:
            lease.add(resolved.target)
            target = store.target_descriptor(resolved.target)
            if target is None:
                raise errors.ImageNotFound(f"No such image: {item}", metadata={"image": item[:300]})
            documents = select_documents(store, target, platform, lease, "save", item)
            top = documents[-1]
            if isinstance(top.parsed, Index):
                tag = resolved.name.name if resolved.name.digest is None else None
                chosen.indexes.append(_IndexSave(top, documents[:-1], tag))
                continue
            assert isinstance(top.parsed, Manifest)
            image_id = top.parsed.config.digest
            if image_id not in chosen.images:
                oci = _oci_manifest(top.data, top.parsed)
                chosen.images[image_id] = _Image(image_id, top.parsed, oci)
            if resolved.name.digest is None:
                chosen.images[image_id].tags.append(resolved.name.name)
            continue
        for image_id in resolved.image_ids:
            if image_id not in chosen.images:
                chosen.images[image_id] = _image(store, lease, image_id, item)
                chosen.images[image_id].tags += store.tags_of(image_id)
    return chosen


def _docker_entry(image_id: str, manifest: Manifest, tags: list[str]) -> dict[str, Any]:
    return {
        "Config": "blobs/sha256/" + image_id.removeprefix("sha256:"),
        "RepoTags": [_familiar_tag(t) for t in tags],
        "Layers": [
            "blobs/sha256/" + layer.digest.removeprefix("sha256:") for layer in manifest.layers
        ],
    }


def _annotations(tag: str) -> dict[str, str]:
    reference = parse_reference(tag, default_tag=False)
    return {CONTAINERD_NAME: tag, OCI_REF_NAME: reference.tag or ""}


def _documents(chosen: _Selection) -> dict[str, bytes]:
    """``oci-layout``, ``index.json`` and ``manifest.json`` for the chosen content.

    An index is named in ``index.json`` (what Load reads first); in
    ``manifest.json``, which names images only, its host-platform image carries
    the tag, so a docker-archive reader still gets one image under the name.
    """
    index_entries = []
    docker_entries = []
    for image in chosen.images.values():
        tags = list(dict.fromkeys(image.tags))
        descriptor: dict[str, Any] = {
            "mediaType": mt.OCI_MANIFEST,
            "digest": image.oci_digest,
            "size": len(image.oci_manifest),
        }
        names: list[str | None] = [*tags] or [None]  # an untagged image: one plain entry
        for tag in names:
            entry = dict(descriptor)
            if tag is not None:
                entry["annotations"] = _annotations(tag)
            index_entries.append(entry)
        docker_entries.append(_docker_entry(image.image_id, image.manifest, tags))
    for saved in chosen.indexes:
        top = saved.index.descriptor
        entry = {"mediaType": top.media_type, "digest": top.digest, "size": top.size}
        if saved.tag is not None:
            entry["annotations"] = _annotations(saved.tag)
        index_entries.append(entry)
        for position, (image_id, manifest) in enumerate(saved.images):
            tags = [saved.tag] if saved.tag is not None and position == 0 else []
            docker_entries.append(_docker_entry(image_id, manifest, tags))
    layout_index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": index_entries}
    return {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(layout_index).encode(),
        "manifest.json": json.dumps(docker_entries).encode(),
    }


def _familiar_tag(canonical: str) -> str:
    return parse_reference(canonical, default_tag=False).familiar()


def _blob_member(store: Store, digest: str) -> Iterator[bytes]:
    """Header, verified content and padding of one blob."""
    size = store.blob_size(digest)
    if size is None:
        raise errors.BlobNotFound(
            f"blob {digest} is missing from the store", metadata={"digest": digest}
        )
    yield _header(_blob_path(digest), size)
    yield from store.read_verified(digest)
    yield _padding(size)


def save(store: Store, items: Sequence[str], platform: str = "") -> Generator[bytes, None, None]:
    """Stream the archive for ``items`` (names or IDs) in chunks of ≤ 1 MiB."""
    with store.lease(reading=True) as lease:
        chosen = _select(store, lease, items, platform)
        blobs: list[str] = []
        documents: dict[str, bytes] = {}
        for image in chosen.images.values():
            blobs += [image.image_id, *(layer.digest for layer in image.manifest.layers)]
            documents[_blob_path(image.oci_digest)] = image.oci_manifest
        for saved in chosen.indexes:
            for image_id, manifest in saved.images:
                blobs += [image_id, *(layer.digest for layer in manifest.layers)]
            for document in [*saved.children, saved.index]:
                documents[_blob_path(document.descriptor.digest)] = document.data
        # Pieces go out as they are (a header, ≤ 1 MiB of a blob, padding):
        # no copying to fill chunks.
        for digest in dict.fromkeys(blobs):
            yield from (piece for piece in _blob_member(store, digest) if piece)
        documents |= _documents(chosen)
        for name, body in documents.items():
            member = _header(name, len(body)) + body + _padding(len(body))
            for start in range(0, len(member), CHUNK):
                yield member[start : start + CHUNK]
        yield b"\x00" * (2 * BLOCK)


def _blob_path(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")
