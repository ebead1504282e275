"""Content: blobs under leases, verified ingest, verified reads, damage marks,
mount sources and orphan files (docs/design.md §4).

A blob counts as stored when its file, its catalog record (same size) and no
damage mark are all there (:meth:`Content.stored`). A file without its record
(a crash between an ingest's rename and its record, or during a prune's
unlinks) or marked damaged by Check is written again by the next pull or load.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from imagestore import errors, hashing
from imagestore.store.blobs import READ_CHUNK, BlobInfo, Encoding, Ingest
from imagestore.store.events import Journal, image_event
from imagestore.store.leases import Lease
from imagestore.store.models import EventKind
from imagestore.store.parts import Parts
from imagestore.store.records import BlobRow

#: seconds a blob file without a catalog record is left alone at start-up: a younger
#: one may be another process's ingest, renamed into place and about to be recorded
ORPHAN_GRACE_PERIOD = 3600.0


def now_ns() -> int:
    return time.time_ns()


@dataclass(frozen=True, slots=True)
class BlobStat:
    """What the store knows of one blob it holds (:meth:`Content.stat`)."""

    record: BlobRow
    #: a prune keeps it: an image's manifest, config or layer, or a named index
    referenced: bool
    #: the images using it, the lowest IDs first (at most the caller's cap)
    image_ids: tuple[str, ...]
    #: how many images use it in all
    image_count: int
    #: Check's problem kind when its file does not hold what the record says
    damage: str | None


class Content:
    """The blob-level operations of one store."""

    def __init__(self, parts: Parts, journal: Journal) -> None:
        self._parts = parts
        self._blobs = parts.blobs
        self._catalog = parts.catalog
        self._journal = journal
        self._leases = parts.leases

    # ---- leases and ingests --------------------------------------------------

    def open_lease(self, *, reading: bool = False) -> Lease:
        """A new lease; end it with :meth:`end_lease` (or use :meth:`lease`). A
        ``reading`` one protects the files it holds while they are read (no
        catalog write), not their rows: for operations that store nothing."""
        return self._leases.new(reading=reading)

    def end_lease(self, lease: Lease) -> None:
        """Release a lease and sweep what it added that nothing references (a failed
        or cancelled operation leaves nothing new behind)."""
        lease.release()
        if lease.added:
            self._parts.collector.collect(lease.added)

    @contextmanager
    def lease(self, *, reading: bool = False) -> Iterator[Lease]:
        """A lease for the block (see :meth:`end_lease`)."""
        lease = self.open_lease(reading=reading)
        try:
            yield lease
        finally:
            self.end_lease(lease)

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
        layer = encoding is Encoding.LAYER
        with self._blobs.ingest(
            expected_digest,
            expected_size,
            encoding=encoding,
            max_uncompressed_size=self._parts.max_layer_size if layer else 0,
            expected_diff_id=expected_diff_id,
            present=self.stored,
        ) as ingest:
            yield ingest

    def commit(self, ingest: Ingest, lease: Lease, media_type: str) -> BlobInfo:
        """Commit an ingest and record its blob row; the digest stays leased.

        The verified file replaces whatever was at its path, and its record
        replaces a damage mark (this is how a damaged blob is repaired). An
        expired lease (:meth:`Leases.fence`) records nothing: LeaseExpired.
        """
        existed: list[bool] = []

        def protect(digest: str) -> None:
            lease.add(digest)
            existed.append(self.stored(digest))

        info = ingest.commit(protect=protect)
        if existed and not existed[0]:
            lease.added.add(info.digest)
        row = BlobRow(
            info.digest, info.size, media_type, info.diff_id, info.uncompressed_size, now_ns()
        )
        with self._catalog.transaction() as db:
            # the file may have been collected while this replica was counted dead
            self._leases.fence(db, lease, timeout=self._parts.replica.timeout)
            db.record_blob(row)
            db.clear_damaged([info.digest])
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

    # ---- what is stored ------------------------------------------------------

    def stored_record(self, digest: str) -> BlobRow | None:
        """The record of a blob that counts as stored (see :meth:`stored`), else None."""
        with self._catalog.reading() as db:
            row = db.blob(digest)
            if row is None or db.is_damaged(digest):
                return None
        return row if self._blobs.size(digest) == row.size else None

    def stored(self, digest: str) -> bool:
        """The blob is stored: its file, its record with the file's size, no damage mark.

        A file without a record, with another size, or that Check found damaged
        does not count: an ingest of it writes it again.
        """
        return self.stored_record(digest) is not None

    def layer_present(self, digest: str) -> bool:
        """A layer blob is stored and its diff_id is known (a pull can skip it)."""
        row = self.stored_record(digest)
        return row is not None and row.diff_id is not None

    def compressed_layer(self, diff_id: str) -> BlobRow | None:
        """A stored, undamaged compressed layer of this diff_id, to reuse (leased by
        the caller before it relies on the file)."""
        with self._catalog.reading() as db:
            return db.blob_by_diff_id(diff_id)

    def stored_bytes(self) -> int:
        """The recorded bytes of every blob."""
        with self._catalog.reading() as db:
            return db.total_blob_bytes()

    def stat(self, digest: str, max_images: int) -> BlobStat:
        """A blob with its file and its record, whether damaged or not (a damaged
        one is not :meth:`stored`, but is still there to describe); NotFound
        without either. At most ``max_images`` image IDs are listed."""
        with self._catalog.reading() as db:
            row = db.blob(digest)
            size = self._blobs.size(digest)
            if row is None or size is None:
                raise errors.BlobNotFound(f"blob {digest} not found", metadata={"digest": digest})
            damage = db.damage(digest)
            referenced = bool(db.referenced_among([digest]))
            image_ids, image_count = db.images_using_blob(digest, max_images)
        if damage is None and size != row.size:
            damage = "size-mismatch"  # as Check would find it
        return BlobStat(row, referenced, tuple(image_ids), image_count, damage)

    # ---- reading -------------------------------------------------------------

    def read_verified(
        self, digest: str, offset: int = 0, length: int | None = None, chunk_size: int = READ_CHUNK
    ) -> Iterator[bytes]:
        """A blob's bytes in chunks of <= ``chunk_size`` (1 MiB); a whole read is re-hashed on the
        way, and a blob that fails is marked and raises DataLoss at its end.

        An ``offset`` past the end raises OutOfRange; at the end, nothing is read
        (google.bytestream's convention: the blob files' own reads enforce it)."""
        whole = offset == 0 and length is None
        self.confirm_recorded(digest)
        with hashing.Sha256() as hasher:
            for chunk in self._blobs.read(digest, offset, length, chunk_size):
                if whole:
                    hasher.update(chunk)
                yield chunk
            if whole and hasher.finish()[0] != digest:
                raise self.found_corrupt(digest)

    def confirm_recorded(self, digest: str) -> None:
        """Raise NotFound unless the blob has a record now. A reader calls it
        after leasing the digest and before opening the file: a record seen
        after the lease means any collection deleting it commits later, and
        waits for a heartbeat that publishes the lease (docs/design.md §4), so
        the file stays until the read ends, on any replica."""
        with self._catalog.reading() as db:
            if db.blob(digest) is None:
                raise errors.BlobNotFound(f"blob {digest} not found", metadata={"digest": digest})

    def found_corrupt(self, digest: str) -> errors.DataLoss:
        """What a reader raises when a stored blob fails its hash: the blob is
        marked first, so the next pull or load that brings it repairs it."""
        self.mark_damaged(digest)
        return errors.BlobCorrupt(
            f"stored blob {digest} is corrupt; pull or load an image that contains it to"
            " write it again (imagestore check lists what else is damaged)",
            metadata={"digest": digest},
        )

    # ---- damage --------------------------------------------------------------

    def mark_damaged(self, digest: str, kind: str = "corrupt-blob") -> None:
        """Mark one blob damaged (a reader found that its bytes do not hash to its
        name): the next pull or load that brings it writes it again."""
        with self._catalog.transaction() as db:
            db.mark_damaged({digest: kind}, now_ns())

    def damaged(self) -> dict[str, str]:
        """Blobs Check marked damaged and nothing has written again (digest -> kind)."""
        with self._catalog.reading() as db:
            return db.damaged()

    # ---- blob sources (push's mount sources) ---------------------------------

    def record_blob_sources(self, digests: Iterable[str], registry: str, repository: str) -> None:
        """Note that ``repository`` on ``registry`` holds these blobs (it was pulled
        from or pushed to). ``registry`` is a reference's domain (``docker.io``,
        ``127.0.0.1:5000``), ``repository`` the path on it (``library/alpine``).
        Blobs without a record are skipped; forgetting a blob forgets its sources."""
        with self._catalog.transaction() as db:
            db.record_blob_sources(digests, registry, repository, now_ns())

    def record_push(
        self, digests: Iterable[str], registry: str, repository: str, name: str, target: str
    ) -> None:
        """A push of ``target`` as ``name`` (canonical) ended well: ``repository`` on
        ``registry`` now holds these blobs (as :meth:`record_blob_sources`), and
        the journal gets its PUSH event (the image, when the target is one), in
        one transaction."""
        with self._journal.transaction() as (db, events):
            db.record_blob_sources(digests, registry, repository, now_ns())
            images = db.images_of_target(target)
            image_id = images[0] if len(images) == 1 else ""  # an index: several
            event = image_event(db, EventKind.PUSH, image_id, name, target)
            events.append(replace(event, remote=f"{registry}/{repository}"))

    def blob_sources(self, digest: str, registry: str) -> list[str]:
        """Repositories of ``registry`` known to hold ``digest``, most recently
        recorded first (as :meth:`record_blob_sources` spells them)."""
        with self._catalog.reading() as db:
            return db.blob_sources(digest, registry)

    # ---- orphans -------------------------------------------------------------

    def sweep_orphans(self, older_than: float = ORPHAN_GRACE_PERIOD) -> list[str]:
        """Delete the blob files that nothing records, references or leases, last
        written more than ``older_than`` seconds ago; returns their digests.

        A younger one is left alone: it may be an ingest (of this process or,
        on a shared blob directory, another) renamed into place and about to be
        recorded. Prune removes orphans of any age.
        """
        cutoff = time.time() - older_than
        removed: list[str] = []
        files = list(self._blobs.digests())
        # In a transaction: no lease can be taken (nor a blob recorded) on any
        # replica between the look and the unlinks.
        with self._parts.collector.lock, self._catalog.transaction() as db:
            live = self._parts.replica.live(db)
            kept = set(db.blob_sizes(files)) | db.referenced_among(files) | db.leased(live)
            kept.update(digest for row in live.values() for digest in row.reading)
            kept |= self._leases.protected()
            for digest in files:
                modified = None if digest in kept else self._blobs.modified(digest)
                if modified is not None and modified < cutoff:
                    self._blobs.delete(digest)
                    removed.append(digest)
            db.clear_damaged(removed)
        return removed
