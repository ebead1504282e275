"""The store: one root directory, owned by one process; the only public face
of ``imagestore.store``.

``Store`` opens the parts of a root (blob files, catalog, leases, collector:
``parts.py``) and offers every operation the RPCs stand on, with Docker's
semantics, each implemented by the module that owns its concept (docs/design.md
§2, §4): ``content`` (blobs, leases, verified ingest and reads, damage marks,
mount sources, orphans), ``images`` (commit, inspect, history), ``names``
(resolve, tag, remove), ``listing``, ``prune`` and ``check``. It is
synchronous and thread-safe: the API layer calls it from worker threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Self

from imagestore import errors
from imagestore.oci.manifests import Descriptor, ImageConfig
from imagestore.oci.references import Reference
from imagestore.store import check, listing, prune, resumable
from imagestore.store.blobs import DEFAULT_UPLOAD_TIMEOUT, READ_CHUNK, BlobInfo, Encoding, Ingest
from imagestore.store.content import ORPHAN_GRACE_PERIOD, BlobStat, Content
from imagestore.store.documents import Documents
from imagestore.store.events import (
    DEFAULT_EVENTS_MAX_AGE,
    DEFAULT_EVENTS_MAX_COUNT,
    Clock,
    Journal,
    Listener,
)
from imagestore.store.filters import ListFilters, PruneFilters
from imagestore.store.images import Images
from imagestore.store.leases import Lease
from imagestore.store.models import (
    CheckEvent,
    CheckReport,
    CommitResult,
    DiskUsage,
    EventKind,
    EventPage,
    HistoryRow,
    ImageDetails,
    PruneResult,
    RemoveResult,
    TagResult,
)
from imagestore.store.names import Names, Resolved, resolve, resolve_image
from imagestore.store.parts import CatalogFactory, Parts, sqlite_catalog
from imagestore.store.parts import catalog_factory as catalog_factory  # --catalog, for the server
from imagestore.store.records import BlobRow
from imagestore.store.replicas import DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_REPLICA_TIMEOUT
from imagestore.store.resumable import ResumableFile

DEFAULT_MAX_LAYER_SIZE = 64 << 30


@dataclass(frozen=True, slots=True)
class Totals:
    """What a store holds, from one catalog snapshot."""

    images: int  #: dangling ones included
    blobs: int  #: blob records
    stored_bytes: int  #: the recorded bytes of every blob


class Store:
    """An image store rooted at one directory. Use :meth:`open`."""

    def __init__(
        self,
        root: Path,
        *,
        max_layer_size: int = DEFAULT_MAX_LAYER_SIZE,
        orphan_grace_period: float = ORPHAN_GRACE_PERIOD,
        catalog: CatalogFactory = sqlite_catalog,
        blob_dir: Path | None = None,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        replica_timeout: float = DEFAULT_REPLICA_TIMEOUT,
        upload_timeout: float = DEFAULT_UPLOAD_TIMEOUT,
        events_max_count: int = DEFAULT_EVENTS_MAX_COUNT,
        events_max_age: float = DEFAULT_EVENTS_MAX_AGE,
        events_clock: Clock = time.time_ns,
    ) -> None:
        self.root = root
        self._parts = Parts.open(
            root,
            catalog,
            max_layer_size,
            blob_dir,
            heartbeat_interval=heartbeat_interval,
            replica_timeout=replica_timeout,
            upload_timeout=upload_timeout,
        )
        try:
            self._journal = Journal(
                self._parts.catalog,
                max_count=events_max_count,
                max_age=events_max_age,
                clock=events_clock,
            )
        except BaseException:
            self._parts.close()
            raise
        self._content = Content(self._parts, self._journal)
        self._documents = Documents(self._parts.blobs, self._content.found_corrupt)
        self._images = Images(self._parts, self._documents, self._journal)
        self._names = Names(self._parts, self._journal)
        try:
            # Crash leftovers: this replica's own (nothing else runs under its ID
            # while the root is locked), and dead replicas'; upload sessions'
            # files only once idle (a session outlives a restart).
            live = self._parts.live_replicas()
            self.stale_ingests_removed = len(self._parts.blobs.remove_stale_ingests(live))
            self.stale_ingests_removed += _remove_legacy_ingests(root)
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
        catalog: CatalogFactory = sqlite_catalog,
        blob_dir: Path | None = None,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        replica_timeout: float = DEFAULT_REPLICA_TIMEOUT,
        upload_timeout: float = DEFAULT_UPLOAD_TIMEOUT,
        events_max_count: int = DEFAULT_EVENTS_MAX_COUNT,
        events_max_age: float = DEFAULT_EVENTS_MAX_AGE,
        events_clock: Clock = time.time_ns,
    ) -> Self:
        """Open (create) a store: take the root lock, open and migrate the catalog
        (``catalog(root)``; SQLite in the root by default), open the blob files
        (``blob_dir``, default ``<root>/blobs``; another one needs PostgreSQL and
        may be shared by several replicas), register this replica (a heartbeat
        every ``heartbeat_interval`` s on a shared catalog; dead after
        ``replica_timeout`` s without one), remove stale ingests (an upload
        session's file is stale once untouched for ``upload_timeout`` s) and the
        blob files without a record older than ``orphan_grace_period`` s.

        The events journal keeps at most ``events_max_count`` events, none older
        than ``events_max_age`` seconds by ``events_clock`` (ns since the epoch)."""
        return cls(
            root,
            max_layer_size=max_layer_size,
            orphan_grace_period=orphan_grace_period,
            catalog=catalog,
            blob_dir=blob_dir,
            heartbeat_interval=heartbeat_interval,
            replica_timeout=replica_timeout,
            upload_timeout=upload_timeout,
            events_max_count=events_max_count,
            events_max_age=events_max_age,
            events_clock=events_clock,
        )

    def close(self) -> None:
        self._parts.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def max_layer_size(self) -> int:
        """The largest uncompressed layer this store accepts, in bytes."""
        return self._parts.max_layer_size

    @property
    def catalog_kind(self) -> str:
        """The catalog's implementation, e.g. "sqlite"."""
        return self._parts.catalog.kind

    @property
    def generation(self) -> int | None:
        """Changes whenever the catalog may have: an answer read at one
        generation holds while it lasts (None: keep no answers). Known without
        I/O; on a :attr:`shared` catalog it may lag another process's commit."""
        return self._parts.catalog.generation

    @property
    def shared(self) -> bool:
        """Whether other processes change the catalog too (then caches that
        must not lag ask :meth:`confirm_generation`)."""
        return self._parts.catalog.shared

    def confirm_generation(self) -> int | None:
        """The generation as of now, counting every commit acknowledged before
        the call (a query on a shared catalog: blocking). None: keep nothing."""
        return self._parts.catalog.confirm_generation()

    async def confirm_generation_async(self) -> int | None:
        """:meth:`confirm_generation` on the running event loop, without blocking
        it; one call at a time."""
        return await self._parts.catalog.confirm_generation_async()

    def totals(self) -> Totals:
        """How many images and blobs there are, and the blobs' bytes (one snapshot)."""
        with self._parts.catalog.reading() as db:
            return Totals(db.image_count(), db.blob_count(), db.total_blob_bytes())

    # ---- leases and ingests (content.py) -------------------------------------

    def lease(self, *, reading: bool = False) -> AbstractContextManager[Lease]:
        """Protect digests for the block; blobs it added that nothing references
        are deleted when it ends (a failed or cancelled operation leaves nothing).
        A ``reading`` lease (an operation that stores nothing: Save, Push,
        ReadBlob) keeps the files it holds while they are read, writing nothing
        to the catalog; the blobs' rows may go meanwhile."""
        return self._content.lease(reading=reading)

    def open_lease(self, *, reading: bool = False) -> Lease:
        """A lease to end with :meth:`end_lease` (for callers that end it elsewhere,
        such as on a worker thread of an async operation)."""
        return self._content.open_lease(reading=reading)

    def end_lease(self, lease: Lease) -> None:
        """Release a lease and sweep what it added that nothing references."""
        self._content.end_lease(lease)

    def ingest(
        self,
        lease: Lease,
        expected_digest: str | None = None,
        expected_size: int | None = None,
        *,
        encoding: Encoding = Encoding.RAW,
        expected_diff_id: str | None = None,
    ) -> AbstractContextManager[Ingest]:
        """An ingest protected by ``lease``; finish it with :meth:`commit`."""
        return self._content.ingest(
            lease,
            expected_digest,
            expected_size,
            encoding=encoding,
            expected_diff_id=expected_diff_id,
        )

    def commit(self, ingest: Ingest, lease: Lease, media_type: str) -> BlobInfo:
        """Commit a verified ingest and record its blob (repairing a damaged one)."""
        return self._content.commit(ingest, lease, media_type)

    # ---- resumable ingests: any replica goes on with them (store/resumable.py)

    def create_resumable(self, key: str) -> ResumableFile:
        """A new, empty ingest file that any replica can find by ``key``."""
        return resumable.create(self._parts.blobs, key)

    def take_resumable(self, key: str) -> ResumableFile | None:
        """The file of ``key``, locked and made this replica's (None: none);
        IngestBusyError while a request elsewhere holds it."""
        return resumable.take(self._parts.blobs, key)

    def resumable_size(self, key: str) -> int | None:
        """Bytes written so far to the file of ``key`` (None: none)."""
        return resumable.size_of(self._parts.blobs, key)

    def remove_idle_uploads(self) -> int:
        """Remove the files of upload sessions untouched for the upload timeout,
        this replica's (left by its last run, say) and dead replicas'; how many went."""
        live = self._parts.live_replicas()
        return len(self._parts.blobs.remove_stale_ingests(live, uploads_only=True))

    def resume_ingest(self, file: ResumableFile, encoding: Encoding) -> Ingest:
        """An ingest going on from the end of ``file`` (what it holds hashed);
        commit it with :meth:`commit`."""
        layer = encoding is Encoding.LAYER
        limit = self._parts.max_layer_size if layer else 0
        return resumable.resume(self._parts.blobs, file, encoding, limit)

    def put_blob(
        self, lease: Lease, data: bytes, media_type: str, expected_digest: str | None = None
    ) -> BlobInfo:
        """Store a small blob held in memory (manifest, config)."""
        return self._content.put_blob(lease, data, media_type, expected_digest)

    # ---- blobs (content.py) --------------------------------------------------

    def stored(self, digest: str) -> bool:
        """The blob's file, its record with the file's size, and no damage mark."""
        return self._content.stored(digest)

    def stored_record(self, digest: str) -> BlobRow | None:
        """The record of a stored blob (see :meth:`stored`), else None."""
        return self._content.stored_record(digest)

    def layer_present(self, digest: str) -> bool:
        """A layer blob is stored and its diff_id is known (a pull can skip it)."""
        return self._content.layer_present(digest)

    def compressed_layer(self, diff_id: str) -> BlobRow | None:
        """A stored compressed layer of this diff_id, to reuse; lease it, then
        check :meth:`blob_size` before relying on it."""
        return self._content.compressed_layer(diff_id)

    def blob_size(self, digest: str) -> int | None:
        """The size of a blob's file (None: no file)."""
        return self._parts.blobs.size(digest)

    def read_blob(self, digest: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """A blob's bytes as they are on disk, in chunks of <= 1 MiB, unverified
        (for a reader that hashes them itself, as Push does); NotFound without
        its record (lease the digest first)."""
        self._content.confirm_recorded(digest)
        return self._parts.blobs.read(digest, offset, length)

    def open_blob(self, digest: str) -> BinaryIO:
        """A blob's file, open for reading and unverified (for a sender that
        hashes it itself, as Push does while the kernel sends it); NotFound
        without its record (lease the digest first)."""
        self._content.confirm_recorded(digest)
        return self._parts.blobs.open(digest)

    def image_config(self, digest: str) -> ImageConfig:
        """An image config, re-hashed and parsed (kept by digest, as Inspect's are);
        a corrupt one is marked damaged and raises DataLoss."""
        return self._documents.config(digest)[1]

    def read_small_blob(self, digest: str) -> bytes:
        """A small blob's bytes (a manifest, a config), unverified."""
        return self._parts.blobs.read_bytes(digest)

    def read_verified(
        self, digest: str, offset: int = 0, length: int | None = None, chunk_size: int = READ_CHUNK
    ) -> Iterator[bytes]:
        """A blob's bytes, in chunks of at most ``chunk_size``; a whole read is
        re-hashed, and one that fails is marked damaged and raises DataLoss at its end."""
        return self._content.read_verified(digest, offset, length, chunk_size)

    def found_corrupt(self, digest: str) -> errors.DataLoss:
        """Mark a blob a reader found corrupt; the DataLoss error to raise."""
        return self._content.found_corrupt(digest)

    def mark_damaged(self, digest: str, kind: str = "corrupt-blob") -> None:
        """Mark one blob damaged: the next pull or load that brings it writes it again."""
        self._content.mark_damaged(digest, kind)

    def damaged(self) -> dict[str, str]:
        """Blobs marked damaged that nothing has written again (digest -> kind)."""
        return self._content.damaged()

    def record_blob_sources(self, digests: Sequence[str], registry: str, repository: str) -> None:
        """Note that ``registry``/``repository`` holds these blobs (push mounts from it)."""
        self._content.record_blob_sources(digests, registry, repository)

    def record_push(
        self, digests: Sequence[str], registry: str, repository: str, name: str, target: str
    ) -> None:
        """A push of ``target`` as ``name`` (canonical) succeeded: record
        ``registry``/``repository`` as holding ``digests`` and write the PUSH
        event, in one transaction."""
        self._content.record_push(digests, registry, repository, name, target)

    def blob_sources(self, digest: str, registry: str) -> list[str]:
        """Repositories of ``registry`` known to hold ``digest``, most recent first."""
        return self._content.blob_sources(digest, registry)

    def sweep_orphans(self, older_than: float = ORPHAN_GRACE_PERIOD) -> list[str]:
        """Delete blob files nothing records, references or leases, older than
        ``older_than`` seconds; returns their digests."""
        return self._content.sweep_orphans(older_than)

    def stored_bytes(self) -> int:
        """The recorded bytes of every blob."""
        return self._content.stored_bytes()

    def stat_blob(self, digest: str, max_images: int) -> BlobStat:
        """A blob's record, damage and users (at most ``max_images`` image IDs
        listed, with their count); NotFound without its file or its record."""
        return self._content.stat(digest, max_images)

    # ---- images (images.py) --------------------------------------------------

    def commit_target(
        self,
        lease: Lease,
        target: Descriptor,
        names: Sequence[Reference] = (),
        *,
        event: EventKind = EventKind.TAG,
    ) -> CommitResult:
        """Record a manifest or index whose blobs are stored, and point ``names``
        at it, in one transaction (layers checked against the config first).
        ``event`` is who commits, for the journal: PULL, LOAD, or TAG (the
        names only)."""
        return self._images.commit_target(lease, target, names, event=event)

    def inspect(self, text: str, platform: str | None = None) -> ImageDetails:
        """``docker image inspect``: by name, ID or unique ID prefix."""
        return self._images.inspect(text, platform)

    def history(self, text: str, platform: str | None = None) -> list[HistoryRow]:
        """``docker history``: one row per config history entry, newest first."""
        return self._images.history(text, platform)

    def target_descriptor(self, digest: str) -> Descriptor | None:
        """The descriptor of a stored manifest or index (None: not stored)."""
        return self._images.target_descriptor(digest)

    def manifest_of(self, image_id: str) -> Descriptor | None:
        """An image's most recently stored manifest (its size left 0)."""
        return self._images.manifest_of(image_id)

    def tags_of(self, image_id: str) -> list[str]:
        """An image's tags, canonical, by name."""
        return self._images.tags_of(image_id)

    # ---- names (names.py) ----------------------------------------------------

    def resolve(self, text: str) -> Resolved:
        """A name first (tag or digest reference), then an image ID or unique prefix."""
        with self._parts.catalog.reading() as db:
            return resolve(db, text)

    def resolve_image(self, text: str, platform: str | None = None) -> str:
        """One image ID for a name, ID or prefix; a name reaching several
        platforms picks ``platform`` (default: the host's)."""
        with self._parts.catalog.reading() as db:
            return resolve_image(db, text, platform)

    def tag(self, source: str, target: str) -> TagResult:
        """``docker tag``: the target name always moves to the source's image."""
        return self._names.tag(source, target)

    def remove(self, items: Sequence[str], *, force: bool = False) -> list[RemoveResult]:
        """``docker rmi a b``: untag names, delete images that have none left;
        each item on its own and in order, one result per item (a failed item
        carries its error and does not stop the others). ``force`` only allows
        deleting by ID an image several names reach."""
        return self._names.remove(items, force=force)

    # ---- repositories (the OCI Distribution endpoint) --------------------------

    def repository_tags(self, repository: str, *, after: str = "", limit: int) -> list[str]:
        """The tags of a canonical repository (``docker.io/library/redis``) in
        byte order, after ``after``, at most ``limit`` (one page)."""
        with self._parts.catalog.reading() as db:
            return db.repository_tags(repository, after, limit)

    def repositories(self, *, after: str = "", limit: int) -> list[str]:
        """Canonical repositories with at least one name, one page of at most
        ``limit`` after the repository ``after`` (the order of their names)."""
        with self._parts.catalog.reading() as db:
            return db.repositories(after, limit)

    def has_repository(self, repository: str) -> bool:
        """Whether some tag or digest reference of ``repository`` exists."""
        with self._parts.catalog.reading() as db:
            return db.repository_reaches(repository, None)

    def repository_target(self, repository: str, reference: str) -> Descriptor | None:
        """The manifest or index ``reference`` (a tag, or a digest) denotes in
        ``repository``: a tag's target; a digest that a name of the repository
        points at, or that an index it points at lists and the store holds.
        None when there is none (its size is the blob file's)."""
        with self._parts.catalog.reading() as db:
            if reference.startswith("sha256:"):
                found = db.repository_reaches(repository, reference)
                row = db.target(reference) if found else None
            else:
                name = db.name(f"{repository}:{reference}")
                row = None if name is None else db.target(name.target)
        if row is None:
            return None
        return Descriptor(row.media_type, row.digest, self.blob_size(row.digest) or 0)

    # ---- listing, prune, check -----------------------------------------------

    def list_images(
        self,
        filters: ListFilters | None = None,
        *,
        show_all: bool = False,
        page_size: int = 0,
        page_token: str = "",
        max_bytes: int | None = None,
        measure: listing.Measure | None = None,
    ) -> listing.Page:
        """``docker image ls``: newest first, Docker's filters, keyset pages."""
        return listing.list_images(
            self._parts,
            filters,
            show_all=show_all,
            page_size=page_size,
            page_token=page_token,
            max_bytes=max_bytes,
            measure=measure,
        )

    def prune(
        self, filters: PruneFilters | None = None, *, all_images: bool = False,
        dry_run: bool = False,
    ) -> PruneResult:  # fmt: skip
        """``docker image prune``: dangling images (every matching one with
        ``all_images``), then unreferenced blobs and stale ingests; one at a time."""
        return prune.prune(
            self._parts, self._journal, filters, all_images=all_images, dry_run=dry_run
        )

    def disk_usage(self, *, page_size: int = 0, page_token: str = "") -> DiskUsage:
        """``docker system df -v`` for images: one keyset page of image rows
        (``page_size`` 0 means 1,000), the totals on every page."""
        return prune.disk_usage(
            self._parts, self._journal, page_size=page_size, page_token=page_token
        )

    def check_stream(self) -> Generator[CheckEvent, None, None]:
        """Verify every blob and the catalog without blocking the store; one at
        a time (CheckRunning otherwise, on the first step). Yields progress and
        each finding as it is confirmed, then a CheckSummary; closing the
        generator stops the hashing and frees the check."""
        return check.check_stream(self._parts)

    def check(self) -> CheckReport:
        """:meth:`check_stream` run to its end, its findings collected."""
        return check.check(self._parts)

    # ---- the events journal (events.py) --------------------------------------

    @property
    def events_retention(self) -> tuple[int, float]:
        """The journal's retention: at most this many events, this many seconds."""
        return self._journal.max_count, self._journal.max_age

    def event_bounds(self) -> tuple[int, int]:
        """``(oldest, last)``: the oldest cursor the journal keeps (``last + 1``
        when it keeps none) and the last cursor given (0 before any event)."""
        return self._journal.bounds()

    def read_events(self, after: int, limit: int) -> EventPage:
        """Up to ``limit`` events after cursor ``after``, in cursor order, with
        the journal's bounds, from one snapshot."""
        return self._journal.read(after, limit)

    def subscribe_events(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(last_cursor)`` after each change that wrote events has
        committed, here or (on a shared catalog) in another process, and
        ``listener(0)`` when some may have gone unheard (on the committing or the
        catalog's thread: quick, must not block). Returns the function that
        unsubscribes it."""
        return self._journal.subscribe(listener)


__all__ = [
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_MAX_LAYER_SIZE",
    "DEFAULT_REPLICA_TIMEOUT",
    "ORPHAN_GRACE_PERIOD",
    "BlobStat",
    "Resolved",
    "Store",
    "Totals",
]


#: where ingest files were before the blob directory could be shared: a root
#: written by an earlier release may hold crash leftovers there
LEGACY_INGEST_DIR = "ingest"


def _remove_legacy_ingests(root: Path) -> int:
    """Remove ``<root>/ingest`` and the leftovers in it (only this process, which
    holds the root lock, ever wrote there); returns how many files it held."""
    legacy = root / LEGACY_INGEST_DIR
    try:
        leftovers = list(legacy.iterdir())
    except FileNotFoundError:
        return 0
    for path in leftovers:
        path.unlink(missing_ok=True)
    legacy.rmdir()
    return len(leftovers)
