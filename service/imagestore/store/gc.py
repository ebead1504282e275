"""Garbage collection: mark from the catalog and the leases, sweep the rest.

Live = every blob a stored manifest needs (its own blob, config, layers), every
named index, and every leased digest. The collector decides and deletes while
holding the GC lock and the lease lock, so no operation can lease or commit
halfway through. Rows go first, in one durable transaction; files are unlinked
only after it (a crash in between leaves orphan files, never a row without its
file: an orphan does not count as stored, so a pull or load writes it again;
the next prune removes it, and so does a start-up once it is old).
See docs/design.md §4.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from imagestore.store.blobs import BlobStore
from imagestore.store.catalog import Catalog, CatalogReader, CatalogWriter
from imagestore.store.leases import Leases


@dataclass(frozen=True, slots=True)
class Sweep:
    """What a collection removed (or, planned only, would remove)."""

    blobs: dict[str, int] = field(default_factory=dict)  # digest -> bytes on disk
    indexes: tuple[str, ...] = ()

    @property
    def reclaimed(self) -> int:
        return sum(self.blobs.values())


class Collector:
    """Mark-and-sweep over one store. ``lock`` is the GC lock: hold it to commit."""

    def __init__(self, blobs: BlobStore, catalog: Catalog, leases: Leases) -> None:
        self.blobs = blobs
        self.catalog = catalog
        self.leases = leases
        self.lock = threading.RLock()

    def plan(self, db: CatalogReader, only: set[str] | None = None) -> Sweep:
        """What is unreachable now. Hold ``lock`` and ``leases.lock`` while using it."""
        unnamed = db.unnamed_indexes()
        indexes = tuple(i for i in unnamed if only is None or i in only)
        protected = self.leases.protected()
        if only is None:
            live = db.referenced_blobs() | protected
            rows = {row.digest: row.size for row in db.blobs()}
            dead = (set(rows) | set(self.blobs.digests())) - live
        else:  # a few candidates (an operation's own blobs): look only at them
            # An index being swept no longer keeps its blob alive.
            live = (db.referenced_among(only) - set(indexes)) | protected
            rows = db.blob_sizes(only)
            dead = {d for d in only - live if d in rows or self.blobs.exists(d)}
        sizes = {}
        for digest in sorted(dead):
            size = self.blobs.size(digest)
            sizes[digest] = size if size is not None else rows.get(digest, 0)
        return Sweep(sizes, indexes)

    @staticmethod
    def apply(db: CatalogWriter, sweep: Sweep) -> None:
        """Remove the swept rows; unlink the files once this transaction is durable."""
        for index in sweep.indexes:
            db.delete_index(index)
        db.delete_blobs(sweep.blobs)

    def unlink(self, sweep: Sweep) -> None:
        for digest in sweep.blobs:
            self.blobs.delete(digest)

    def collect(self, candidates: Iterable[str] | None = None, *, dry_run: bool = False) -> Sweep:
        """Delete unreachable blobs (only among ``candidates`` when given)."""
        only = None if candidates is None else set(candidates)
        with self.lock, self.leases.lock:
            with self.catalog.transaction(rollback=dry_run) as db:
                sweep = self.plan(db, only)
                self.apply(db, sweep)
            if not dry_run:
                self.unlink(sweep)
        return sweep
