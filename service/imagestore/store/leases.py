"""Leases: the digests an operation will reference or read, protected from GC.

An operation takes a lease on a digest *before* it checks whether the blob
exists, so garbage collection either sees the lease or has already finished
deleting (and the operation then finds the blob missing).

A writing lease (pull, load, an ingest) is taken inside a catalog transaction
of its own before ``add`` returns: the collector decides inside a catalog
transaction too, and transactions take turns, so it either sees the lease or
has committed its deletions first. On a shared catalog (PostgreSQL) the lease
is a row per digest under its replica's ID, which every replica's collector
reads; on SQLite one process owns the catalog, the collector reads this
process's leases from memory, and the transaction writes nothing (no fsync per
lease). A reading lease (Save, Push, ReadBlob) takes no transaction: its
digests join this replica's read set in memory, which the heartbeat publishes
(docs/design.md §4: a collector deletes the rows, waits for every live
replica's next heartbeat, and unlinks only the files no published read set
holds). Every digest of every lease is in the read set.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Self

from imagestore.store.catalog import Catalog


class Leases:
    """All live leases of one replica."""

    def __init__(self, catalog: Catalog, replica_id: str) -> None:
        self.lock = threading.RLock()
        self._catalog = catalog
        self._replica_id = replica_id
        self._protected: Counter[str] = Counter()
        self._ids = itertools.count(1)

    def new(self, *, reading: bool = False) -> Lease:
        """A lease; a ``reading`` one protects files for reads and writes no row."""
        return Lease(self, next(self._ids), reading)

    def protected(self) -> set[str]:
        """Digests some live lease of this replica holds: its read set."""
        with self.lock:
            return set(self._protected)

    def _add(self, lease: Lease, digests: Iterable[str]) -> None:
        digests = list(digests)
        if lease.reading or not digests:
            with self.lock:
                self._protected.update(digests)
            return
        with self._catalog.transaction(bookkeeping=True) as db:
            with self.lock:
                self._protected.update(digests)
            if self._catalog.shared:
                db.add_lease(self._replica_id, lease.id, digests)

    def _release(self, lease: Lease, digests: Iterable[str]) -> None:
        try:
            if lease.recorded and self._catalog.shared:
                with self._catalog.transaction(bookkeeping=True) as db:
                    db.release_lease(self._replica_id, lease.id)
        finally:
            with self.lock:
                self._protected.subtract(digests)
                self._protected += Counter()  # drop zero counts


class Lease:
    """One operation's lease. ``added`` collects blobs it wrote, for clean-up."""

    def __init__(self, leases: Leases, lease_id: int, reading: bool = False) -> None:
        self.id = lease_id
        self.reading = reading
        self._leases = leases
        self._held: list[str] = []
        self.added: set[str] = set()
        self.released = False
        #: rows were (or may have been) written for it
        self.recorded = False

    def add(self, *digests: str) -> None:
        """Protect more digests until the lease ends (for a writing lease on a
        shared catalog, a row each)."""
        self._held.extend(digests)
        self.recorded = self.recorded or not self.reading
        self._leases._add(self, digests)

    def release(self) -> None:
        if not self.released:
            self.released = True
            try:
                self._leases._release(self, self._held)
            finally:
                self._held.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
