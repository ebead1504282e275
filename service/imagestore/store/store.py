"""The store: one root directory, owned by one process.

``Store`` ties the blob files, the catalog, the leases and the collector
together and implements the operations every RPC stands on, with Docker's
semantics (see docs/design.md, §1, §3, §4). It is synchronous and thread-safe:
the API layer calls it from worker threads.

A blob counts as stored when its file, its catalog record (same size) and no
damage mark are all there (:meth:`Store.stored`). A file without its record
(a crash between an ingest's rename and its record, or during a prune's
unlinks) or marked damaged by Check is written again by the next pull or load.
"""

from __future__ import annotations

import logging
import sqlite3
import stat
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Self

from imagestore import errors, hashing
from imagestore.oci import mediatypes as mt
from imagestore.oci.digests import is_id_prefix, short_id
from imagestore.oci.manifests import (
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    parse_config,
    parse_document,
)
from imagestore.oci.platforms import Platform, best_match, host_platform, parse_platform
from imagestore.oci.references import Reference, parse_reference, parse_tag_target
from imagestore.store import catalog as cat
from imagestore.store.blobs import BlobInfo, BlobStore, Encoding, Ingest
from imagestore.store.catalog import Catalog
from imagestore.store.gc import Collector
from imagestore.store.leases import Lease, Leases
from imagestore.store.lock import RootLock
from imagestore.store.models import (
    CommitResult,
    HistoryRow,
    ImageDetails,
    ImageSummary,
    RemoveEvent,
    TagResult,
)

MIN_ID_PREFIX = 4
DEFAULT_MAX_LAYER_SIZE = 64 << 30
#: seconds a blob file without a catalog record is left alone at start-up: a younger
#: one may be another process's ingest, renamed into place and about to be recorded
ORPHAN_GRACE_PERIOD = 3600.0
#: the store root's mode: the owner's alone
ROOT_MODE = 0o700

log = logging.getLogger("imagestore.store")


def now_ns() -> int:
    return time.time_ns()


def from_ns(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1e9, tz=UTC)


def _to_ns(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1_000_000) * 1000


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a user-given name or ID denotes."""

    image_ids: tuple[str, ...]
    target: str | None  # the name's target, when it was a name
    name: cat.NameRow | None


def _name_row(reference: Reference, target: str, when: int) -> cat.NameRow:
    if reference.digest is not None:  # a digest reference is stored without its tag
        reference = reference.repository().with_digest(reference.digest)
    return cat.NameRow(
        name=str(reference),
        repository=reference.name,
        tag=reference.tag if reference.digest is None else None,
        digest=reference.digest,
        target=target,
        created_at=when,
        updated_at=when,
    )


def familiar(name: cat.NameRow) -> str:
    """A stored (canonical) name in Docker's familiar form."""
    return _familiar(name.name)


@lru_cache(maxsize=256)
def _platform(os: str, architecture: str, variant: str) -> Platform:
    return Platform(os, architecture, variant)


@lru_cache(maxsize=1 << 16)
def _familiar(canonical: str) -> str:
    return parse_reference(canonical, default_tag=False).familiar()


def _make_private(root: Path) -> None:
    """Create the root 0700, or tighten an existing one that others may enter.

    Raises FailedPrecondition when it cannot be made private (not ours).
    """
    root.mkdir(ROOT_MODE, parents=True, exist_ok=True)
    mode = stat.S_IMODE(root.stat().st_mode)
    if mode & 0o077 == 0:
        return
    try:
        root.chmod(ROOT_MODE)
    except PermissionError:
        raise errors.FailedPrecondition(
            f"store root {root} is mode {mode:04o} and cannot be made private (0700):"
            " make it this user's and 0700, or choose another root",
            metadata={"root": str(root)},
        ) from None
    log.warning("store root %s was mode %04o; made it %04o", root, mode, ROOT_MODE)


class Store:
    """An image store rooted at one directory. Use :meth:`open`."""

    def __init__(
        self,
        root: Path,
        *,
        max_layer_size: int = DEFAULT_MAX_LAYER_SIZE,
        orphan_grace_period: float = ORPHAN_GRACE_PERIOD,
    ) -> None:
        self.root = root
        self.max_layer_size = max_layer_size
        _make_private(root)
        self._lock = RootLock(root)
        try:
            self.blobs = BlobStore(root)
            self.catalog = Catalog(root / "catalog.db")
        except BaseException:
            self._lock.release()
            raise
        self.leases = Leases()
        self.collector = Collector(self.blobs, self.catalog, self.leases)
        self.prune_lock = threading.Lock()
        try:
            # Crash leftovers: nothing else can own an ingest while we hold the lock.
            self.stale_ingests_removed = len(self.blobs.remove_stale_ingests())
            self.orphans_removed = len(self.sweep_orphans(orphan_grace_period))
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(
        cls,
        root: Path,
        *,
        max_layer_size: int = DEFAULT_MAX_LAYER_SIZE,
        orphan_grace_period: float = ORPHAN_GRACE_PERIOD,
    ) -> Self:
        """Open (create) a store: take the root lock, migrate the catalog, remove
        stale ingests and the blob files without a record older than
        ``orphan_grace_period`` seconds."""
        return cls(root, max_layer_size=max_layer_size, orphan_grace_period=orphan_grace_period)

    def close(self) -> None:
        self.catalog.close()
        self._lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- leases and ingests --------------------------------------------------

    @contextmanager
    def lease(self) -> Iterator[Lease]:
        """Protect digests for one operation; blobs it added but nothing
        references are deleted when it ends (a failed or cancelled operation
        leaves nothing new behind)."""
        lease = self.leases.new()
        try:
            yield lease
        finally:
            self.end_lease(lease)

    def end_lease(self, lease: Lease) -> None:
        """Release a lease and sweep what it added that nothing references."""
        lease.release()
        if lease.added:
            self.collector.collect(lease.added)

    @contextmanager
    def ingest(
        self,
        lease: Lease,
        expected_digest: str | None = None,
        expected_size: int | None = None,
        *,
        encoding: Encoding = Encoding.RAW,
        expected_diff_id: str | None = None,
    ) -> Iterator[Ingest]:
        """An ingest protected by ``lease``; finish it with :meth:`commit`."""
        if expected_digest is not None:
            lease.add(expected_digest)  # before the existence check inside ingest()
        with self.blobs.ingest(
            expected_digest,
            expected_size,
            encoding=encoding,
            max_uncompressed_size=self.max_layer_size if encoding is Encoding.LAYER else 0,
            expected_diff_id=expected_diff_id,
            present=self.stored,
        ) as ingest:
            yield ingest

    def commit(self, ingest: Ingest, lease: Lease, media_type: str) -> BlobInfo:
        """Commit an ingest and record its blob row; the digest stays leased.

        The verified file replaces whatever was at its path, and its record
        replaces a damage mark (this is how a damaged blob is repaired).
        """
        existed: list[bool] = []

        def protect(digest: str) -> None:
            lease.add(digest)
            existed.append(self.stored(digest))

        info = ingest.commit(protect=protect)
        if existed and not existed[0]:
            lease.added.add(info.digest)
        with self.catalog.transaction() as db:
            self.catalog.record_blob(
                db,
                cat.BlobRow(
                    info.digest,
                    info.size,
                    media_type,
                    info.diff_id,
                    info.uncompressed_size,
                    now_ns(),
                ),
            )
            self.catalog.clear_damaged(db, [info.digest])
        return info

    def put_blob(
        self, lease: Lease, data: bytes, media_type: str, expected_digest: str | None = None
    ) -> BlobInfo:
        """Store a small blob held in memory (manifest, config)."""
        with self.ingest(lease, expected_digest, len(data)) as ingest:
            if ingest.exists and expected_digest is not None:
                return BlobInfo(expected_digest, len(data))
            ingest.write(data)
            return self.commit(ingest, lease, media_type)

    def _stored_row(self, digest: str) -> cat.BlobRow | None:
        """The record of a blob that counts as stored (see :meth:`stored`), else None."""
        with self.catalog.reading() as db:
            row = self.catalog.blob(db, digest)
            if row is None or self.catalog.is_damaged(db, digest):
                return None
        return row if self.blobs.size(digest) == row.size else None

    def stored(self, digest: str) -> bool:
        """The blob is stored: its file, its record with the file's size, no damage mark.

        A file without a record, with another size, or that Check found damaged
        does not count: an ingest of it writes it again.
        """
        return self._stored_row(digest) is not None

    def layer_present(self, digest: str) -> bool:
        """A layer blob is stored and its diff_id is known (a pull can skip it)."""
        row = self._stored_row(digest)
        return row is not None and row.diff_id is not None

    # ---- blob sources (push's mount sources) ---------------------------------

    def record_blob_sources(self, digests: Iterable[str], registry: str, repository: str) -> None:
        """Note that ``repository`` on ``registry`` holds these blobs (it was pulled
        from or pushed to). ``registry`` is a reference's domain (``docker.io``,
        ``127.0.0.1:5000``), ``repository`` the path on it (``library/alpine``).
        Blobs without a record are skipped; each blob keeps the latest
        ``MAX_SOURCES_PER_BLOB`` repositories per registry; forgetting a blob
        forgets its sources."""
        with self.catalog.transaction() as db:
            self.catalog.record_blob_sources(db, digests, registry, repository, now_ns())

    def blob_sources(self, digest: str, registry: str) -> list[str]:
        """Repositories of ``registry`` known to hold ``digest``, most recently
        recorded first (as :meth:`record_blob_sources` spells them)."""
        with self.catalog.reading() as db:
            return self.catalog.blob_sources(db, digest, registry)

    # ---- damage and orphans ----------------------------------------------------

    def record_damage(self, damaged: dict[str, str], checked: Iterable[str]) -> None:
        """Check's verdict: mark ``damaged`` (digest -> problem kind) so that the next
        pull or load writes those blobs again; unmark the other ``checked`` blobs,
        and marks of blobs that are neither on disk nor recorded."""
        verified = set(checked)
        with self.catalog.transaction() as db:  # marks are few: look at those only
            cleared = [
                digest
                for digest in self.catalog.damaged(db)
                if digest not in damaged
                and (
                    digest in verified
                    or (self.catalog.blob(db, digest) is None and not self.blobs.exists(digest))
                )
            ]
            self.catalog.clear_damaged(db, cleared)
            self.catalog.mark_damaged(db, damaged, now_ns())

    def mark_damaged(self, digest: str, kind: str = "corrupt-blob") -> None:
        """Mark one blob damaged (a reader found that its bytes do not hash to its
        name): the next pull or load that brings it writes it again."""
        with self.catalog.transaction() as db:
            self.catalog.mark_damaged(db, {digest: kind}, now_ns())

    def read_verified(
        self, digest: str, offset: int = 0, length: int | None = None
    ) -> Iterator[bytes]:
        """A blob's bytes as ``blobs.read`` streams them; a whole read is re-hashed
        on the way, and a blob that fails is marked and raises DataLoss at its end."""
        whole = offset == 0 and length is None
        with hashing.Sha256() as hasher:
            for chunk in self.blobs.read(digest, offset, length):
                if whole:
                    hasher.update(chunk)
                yield chunk
            if whole and hasher.finish()[0] != digest:
                raise self.found_corrupt(digest)

    def found_corrupt(self, digest: str) -> errors.DataLoss:
        """What a reader raises when a stored blob fails its hash: the blob is
        marked first, so the next pull or load that brings it repairs it."""
        self.mark_damaged(digest)
        return errors.DataLoss(
            f"stored blob {digest} is corrupt; pull or load an image that contains it to"
            " write it again (imagestore check lists what else is damaged)",
            metadata={"digest": digest},
        )

    def damaged(self) -> dict[str, str]:
        """Blobs Check marked damaged and nothing has written again (digest -> kind)."""
        with self.catalog.reading() as db:
            return self.catalog.damaged(db)

    def sweep_orphans(self, older_than: float = ORPHAN_GRACE_PERIOD) -> list[str]:
        """Delete the blob files that nothing records, references or leases, last
        written more than ``older_than`` seconds ago; returns their digests.

        A younger one is left alone: it may be an ingest (of this process or,
        on a shared blob directory, another) renamed into place and about to be
        recorded. Prune removes orphans of any age.
        """
        cutoff = time.time() - older_than
        removed: list[str] = []
        with self.collector.lock, self.leases.lock:
            files = list(self.blobs.digests())
            with self.catalog.reading() as db:
                kept = self.catalog.recorded_among(db, files)
                kept |= self.catalog.referenced_among(db, files)
            kept |= self.leases.protected()
            for digest in files:
                modified = None if digest in kept else self.blobs.modified(digest)
                if modified is not None and modified < cutoff:
                    self.blobs.delete(digest)
                    removed.append(digest)
            if removed:
                with self.catalog.transaction() as db:
                    self.catalog.clear_damaged(db, removed)
        return removed

    # ---- making images visible -----------------------------------------------

    def commit_target(
        self,
        lease: Lease,
        target: Descriptor,
        names: Sequence[Reference] = (),
    ) -> CommitResult:
        """Record a manifest or index whose blobs are all stored, and point
        ``names`` at it, in one transaction. Layers are checked against the
        config's diff_ids first; nothing becomes visible unless all of it is whole.
        """
        for reference in names:  # a digest name always equals its target's digest
            if reference.digest is not None and reference.digest != target.digest:
                raise errors.InvalidArgument(
                    f"{reference.familiar()} cannot name {target.digest}: its digest differs",
                    metadata={"name": reference.familiar()[:200], "digest": target.digest},
                )
        lease.add(target.digest)
        document = parse_document(self.blobs.read_bytes(target.digest), target.media_type)
        manifests: list[tuple[Descriptor, Manifest, ImageConfig]] = []
        children: list[cat.IndexChild] = []
        if isinstance(document, Index):
            for position, child in enumerate(document.manifests):
                platform = "" if child.platform is None else str(child.platform)
                children.append(
                    cat.IndexChild(position, child.digest, child.media_type, child.size, platform)
                )
                if child.media_type in mt.MANIFESTS and self.blobs.exists(child.digest):
                    lease.add(child.digest)
                    manifests.append(self._load_manifest(lease, child))
            if not manifests:
                raise errors.InvalidArgument(
                    f"no manifest of index {target.digest} is stored",
                    metadata={"digest": target.digest},
                )
        else:
            manifests.append(self._load_manifest(lease, target))

        when = now_ns()
        with self.collector.lock, self.catalog.transaction() as db:
            image_ids: list[str] = []
            new_images: list[str] = []
            for descriptor, manifest, config in manifests:
                image_id = manifest.config.digest
                image_ids.append(image_id)
                if self.catalog.image(db, image_id) is None:
                    new_images.append(image_id)
                self._record_manifest(db, descriptor, manifest, config, when)
            if isinstance(document, Index):
                self._record_blob_row(db, target, when)
                self.catalog.add_index(
                    db,
                    cat.TargetRow(target.digest, document.media_type, "index", None, when),
                    children,
                )
            moved, new_names = [], []
            for reference in names:
                previous = self.catalog.set_name(db, _name_row(reference, target.digest, when))
                if previous != target.digest:
                    new_names.append(reference.familiar())
                    if previous is not None:
                        moved.append(reference.familiar())
            tags = [n for n in names if n.digest is None]
            if tags:
                self.catalog.set_last_tag_time(db, image_ids, when)
            for image_id in set(image_ids):
                self.catalog.update_content_size(db, image_id)
        return CommitResult(
            target.digest,
            tuple(dict.fromkeys(image_ids)),
            tuple(dict.fromkeys(new_images)),
            tuple(moved),
            tuple(new_names),
        )

    def _record_blob_row(self, db: sqlite3.Connection, descriptor: Descriptor, when: int) -> None:
        if self.catalog.blob(db, descriptor.digest) is None:
            self.catalog.record_blob(
                db,
                cat.BlobRow(
                    descriptor.digest, descriptor.size, descriptor.media_type, None, None, when
                ),
            )

    def _load_manifest(
        self, lease: Lease, descriptor: Descriptor
    ) -> tuple[Descriptor, Manifest, ImageConfig]:
        document = parse_document(self.blobs.read_bytes(descriptor.digest), descriptor.media_type)
        if not isinstance(document, Manifest):
            raise errors.UnsupportedContent(
                f"{descriptor.digest} is an index nested in an index; not supported",
                metadata={"digest": descriptor.digest},
            )
        lease.add(document.config.digest, *(layer.digest for layer in document.layers))
        config = parse_config(self.blobs.read_bytes(document.config.digest))
        if len(config.diff_ids) != len(document.layers):
            raise errors.MalformedContent(
                f"manifest {descriptor.digest} has {len(document.layers)} layers but its config"
                f" lists {len(config.diff_ids)} diff_ids",
                metadata={"digest": descriptor.digest},
            )
        with self.catalog.reading() as db:
            for position, (layer, diff_id) in enumerate(
                zip(document.layers, config.diff_ids, strict=True)
            ):
                row = self.catalog.blob(db, layer.digest)
                if row is None or not self.blobs.exists(layer.digest):
                    raise errors.NotFound(
                        f"layer {layer.digest} of {descriptor.digest} is not stored",
                        metadata={"digest": layer.digest},
                    )
                if row.size != layer.size:
                    raise errors.DigestMismatch(
                        f"layer {layer.digest} is {row.size} bytes, the manifest says {layer.size}",
                        metadata={"digest": layer.digest},
                    )
                if layer.media_type not in mt.ZSTD_LAYERS and row.diff_id != diff_id:
                    raise errors.DigestMismatch(
                        f"layer {position + 1} ({layer.digest}) unpacks to {row.diff_id},"
                        f" but the config says {diff_id}",
                        metadata={"digest": layer.digest, "diff_id": diff_id},
                    )
        return descriptor, document, config

    def _record_manifest(
        self,
        db: sqlite3.Connection,
        descriptor: Descriptor,
        manifest: Manifest,
        config: ImageConfig,
        when: int,
    ) -> None:
        image_id = manifest.config.digest
        layer_rows = [self.catalog.blob(db, layer.digest) for layer in manifest.layers]
        size = sum(
            (row.uncompressed_size if row and row.uncompressed_size is not None else layer.size)
            for row, layer in zip(layer_rows, manifest.layers, strict=True)
        )
        self._record_blob_row(db, descriptor, when)
        self._record_blob_row(db, manifest.config, when)
        self.catalog.add_image(
            db,
            cat.ImageRow(
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
            ),
        )
        blobs = [
            cat.ManifestBlob(
                0, manifest.config.digest, manifest.config.media_type, manifest.config.size
            )
        ]
        blobs += [
            cat.ManifestBlob(i + 1, layer.digest, layer.media_type, layer.size)
            for i, layer in enumerate(manifest.layers)
        ]
        self.catalog.add_manifest(
            db,
            cat.TargetRow(descriptor.digest, manifest.media_type, "manifest", image_id, when),
            blobs,
        )

    # ---- resolving names -----------------------------------------------------

    def resolve(self, text: str) -> Resolved:
        """A name first (tag or digest reference), then an image ID or unique prefix."""
        text = text.strip()
        reference: Reference | None = None
        try:
            reference = parse_reference(text)
        except errors.InvalidArgument:
            if not is_id_prefix(text):
                raise
        with self.catalog.reading() as db:
            if reference is not None:
                name = self.catalog.name(db, _name_row(reference, "", 0).name)
                if name is not None:
                    images = self.catalog.images_of_target(db, name.target)
                    return Resolved(tuple(images), name.target, name)
                if reference.digest and (target := self.catalog.target(db, reference.digest)):
                    images = self.catalog.images_of_target(db, target.digest)
                    if images:
                        return Resolved(tuple(images), target.digest, None)
            if is_id_prefix(text):
                hex_part = text.removeprefix("sha256:")
                if len(hex_part) >= MIN_ID_PREFIX or text.startswith("sha256:"):
                    found = self.catalog.images_by_prefix(db, hex_part)
                    if len(found) == 1:
                        return Resolved((found[0],), None, None)
                    if len(found) > 1:
                        raise errors.InvalidArgument(
                            f"ambiguous image ID prefix {text!r}: matches "
                            + ", ".join(short_id(i) for i in found),
                            metadata={"prefix": text, "candidates": ",".join(found)},
                        )
        shown = reference.familiar() if reference is not None else text
        raise errors.NotFound(f"No such image: {shown}", metadata={"image": text[:300]})

    def resolve_image(self, text: str, platform: str | None = None) -> str:
        """One image ID for a name, ID or prefix; a name reaching several
        platforms picks ``platform`` (default: the host's)."""
        resolved = self.resolve(text)
        if len(resolved.image_ids) == 1 and platform is None:
            return resolved.image_ids[0]
        wanted = parse_platform(platform) if platform else host_platform()
        with self.catalog.reading() as db:
            offered = []
            for image_id in resolved.image_ids:
                row = self.catalog.image(db, image_id)
                if row is not None:
                    offered.append((Platform(row.os, row.architecture, row.variant), image_id))
        choice = best_match(wanted, offered)
        if choice is None:
            raise errors.NotFound(
                f"image {text} has no variant for platform {wanted}; present: "
                + (", ".join(sorted(str(p) for p, _ in offered)) or "none"),
                metadata={"platform": str(wanted)},
            )
        return str(choice)

    # ---- reading images ------------------------------------------------------

    @staticmethod
    def summary(image: cat.ImageRow, names: Iterable[str]) -> ImageSummary:
        """A list row from an image and its canonical names."""
        tags: list[str] = []
        digests: list[str] = []
        for name in names:
            (digests if "@" in name else tags).append(_familiar(name))
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
        )

    def image_summary(self, image_id: str) -> ImageSummary:
        with self.catalog.reading() as db:
            image = self.catalog.image(db, image_id)
            if image is None:
                raise errors.NotFound(f"No such image: {image_id}")
            return self.summary(image, [n.name for n in self.catalog.names_of_image(db, image_id)])

    def inspect(self, text: str, platform: str | None = None) -> ImageDetails:
        """``docker image inspect``: by name, ID or unique ID prefix."""
        image_id = self.resolve_image(text, platform)
        with self.catalog.reading() as db:
            image = self.catalog.image(db, image_id)
            manifests = self.catalog.manifests_of_image(db, image_id)
            if image is None or not manifests:
                raise errors.NotFound(f"No such image: {text}")
            summary = self.summary(
                image, [n.name for n in self.catalog.names_of_image(db, image_id)]
            )
            manifest_row = manifests[0]
        raw_manifest = self.blobs.read_bytes(manifest_row.digest)
        manifest = parse_document(raw_manifest, manifest_row.media_type)
        assert isinstance(manifest, Manifest)
        raw_config = self.blobs.read_bytes(image_id)
        config = parse_config(raw_config)
        comment = config.history[-1].comment if config.history else ""
        return ImageDetails(
            summary=summary,
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
        config = parse_config(details.raw_config)
        with self.catalog.reading() as db:
            sizes = {
                layer.digest: (
                    row.uncompressed_size
                    if row and row.uncompressed_size is not None
                    else layer.size
                )
                for layer in details.layers
                for row in [self.catalog.blob(db, layer.digest)]
            }
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

    # ---- tag and remove ------------------------------------------------------

    def tag(self, source: str, target: str) -> TagResult:
        """``docker tag``: the target name always moves to the source's image."""
        reference = parse_tag_target(target)
        when = now_ns()
        # Resolve under the GC lock: every change holds it, so what we found
        # is still there when the transaction runs.
        with self.collector.lock, self.catalog.transaction() as db:
            resolved = self.resolve(source)
            if resolved.target is not None:
                destination = resolved.target
            else:
                manifests = self.catalog.manifests_of_image(db, resolved.image_ids[0])
                if not manifests:
                    raise errors.NotFound(f"No such image: {source}")
                destination = manifests[0].digest
            previous = self.catalog.set_name(db, _name_row(reference, destination, when))
            displaced: list[str] = []
            if previous is not None and previous != destination:
                displaced = [
                    i
                    for i in self.catalog.images_of_target(db, previous)
                    if i not in resolved.image_ids
                ]
            self.catalog.set_last_tag_time(db, resolved.image_ids, when)
        return TagResult(reference.familiar(), resolved.image_ids, tuple(displaced))

    def remove(self, items: Sequence[str], *, force: bool = False) -> list[RemoveEvent]:
        """``docker rmi``: untag names; delete images that have none left."""
        events: list[RemoveEvent] = []
        for item in items:
            events += self._remove_one(item, force)
        return events

    def _remove_one(self, item: str, force: bool) -> list[RemoveEvent]:
        events: list[RemoveEvent] = []
        doomed: list[str] = []
        with self.collector.lock:
            resolved = self.resolve(item)
            with self.catalog.transaction() as db:
                if resolved.name is not None:
                    events += self._untag(db, resolved.name)
                    doomed = [
                        i for i in resolved.image_ids if not self.catalog.names_of_image(db, i)
                    ]
                else:
                    image_id = resolved.image_ids[0]
                    names = self.catalog.names_of_image(db, image_id)
                    tags = [n for n in names if n.digest is None]
                    if not force and (len(tags) > 1 or len({n.repository for n in names}) > 1):
                        raise errors.FailedPrecondition(
                            f"conflict: unable to delete {short_id(image_id)} (must be forced)"
                            " - image is referenced in multiple repositories",
                            metadata={"image": image_id},
                        )
                    for name in sorted(names, key=lambda n: (n.digest is not None, n.name)):
                        self.catalog.delete_name(db, name.name)
                        events.append(RemoveEvent("untagged", familiar(name)))
                    doomed = [image_id]
                candidates: set[str] = set()
                for image_id in doomed:
                    candidates |= self._image_blobs(db, image_id)
                    self.catalog.delete_image(db, image_id)
                    events.append(RemoveEvent("deleted", image_id))
                candidates |= set(self.catalog.unnamed_indexes(db))
            sweep = self.collector.collect(candidates)
        events += [RemoveEvent("deleted", d) for d in sweep.blobs if d not in doomed]
        return events

    def _untag(self, db: sqlite3.Connection, name: cat.NameRow) -> list[RemoveEvent]:
        """Remove one name; removing a repository's last tag of an image also
        removes that repository's digest references to it (Docker's rule)."""
        images = set(self.catalog.images_of_target(db, name.target))
        self.catalog.delete_name(db, name.name)
        events = [RemoveEvent("untagged", familiar(name))]
        if name.digest is None:
            remaining = [
                n
                for image_id in images
                for n in self.catalog.names_of_image(db, image_id)
                if n.repository == name.repository
            ]
            if not any(n.digest is None for n in remaining):
                for n in sorted({n.name: n for n in remaining}.values(), key=lambda n: n.name):
                    self.catalog.delete_name(db, n.name)
                    events.append(RemoveEvent("untagged", familiar(n)))
        return events

    def _image_blobs(self, db: sqlite3.Connection, image_id: str) -> set[str]:
        blobs: set[str] = set()
        for manifest in self.catalog.manifests_of_image(db, image_id):
            blobs.add(manifest.digest)
            blobs.update(b.blob_digest for b in self.catalog.manifest_blobs(db, manifest.digest))
        return blobs
