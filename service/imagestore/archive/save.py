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
from imagestore.oci.manifests import Manifest, parse_document
from imagestore.oci.references import parse_reference
from imagestore.store.leases import Lease
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


def _select(store: Store, lease: Lease, items: Sequence[str]) -> list[_Image]:
    """Resolve names and IDs to images; a name saves only itself, an ID all its tags."""
    if not items:
        raise errors.InvalidArgument("name at least one image to save")
    images: dict[str, _Image] = {}
    for item in items:
        resolved = store.resolve(item)
        for image_id in resolved.image_ids:
            if image_id not in images:
                with store.catalog.reading() as db:
                    manifests = store.catalog.manifests_of_image(db, image_id)
                    names = store.catalog.names_of_image(db, image_id)
                if not manifests:
                    raise errors.NotFound(f"No such image: {item}")
                lease.add(manifests[0].digest)
                body = store.blobs.read_bytes(manifests[0].digest)
                manifest = parse_document(body, manifests[0].media_type)
                assert isinstance(manifest, Manifest)
                lease.add(manifest.config.digest, *(layer.digest for layer in manifest.layers))
                images[image_id] = _Image(image_id, manifest, _oci_manifest(body, manifest))
                if resolved.name is None:
                    images[image_id].tags += [n.name for n in names if n.digest is None]
            if resolved.name is not None and resolved.name.digest is None:
                images[image_id].tags.append(resolved.name.name)
    return list(images.values())


def _documents(images: list[_Image]) -> dict[str, bytes]:
    """``oci-layout``, ``index.json`` and ``manifest.json`` for the chosen images."""
    index_entries = []
    docker_entries = []
    for image in images:
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
                reference = parse_reference(tag, default_tag=False)
                entry["annotations"] = {CONTAINERD_NAME: tag, OCI_REF_NAME: reference.tag or ""}
            index_entries.append(entry)
        docker_entries.append(
            {
                "Config": "blobs/sha256/" + image.image_id.removeprefix("sha256:"),
                "RepoTags": [_familiar_tag(t) for t in tags],
                "Layers": [
                    "blobs/sha256/" + layer.digest.removeprefix("sha256:")
                    for layer in image.manifest.layers
                ],
            }
        )
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": index_entries}
    return {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index).encode(),
        "manifest.json": json.dumps(docker_entries).encode(),
    }


def _familiar_tag(canonical: str) -> str:
    return parse_reference(canonical, default_tag=False).familiar()


def _blob_member(store: Store, digest: str) -> Iterator[bytes]:
    """Header, verified content and padding of one blob."""
    size = store.blobs.size(digest)
    if size is None:
        raise errors.NotFound(
            f"blob {digest} is missing from the store", metadata={"digest": digest}
        )
    yield _header("blobs/sha256/" + digest.removeprefix("sha256:"), size)
    with hashing.Sha256() as hasher:
        for chunk in store.blobs.read(digest):
            hasher.update(chunk)
            yield chunk
        actual, length = hasher.finish()
    if actual != digest or length != size:
        raise errors.DataLoss(
            f"stored blob {digest} is corrupt (hashes to {actual}); run check",
            metadata={"digest": digest},
        )
    yield _padding(size)


def save(store: Store, items: Sequence[str]) -> Generator[bytes, None, None]:
    """Stream the archive for ``items`` (names or IDs) in chunks of ≤ 1 MiB."""
    with store.lease() as lease:
        images = _select(store, lease, items)
        blobs: list[str] = []
        for image in images:
            blobs += [image.image_id, *(layer.digest for layer in image.manifest.layers)]
        # Pieces go out as they are (a header, ≤ 1 MiB of a blob, padding):
        # no copying to fill chunks.
        for digest in dict.fromkeys(blobs):
            yield from (piece for piece in _blob_member(store, digest) if piece)
        documents = {
            "blobs/sha256/" + image.oci_digest.removeprefix("sha256:"): image.oci_manifest
            for image in images
        }
        documents |= _documents(images)
        for name, body in documents.items():
            member = _header(name, len(body)) + body + _padding(len(body))
            for start in range(0, len(member), CHUNK):
                yield member[start : start + CHUNK]
        yield b"\x00" * (2 * BLOCK)
