"""Garbage collection: mark from the catalog and the leases, sweep the rest.

Live = every blob a stored manifest needs (its own blob, config, layers), every
named index, every digest this replica's leases hold, and on a shared catalog
every digest a live replica's lease rows hold. The collector
decides and deletes rows inside one catalog transaction (transactions take
turns, on every replica: no lease or commit lands halfway through), which also
bumps the collector epoch. Files go only after it: once every live replica has
heartbeaten past that epoch (its published read set then holds every read that
could have found the deleted rows), in a second transaction that unlinks the
files no lease row, blob row or read set claims; the others stay, as orphans,
for a later collection. A crash in between leaves orphan files, never a row
without its file: an orphan does not count as stored, so a pull or load writes
it again; the next prune removes it, and so does a start-up once it is old.
See docs/design.md §4.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from imagestore.store.blobs import BlobStore
from imagestore.store.catalog import Catalog, CatalogReader, CatalogWriter
from imagestore.store.leases import Leases
from imagestore.store.replicas import Replica


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

    def __init__(
        self, blobs: BlobStore, catalog: Catalog, leases: Leases, replica: Replica
    ) -> None:
        self.blobs = blobs
        self.catalog = catalog
        self.leases = leases
        self.replica = replica
        self.lock = threading.RLock()

    def plan(self, db: CatalogReader, only: set[str] | None = None) -> Sweep:
        """What is unreachable now (inside the transaction that applies it)."""
        unnamed = db.unnamed_indexes()
        indexes = tuple(i for i in unnamed if only is None or i in only)
        # This replica's leases are in memory (on SQLite, only there).
        protected = db.leased(self.replica.live(db)) | self.leases.protected()
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
    def apply(db: CatalogWriter, sweep: Sweep) -> int:
        """Remove the swept rows; returns the collector epoch to pass to
        :meth:`unlink` once this transaction is durable (0: no blob to unlink)."""
        for index in sweep.indexes:
            db.delete_index(index)
        db.delete_blobs(sweep.blobs)
        return db.bump_collector_epoch() if sweep.blobs else 0

    def unlink(self, sweep: Sweep, epoch: int) -> list[str]:
        """Unlink the swept files that nothing claims once every live replica has
        heartbeaten past ``epoch`` (call with no lock held: it waits); returns
        the digests unlinked."""
        if not sweep.blobs or not self.replica.await_epoch(epoch):
            return []
        unlinked = []
        with self.catalog.transaction(bookkeeping=True) as db:
            live = self.replica.live(db)
            claimed = db.leased(live) | set(db.blob_sizes(sweep.blobs))
            claimed.update(digest for row in live.values() for digest in row.reading)
            claimed |= self.leases.protected()
            for digest in sweep.blobs:
                if digest not in claimed:
                    self.blobs.delete(digest)
                    unlinked.append(digest)
        return unlinked

    def collect(self, candidates: Iterable[str] | None = None, *, dry_run: bool = False) -> Sweep:
        """Delete unreachable blobs (only among ``candidates`` when given)."""
        only = None if candidates is None else set(candidates)
        with self.lock, self.catalog.transaction(rollback=dry_run) as db:
            sweep = self.plan(db, only)
            epoch = self.apply(db, sweep)
        if not dry_run:
            self.unlink(sweep, epoch)
        return sweep
