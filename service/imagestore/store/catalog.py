"""The catalog: what the blob files mean, as a protocol any database can implement.

It records blob records (size, media type, and for layers diff_id and
uncompressed size), targets (manifests and indexes), the images (one per
config digest) and the names (tags and digest references) that point at
targets; and, per blob, the registry repositories it was pulled from or pushed
to (push's mount sources) and whether Check found it damaged; and the events
journal: every change, written in the transaction that makes it, under a
cursor counted in commit order.

The catalog holds rows, not policy: what an operation means lives in the store
modules that call it (``content``, ``images``, ``names``, ``gc``...). Every
state change is one :meth:`Catalog.transaction`; a :meth:`Catalog.reading`
sees one consistent snapshot and never waits for a writer (docs/design.md §4).
``store/sqlite.py`` and ``store/postgres.py`` implement it (their common queries
in ``store/sql.py``); ``tests/store`` runs one contract suite over every
implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from imagestore.store.records import (
    BlobRow,
    EventRow,
    ImageRow,
    IndexChild,
    ManifestBlob,
    NamedIndexChild,
    NameRow,
    ReplicaRow,
    TargetRow,
)

#: the repositories kept per blob and registry as mount sources (the latest ones)
MAX_SOURCES_PER_BLOB = 16


class CatalogReader(Protocol):
    """Queries over one consistent snapshot."""

    # ---- blobs ----
    def blob(self, digest: str) -> BlobRow | None: ...
    def blobs(self) -> list[BlobRow]: ...
    def blob_sizes(self, digests: Iterable[str]) -> dict[str, int]:
        """The recorded size of each of ``digests`` that has a record."""
        ...

    def total_blob_bytes(self) -> int:
        """The recorded bytes of every blob."""
        ...

    def blob_count(self) -> int:
        """How many blobs have a record."""
        ...

    def blob_by_diff_id(self, diff_id: str) -> BlobRow | None:
        """A stored, undamaged compressed layer with this diff_id (to reuse instead
        of compressing the same tar again), the oldest first."""
        ...

    def is_damaged(self, digest: str) -> bool: ...
    def damaged(self) -> dict[str, str]:
        """Every damage mark: digest -> Check's problem kind."""
        ...

    def damage(self, digest: str) -> str | None:
        """One blob's damage mark (Check's problem kind), None when unmarked."""
        ...

    def blob_sources(self, digest: str, registry: str) -> list[str]:
        """Repositories of ``registry`` known to hold ``digest``, most recent first."""
        ...

    # ---- targets and images ----
    def target(self, digest: str) -> TargetRow | None: ...
    def manifest_blobs(self, manifest_digest: str) -> list[ManifestBlob]:
        """A manifest's config and layers, by position."""
        ...

    def index_children(self, index_digest: str) -> list[IndexChild]: ...
    def named_index_children(self, image_id: str | None = None) -> list[NamedIndexChild]:
        """Every child of every index a name points at, by name, then position
        (one query for a whole listing); with ``image_id``, of the indexes
        listing one of that image's manifests only."""
        ...

    def image(self, image_id: str) -> ImageRow | None: ...
    def images(self, after: tuple[int, str] | None = None) -> Iterator[ImageRow]:
        """Images newest first (by created, then ID descending), lazily; ``after``
        is a keyset position ``(created or 0, id)`` to continue after."""
        ...

    def images_by_prefix(self, hex_prefix: str) -> list[str]:
        """Image IDs starting with ``sha256:<hex_prefix>`` (at most 10)."""
        ...

    def manifests_of_image(self, image_id: str) -> list[TargetRow]:
        """The image's manifests, most recently stored first."""
        ...

    def blobs_by_image(self) -> dict[str, set[str]]:
        """Every image's blobs: its manifests, their configs and layers."""
        ...

    def image_count(self) -> int:
        """How many images there are, dangling ones included."""
        ...

    def images_using_blob(self, digest: str, limit: int) -> tuple[list[str], int]:
        """The images whose manifests hold ``digest`` (as manifest, config or
        layer) or, when it is an index a name points at, the images of its stored
        children: the first ``limit`` IDs in order, and how many there are."""
        ...

    def unnamed_indexes(self) -> list[str]: ...

    # ---- names ----
    def name(self, name: str) -> NameRow | None: ...
    def names(self) -> list[NameRow]: ...
    def names_of_image(self, image_id: str) -> list[NameRow]:
        """The names that reach an image (through a manifest or an index listing
        it), by name."""
        ...

    def names_by_image(self) -> dict[str, list[NameRow]]:
        """Every image's names (as :meth:`names_of_image`, for all images)."""
        ...

    def name_strings_by_image(self) -> dict[str, list[str]]:
        """Every image's canonical names, only the strings (listing's fast path)."""
        ...

    def images_of_target(self, target: str) -> list[str]:
        """The images a name pointing at ``target`` reaches (stored manifests only)."""
        ...

    # ---- repositories (the OCI Distribution endpoint's pages) ----
    # A repository's names are ``<repository>:<tag>`` and ``<repository>@<digest>``:
    # all of them, and no other repository's, sort in [repository + ":",
    # repository + "A") (":" and "@" are the only characters after a repository
    # that a name may hold, and both sort below "A"), so these are ranges of
    # the names' primary key.
    def repository_tags(self, repository: str, after: str, limit: int) -> list[str]:
        """The tags of ``repository`` sorting after ``after`` ("": from the first),
        in byte order, at most ``limit``."""
        ...

    def repositories(self, after: str, limit: int) -> list[str]:
        """Repositories with at least one name, at most ``limit``, in the order
        of their names (one key lookup each); ``after`` ("": from the first)
        is the last repository of the previous page."""
        ...

    def repository_reaches(self, repository: str, digest: str | None) -> bool:
        """Whether a name of ``repository`` points at ``digest``, or at an index
        listing it; with None, whether the repository has any name."""
        ...

    # ---- reachability (garbage collection) ----
    def referenced_blobs(self) -> set[str]:
        """Blobs the catalog needs: every manifest's own blob, config and layers,
        and every named index's blob."""
        ...

    def referenced_among(self, digests: Iterable[str]) -> set[str]:
        """Which of ``digests`` the catalog needs (see :meth:`referenced_blobs`)."""
        ...

    # ---- the events journal ----
    def event_bounds(self) -> tuple[int, int]:
        """The journal's ``(oldest, last)`` cursors: the oldest event kept (``last
        + 1`` when none is) and the last cursor ever given (0 before the first)."""
        ...

    def events_after(self, cursor: int, limit: int) -> list[EventRow]:
        """The first ``limit`` events kept whose cursor is above ``cursor``, in
        cursor order."""
        ...

    # ---- replicas and leases (docs/design.md §4) ----
    def clock(self) -> int:
        """The catalog's time, ns since the epoch: the one clock heartbeats are
        stamped and judged by."""
        ...

    def replicas(self) -> list[ReplicaRow]:
        """Every replica's last heartbeat."""
        ...

    def leased(self, replicas: Iterable[str]) -> set[str]:
        """The digests the leases of ``replicas`` hold."""
        ...

    def collector_epoch(self) -> int:
        """How many collections have deleted blob rows (bumped in their transaction)."""
        ...

    def store_id(self) -> str:
        """This store's identity, made with the catalog (the blob directory's
        ``store-id`` file holds the same)."""
        ...


class CatalogWriter(CatalogReader, Protocol):
    """Changes inside one transaction (reads see them)."""

    def claim_blob_dir(self, nonce: str) -> str:
        """Record ``nonce`` as the store's blob directory's unless one is recorded
        already; the recorded one (store/blobs.py, ``BlobStore.bind``)."""
        ...

    def record_blob(self, blob: BlobRow) -> None:
        """Insert a blob record, or update one from content just verified: an
        existing record keeps its first media type and time and takes ``blob``'s
        size, and its diff_id and uncompressed size when ``blob`` has them (what
        the bytes hashed to), so writing a blob again repairs a wrong record."""
        ...

    def delete_blobs(self, digests: Iterable[str]) -> None:
        """Forget blobs: their records, mount sources and damage marks."""
        ...

    def mark_damaged(self, problems: dict[str, str], when: int) -> None:
        """Record blobs found damaged (digest -> Check's problem kind)."""
        ...

    def clear_damaged(self, digests: Iterable[str]) -> None:
        """Forget damage marks (the blob was written again, or is gone)."""
        ...

    def record_blob_sources(
        self, digests: Iterable[str], registry: str, repository: str, when: int
    ) -> None:
        """Note that ``registry``/``repository`` holds each blob (recorded blobs
        only); each blob keeps the latest :data:`MAX_SOURCES_PER_BLOB`
        repositories per registry."""
        ...

    def add_manifest(self, target: TargetRow, blobs: Sequence[ManifestBlob]) -> None: ...
    def add_index(self, target: TargetRow, children: Sequence[IndexChild]) -> None: ...
    def add_image(self, image: ImageRow) -> None:
        """Insert an image record; an existing one is kept as it is."""
        ...

    def update_content_size(self, image_id: str) -> None:
        """Recompute the bytes an image's distinct blobs take (its manifests included)."""
        ...

    def set_last_tag_time(self, image_ids: Iterable[str], when: int) -> None: ...
    def delete_image(self, image_id: str) -> list[str]:
        """Delete an image and its manifests' rows; returns the manifest digests."""
        ...

    def delete_index(self, index_digest: str) -> None: ...
    def set_name(self, row: NameRow) -> str | None:
        """Create or move a name; returns the target it pointed at before (if any)."""
        ...

    def delete_name(self, name: str) -> None: ...

    def append_events(self, events: Sequence[EventRow], when: int) -> int:
        """Append events at time ``when`` under the next cursors (the last one
        given plus 1, 2…: no gaps) and return the last. The counter is read and
        bumped in this transaction, so cursors follow commit order, and a
        transaction rolled back gives none away."""
        ...

    def add_lease(self, replica: str, lease: int, digests: Iterable[str]) -> None:
        """Protect ``digests`` under one lease of ``replica``."""
        ...

    def release_lease(self, replica: str, lease: int) -> None:
        """Forget one lease's rows."""
        ...

    def holds_lease(self, replica: str, lease: int, *, heard_within: int | None = None) -> bool:
        """Whether lease ``lease`` of ``replica`` still has its rows (no collector
        forgot it), and, given ``heard_within`` (ns), whether the replica's last
        heartbeat is that recent by the catalog's clock (no collector could count
        it dead): the commit fence of a change relying on the lease."""
        ...

    def heartbeat(self, replica: str, seen_epoch: int, reading: Sequence[str]) -> None:
        """Record that ``replica`` is alive now (the catalog's clock), had seen
        ``seen_epoch``, and was reading ``reading``."""
        ...

    def forget_replica(self, replica: str) -> None:
        """Forget a replica's heartbeat and its leases (it stopped, or died)."""
        ...

    def bump_collector_epoch(self) -> int:
        """Count one more collection that deleted blob rows; the new epoch."""
        ...

    def trim_events(self, keep: int, not_before: int) -> None:
        """Retention: forget all but the newest ``keep`` events, and the oldest
        events up to the first one recorded at ``not_before`` (ns) or later."""
        ...


class Catalog(Protocol):
    """A catalog: snapshots to read, transactions to write."""

    @property
    def schema_version(self) -> int: ...

    @property
    def kind(self) -> str:
        """The implementation's name, shown to operators (e.g. "sqlite")."""
        ...

    @property
    def shared(self) -> bool:
        """Whether other processes write the catalog too (PostgreSQL): then
        :attr:`generation` learns of their commits a moment after they are made,
        and :meth:`confirm_generation` is what a cache must ask."""
        ...

    @property
    def generation(self) -> int | None:
        """A number that changes when a transaction ends, for caches of answers
        read from the catalog, known without I/O; None when changes can come
        from elsewhere unseen, and nothing read may be kept. On a shared catalog
        it may lag another process's commit (until its notification arrives)."""
        ...

    def confirm_generation(self) -> int | None:
        """The generation as of now: every commit acknowledged to anyone before
        the call began is counted in it (a query on a shared catalog: call it
        off the event loop); None when it cannot be known."""
        ...

    async def confirm_generation_async(self) -> int | None:
        """:meth:`confirm_generation` on the running event loop, which it does not
        block; one call at a time."""
        ...

    def watch_changes(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(last_cursor)`` (on a thread of the catalog's) when
        another process commits a change that wrote events, and
        ``listener(0)`` when some may have gone unheard (the catalog
        reconnected). A catalog only this process writes never calls it."""
        ...

    def watch_collections(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(epoch)`` (on a thread of the catalog's) when a
        collector commits collector epoch ``epoch``, so that a replica can
        publish its read set at once instead of at its next heartbeat. A
        catalog only this process writes never calls it."""
        ...

    def reading(self) -> AbstractContextManager[CatalogReader]:
        """One consistent snapshot for the block. It does not wait for a writer
        (or for garbage collection), and does not see a transaction in progress."""
        ...

    def transaction(
        self, *, rollback: bool = False, bookkeeping: bool = False
    ) -> AbstractContextManager[CatalogWriter]:
        """One atomic, durable change; transactions run one at a time.

        ``rollback`` runs the same statements and then undoes them: a dry run
        uses the very code of the real change. ``bookkeeping`` marks a change
        of leases and heartbeats only: the generation does not move (no answer
        read from the catalog changes)."""
        ...

    def singleton(self, name: str) -> AbstractContextManager[bool]:
        """Hold the lock ``name`` ("prune", "check") of every process sharing the
        catalog for the block, if it is free: True; False when another holder
        (a process or a thread) has it. It never waits."""
        ...

    def close(self) -> None: ...
