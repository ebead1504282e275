"""What leaves the store for a name: its manifest; or its index with every
child; or, when a platform is chosen, the one child that matches.

Push and Save share this rule (docs/design.md §3): an index whose children are
not all stored is refused, naming the absent platforms, unless a platform
picks one stored child, so nothing leaves with digests that point nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagestore import errors, hashing
from imagestore.oci import mediatypes as mt
from imagestore.oci.manifests import Descriptor, Index, Manifest, parse_document
from imagestore.oci.platforms import best_match, parse_platform, require_platform
from imagestore.store.leases import Lease
from imagestore.store.store import Store


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """A manifest or index as stored: its descriptor, verified bytes and parse."""

    descriptor: Descriptor
    data: bytes
    parsed: Manifest | Index


def read_document(store: Store, descriptor: Descriptor) -> StoredDocument:
    """A stored manifest or index, re-hashed: a corrupt one never leaves."""
    data = store.read_small_blob(descriptor.digest)
    if hashing.sha256_digest(data) != descriptor.digest:
        raise store.found_corrupt(descriptor.digest)
    with errors.concerning(descriptor.digest, "manifest"):
        parsed = parse_document(data, descriptor.media_type)
    return StoredDocument(
        Descriptor(parsed.media_type, descriptor.digest, len(data), descriptor.platform),
        data,
        parsed,
    )


def lease_manifest(manifest: Manifest, lease: Lease) -> None:
    """Keep a manifest's config and layers from the collector while they are read."""
    lease.add(manifest.config.digest, *(layer.digest for layer in manifest.layers))


def select_documents(
    store: Store, target: Descriptor, platform: str, lease: Lease, verb: str, name: str
) -> list[StoredDocument]:
    """The documents to send for ``target``, children before their index.

    ``verb`` ("push", "save") words the refusal of a partly stored index, and
    ``name`` (what the caller asked for) that of an image of another platform.
    """
    top = read_document(store, target)
    if isinstance(top.parsed, Manifest):
        lease_manifest(top.parsed, lease)
        if platform:  # docker refuses an image of one platform that is not the one asked
            config = store.image_config(top.parsed.config.digest)
            require_platform(name, config, [parse_platform(platform)])
        return [top]
    present = [d for d in top.parsed.manifests if store.blob_size(d.digest) is not None]
    if platform:
        wanted = parse_platform(platform)
        choice = best_match(
            wanted, [(d.platform, d) for d in present if d.media_type in mt.MANIFESTS]
        )
        if choice is None:
            raise errors.PlatformNotFound(
                f"no manifest for platform {wanted} is stored in this index",
                metadata={"platform": str(wanted), "digest": target.digest},
            )
        child = read_document(store, choice)
        assert isinstance(child.parsed, Manifest)
        lease_manifest(child.parsed, lease)
        return [child]
    absent = [d for d in top.parsed.manifests if d not in present]
    if absent:
        names = ", ".join(str(d.platform or d.digest) for d in absent)
        raise errors.IndexIncomplete(
            f"cannot {verb} the whole index {target.digest}: these platforms are not stored:"
            f" {names}; pull them, or {verb} one platform",
            metadata={"missing": names[:1000], "digest": target.digest},
        )
    children = []
    for descriptor in top.parsed.manifests:
        child = read_document(store, descriptor)
        if isinstance(child.parsed, Manifest):
            lease_manifest(child.parsed, lease)
        children.append(child)
    return [*children, top]
