"""Images: making a pulled or loaded target visible, and reading images back
(``docker image inspect``, ``docker history``). See docs/design.md §1, §4.

An image is a config digest; a manifest names its config and layers; an index
lists manifests per platform. :meth:`Images.commit_target` records a target
whose blobs are all stored, checks each layer against the config's diff_ids
first, and points names at it, in one transaction: nothing becomes visible
unless all of it is whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import lru_cache

from imagestore import errors
from imagestore.oci import mediatypes as mt
from imagestore.oci.manifests import (
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
)
from imagestore.oci.platforms import Platform
from imagestore.oci.references import Reference
from imagestore.store.catalog import CatalogReader, CatalogWriter
from imagestore.store.content import now_ns
from imagestore.store.documents import Documents
from imagestore.store.events import Journal, image_event
from imagestore.store.leases import Lease
from imagestore.store.models import (
    CommitResult,
    EventKind,
    HistoryRow,
    ImageDetails,
    ImageSummary,
    IndexMember,
    Name,
    NamedIndex,
    name_of,
)
from imagestore.store.names import name_row, resolve_image, untag_events
from imagestore.store.parts import Parts
from imagestore.store.records import (
    BlobRow,
    EventRow,
    ImageRow,
    IndexChild,
    ManifestBlob,
    NamedIndexChild,
    TargetRow,
)


def from_ns(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1e9, tz=UTC)


def _to_ns(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1_000_000) * 1000


@lru_cache(maxsize=256)
def _platform(os: str, architecture: str, variant: str) -> Platform:
    return Platform(os, architecture, variant)


def summary(
    image: ImageRow, names: Iterable[str], indexes: tuple[NamedIndex, ...] = ()
) -> ImageSummary:
    """A list row from an image, its canonical names and its named indexes."""
    tags: list[Name] = []
    digests: list[Name] = []
    for name in names:
        (digests if "@" in name else tags).append(name_of(name))
    return ImageSummary(
        image.id,
        tuple(sorted(set(tags))) if len(tags) > 1 else tuple(tags),
        tuple(sorted(set(digests))) if len(digests) > 1 else tuple(digests),
        image.created,
        image.size,
        image.content_size,
        image.labels,
        _platform(image.os, image.architecture, image.variant),
        image.stored_at,
        indexes,
    )


def _child_platform(text: str) -> Platform | None:
    if not text:
        return None
    os, _, rest = text.partition("/")
    architecture, _, variant = rest.partition("/")
    return _platform(os, architecture, variant)


def named_indexes(
    db: CatalogReader, image_id: str | None = None
) -> dict[str, tuple[NamedIndex, ...]]:
    """For each image a named index reaches (a stored child), the names that
    point at an index with that index's every child; one query for all images
    (or for those sharing an index with ``image_id``)."""
    rows: dict[str, list[NamedIndexChild]] = {}
    for row in db.named_index_children(image_id):
        rows.setdefault(row.name, []).append(row)
    by_image: dict[str, list[NamedIndex]] = {}
    for name, children in rows.items():
        first = children[0]
        named = NamedIndex(
            name_of(name),
            Descriptor(first.index_media_type, first.index_digest, first.index_size),
            tuple(
                IndexMember(
                    _child_platform(row.child.platform),
                    Descriptor(row.child.media_type, row.child.child_digest, row.child.size),
                    row.image_id,
                )
                for row in children
            ),
        )
        for image_id in dict.fromkeys(row.image_id for row in children if row.image_id):
            by_image.setdefault(image_id, []).append(named)
    return {image_id: tuple(found) for image_id, found in by_image.items()}


def image_summary(db: CatalogReader, image_id: str) -> ImageSummary:
    image = db.image(image_id)
    if image is None:
        raise errors.ImageNotFound(f"No such image: {image_id}", metadata={"image": image_id})
    indexes = named_indexes(db, image_id).get(image_id, ())
    return summary(image, [n.name for n in db.names_of_image(image_id)], indexes)


def _commit_events(
    db: CatalogReader,
    event: EventKind,
    target: str,
    image_ids: list[str],
    names: list[str],
    arrived: list[str],
) -> list[EventRow]:
    """The events of a commit (see :meth:`Images.commit_target`)."""
    names = list(dict.fromkeys(names))
    if event is EventKind.PULL:
        # docker's pull event: one per name pulled, not for the digest name a
        # pull by tag records beside it
        only = image_ids[0] if len(image_ids) == 1 else ""
        pulled = [name for name in names if "@" not in name] or names
        return [image_event(db, EventKind.PULL, only, name, target) for name in pulled]
    events: list[EventRow] = []
    tagged = names
    if event is EventKind.LOAD:  # one per image; an index's names go with its first image
        first = names[0] if names else ""
        events += [
            image_event(db, EventKind.LOAD, image_id, first if position == 0 else "", target)
            for position, image_id in enumerate(image_ids)
        ]
        tagged = names[1:]
    events += [
        image_event(db, EventKind.TAG, image_id, name, target)
        for name in tagged
        if name in arrived
        for image_id in image_ids
    ]
    return events


def _layer_size(row: BlobRow | None, layer: Descriptor) -> int:
    """A layer's uncompressed size when known, else its blob's."""
    return row.uncompressed_size if row and row.uncompressed_size is not None else layer.size


class Images:
    """Commit and read images of one store."""

    def __init__(self, parts: Parts, documents: Documents, journal: Journal) -> None:
        self._blobs = parts.blobs
        self._documents = documents
        self._catalog = parts.catalog
        self._journal = journal
        self._collector = parts.collector
        self._leases = parts.leases
        self._replica = parts.replica

    # ---- making images visible -----------------------------------------------

    def commit_target(
        self,
        lease: Lease,
        target: Descriptor,
        names: Sequence[Reference] = (),
        *,
        event: EventKind = EventKind.TAG,
    ) -> CommitResult:
        """Record a manifest or index whose blobs are all stored, and point
        ``names`` at it, in one transaction. Layers are checked against the
        config's diff_ids first; nothing becomes visible unless all of it is whole.

        ``event`` says who commits, for the journal: PULL (one event per name),
        LOAD (one per image, with its first name; TAG for its other names that
        moved here), or TAG (a TAG per image for each name that moved here).
        Each name that left another target also gives UNTAG for the images it
        no longer reaches, first. On a shared catalog, a ``lease`` that expired
        meanwhile (this replica was counted dead: :meth:`Leases.fence`) commits
        nothing: LeaseExpired.
        """
        if event not in (EventKind.PULL, EventKind.LOAD, EventKind.TAG):
            raise ValueError(f"commit_target records pull, load or tag events, not {event}")
        for reference in names:  # a digest name always equals its target's digest
            if reference.digest is not None and reference.digest != target.digest:
                raise errors.ReferenceInvalid(
                    f"{reference.familiar()} cannot name {target.digest}: its digest differs",
                    metadata={"reference": reference.familiar()[:300], "digest": target.digest},
                )
        lease.add(target.digest)
        _, document = self._documents.manifest(target.digest, target.media_type)
        manifests: list[tuple[Descriptor, Manifest, ImageConfig]] = []
        children: list[IndexChild] = []
        if isinstance(document, Index):
            for position, child in enumerate(document.manifests):
                platform = "" if child.platform is None else str(child.platform)
                children.append(
                    IndexChild(position, child.digest, child.media_type, child.size, platform)
                )
                if child.media_type in mt.MANIFESTS and self._blobs.exists(child.digest):
                    lease.add(child.digest)
                    manifests.append(self._load_manifest(lease, child))
            if not manifests:
                raise errors.MalformedContent(
                    f"no manifest of index {target.digest} is stored",
                    metadata={"digest": target.digest},
                )
        else:
            manifests.append(self._load_manifest(lease, target))

        when = now_ns()
        with self._collector.lock, self._journal.transaction() as (db, events):
            # the blobs checked above may have been collected since, if this
            # replica was counted dead meanwhile: then the lease has expired
            self._leases.fence(db, lease, timeout=self._replica.timeout)
            image_ids: list[str] = []
            new_images: list[str] = []
            for descriptor, manifest, config in manifests:
                image_id = manifest.config.digest
                image_ids.append(image_id)
                if db.image(image_id) is None:
                    new_images.append(image_id)
                _record_manifest(db, descriptor, manifest, config, when)
            if isinstance(document, Index):
                _record_blob_row(db, target, when)
                db.add_index(TargetRow(target.digest, document.media_type, "index", None, when),
                             children)  # fmt: skip
            moved, moved_from, new_names = [], [], []
            arrived: list[str] = []  # canonical names that did not point here before
            for reference in names:
                row = name_row(reference, target.digest, when)
                previous = db.set_name(row)
                if previous != target.digest:
                    new_names.append(reference.familiar())
                    arrived.append(row.name)
                    if previous is not None:
                        moved.append(reference.familiar())
                        reached = db.images_of_target(previous)
                        moved_from.append(reached[0] if reached else "")
                        left = [i for i in reached if i not in image_ids]
                        events += untag_events(db, row.name, previous, left)
            if any(n.digest is None for n in names):
                db.set_last_tag_time(image_ids, when)
            for image_id in set(image_ids):
                db.update_content_size(image_id)
            canonical = [name_row(reference, target.digest, when).name for reference in names]
            events += _commit_events(
                db, event, target.digest, list(dict.fromkeys(image_ids)), canonical, arrived
            )
        return CommitResult(
            target.digest,
            tuple(dict.fromkeys(image_ids)),
            tuple(dict.fromkeys(new_images)),
            tuple(moved),
            tuple(new_names),
            tuple(moved_from),
        )

    def _load_manifest(
        self, lease: Lease, descriptor: Descriptor
    ) -> tuple[Descriptor, Manifest, ImageConfig]:
        _, document = self._documents.manifest(descriptor.digest, descriptor.media_type)
        if not isinstance(document, Manifest):
            raise errors.UnsupportedContent(
                f"{descriptor.digest} is an index nested in an index; not supported",
                metadata={"digest": descriptor.digest},
            )
        lease.add(document.config.digest, *(layer.digest for layer in document.layers))
        _, config = self._documents.config(document.config.digest)
        if len(config.diff_ids) != len(document.layers):
            raise errors.MalformedContent(
                f"manifest {descriptor.digest} has {len(document.layers)} layers but its config"
                f" lists {len(config.diff_ids)} diff_ids",
                metadata={"digest": descriptor.digest},
            )
        with self._catalog.reading() as db:
            for position, (layer, diff_id) in enumerate(
                zip(document.layers, config.diff_ids, strict=True)
            ):
                row = db.blob(layer.digest)
                if row is None or not self._blobs.exists(layer.digest):
                    raise errors.BlobNotFound(
                        f"layer {layer.digest} of {descriptor.digest} is not stored",
                        metadata={"digest": layer.digest},
                    )
                if row.size != layer.size:
                    raise errors.DigestMismatch(
                        f"layer {layer.digest} is {row.size} bytes, the manifest says {layer.size}",
                        metadata={"digest": layer.digest},
                    )
                if layer.media_type not in mt.ZSTD_LAYERS and row.diff_id != diff_id:
                    raise errors.DiffIdMismatch(
                        f"layer {position + 1} ({layer.digest}) unpacks to {row.diff_id},"
                        f" but the config says {diff_id}",
                        metadata={"digest": layer.digest, "diff_id": diff_id},
                    )
        return descriptor, document, config

    # ---- reading images ------------------------------------------------------

    def inspect(self, text: str, platform: str | None = None) -> ImageDetails:
        """``docker image inspect``: by name, ID or unique ID prefix."""
        with self._catalog.reading() as db:
            image_id = resolve_image(db, text, platform)
            image = db.image(image_id)
            manifests = db.manifests_of_image(image_id)
            if image is None or not manifests:
                raise errors.ImageNotFound(f"No such image: {text}", metadata={"image": text[:300]})
            image_row = summary(
                image,
                [n.name for n in db.names_of_image(image_id)],
                named_indexes(db, image_id).get(image_id, ()),
            )
            manifest_row = manifests[0]
        raw_manifest, manifest = self._documents.manifest(
            manifest_row.digest, manifest_row.media_type
        )
        assert isinstance(manifest, Manifest)
        raw_config, config = self._documents.config(image_id)
        comment = config.history[-1].comment if config.history else ""
        return ImageDetails(
            summary=image_row,
            author=config.author,
            comment=comment,
            config=config.container_config,
            diff_ids=config.diff_ids,
            manifest_digest=manifest_row.digest,
            manifest_media_type=manifest.media_type,
            config_descriptor=manifest.config,
            layers=manifest.layers,
            last_tag_time=from_ns(image.last_tag_time),
            raw_manifest=raw_manifest,
            raw_config=raw_config,
        )

    def history(self, text: str, platform: str | None = None) -> list[HistoryRow]:
        """``docker history``: one row per config history entry, newest first."""
        details = self.inspect(text, platform)
        _, config = self._documents.config(details.summary.id)
        with self._catalog.reading() as db:
            sizes = {layer.digest: _layer_size(db.blob(layer.digest), layer)
                     for layer in details.layers}  # fmt: skip
        rows: list[HistoryRow] = []
        layers = iter(details.layers)
        entries = config.history or ()
        for entry in entries:
            layer = None if entry.empty_layer else next(layers, None)
            rows.append(
                HistoryRow(
                    created=entry.created,
                    created_by=entry.created_by,
                    size=0 if layer is None else sizes[layer.digest],
                    comment=entry.comment,
                    empty_layer=entry.empty_layer,
                    layer_digest=None if layer is None else layer.digest,
                )
            )
        if not entries:  # no history: one row per layer, as docker shows "<missing>" rows
            rows = [
                HistoryRow(None, "", sizes[layer.digest], "", False, layer.digest)
                for layer in details.layers
            ]
        rows.reverse()
        return rows

    def target_descriptor(self, digest: str) -> Descriptor | None:
        """The descriptor of a stored manifest or index (None: not a target here)."""
        with self._catalog.reading() as db:
            row = db.target(digest)
        if row is None:
            return None
        return Descriptor(row.media_type, row.digest, self._blobs.size(row.digest) or 0)

    def manifest_of(self, image_id: str) -> Descriptor | None:
        """An image's most recently stored manifest (size 0: not recorded)."""
        with self._catalog.reading() as db:
            manifests = db.manifests_of_image(image_id)
        if not manifests:
            return None
        return Descriptor(manifests[0].media_type, manifests[0].digest, 0)

    def tags_of(self, image_id: str) -> list[str]:
        """An image's tags, canonical (``docker.io/library/alpine:3``), by name."""
        with self._catalog.reading() as db:
            return [n.name for n in db.names_of_image(image_id) if n.digest is None]


def _record_manifest(
    db: CatalogWriter,
    descriptor: Descriptor,
    manifest: Manifest,
    config: ImageConfig,
    when: int,
) -> None:
    image_id = manifest.config.digest
    size = sum(_layer_size(db.blob(layer.digest), layer) for layer in manifest.layers)
    _record_blob_row(db, descriptor, when)
    _record_blob_row(db, manifest.config, when)
    db.add_image(
        ImageRow(
            id=image_id,
            created=_to_ns(config.created),
            stored_at=when,
            size=size,
            content_size=0,
            os=config.os,
            architecture=config.architecture,
            variant=config.variant,
            labels=config.labels,
            last_tag_time=None,
        )
    )
    config_blob = manifest.config
    blobs = [ManifestBlob(0, config_blob.digest, config_blob.media_type, config_blob.size)]
    blobs += [
        ManifestBlob(i + 1, layer.digest, layer.media_type, layer.size)
        for i, layer in enumerate(manifest.layers)
    ]
    db.add_manifest(
        TargetRow(descriptor.digest, manifest.media_type, "manifest", image_id, when), blobs
    )


def _record_blob_row(db: CatalogWriter, descriptor: Descriptor, when: int) -> None:
    if db.blob(descriptor.digest) is None:
        db.record_blob(
            BlobRow(descriptor.digest, descriptor.size, descriptor.media_type, None, None, when)
        )
