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

The fence: a replica that misses its heartbeats for the replica timeout (a
pause, a VM freeze, a partition) is counted dead by the others, whose
collections then ignore its lease rows, a Prune forgets them, and the blobs they
held may go. So once a writing lease has rows on a shared catalog, every change
that relies on it (more rows, a blob record, an image commit) first checks, in
its own writer transaction, that the rows are still there, and a commit also
that this replica's last heartbeat is within the timeout (:meth:`Leases.fence`);
if not, the lease has expired and the change commits nothing (docs/design.md §4).
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Self

from imagestore import errors
from imagestore.store.catalog import Catalog, CatalogWriter


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
        # Counted before the transaction, so that a failure to begin it leaves
        # the count matching what the lease holds (its release subtracts them).
        with self.lock:
            self._protected.update(digests)
        with self._catalog.transaction(bookkeeping=True) as db:
            if self._catalog.shared:
                # no new row for an expired lease: it would protect again digests
                # whose blobs may have been collected meanwhile
                self.fence(db, lease)
                db.add_lease(self._replica_id, lease.id, digests)
        if self._catalog.shared:
            lease.has_rows = True

    def fence(self, db: CatalogWriter, lease: Lease, *, timeout: float | None = None) -> None:
        """Raise LeaseExpired inside the writer transaction ``db`` that is
        about to rely on ``lease`` if the lease has expired: its rows are gone
        (another replica forgot this one), or, given the replica ``timeout``
        (seconds), this replica's last heartbeat is older than that (the others
        may count it dead and ignore the rows). A lease without rows yet has
        nothing to check."""
        if not lease.has_rows:
            return
        heard_within = None if timeout is None else int(timeout * 1e9)
        if db.holds_lease(self._replica_id, lease.id, heard_within=heard_within):
            return
        raise errors.LeaseExpired(
            f"lease {lease.id} of replica {self._replica_id} has expired: the other replicas"
            " stopped hearing from this one for longer than --replica-timeout and may have"
            " collected the blobs it held; nothing was committed, try again",
            metadata={"replica": self._replica_id, "lease": str(lease.id)},
        )

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
        #: digests whose adding has returned: protected until the lease ends
        self._settled: set[str] = set()
        self.added: set[str] = set()
        self.released = False
        #: rows were (or may have been) written for it
        self.recorded = False
        #: its rows were committed (a shared catalog only): from then on every
        #: change relying on it checks that they are still there (the fence)
        self.has_rows = False

    def add(self, *digests: str) -> None:
        """Protect more digests until the lease ends (for a writing lease on a
        shared catalog, a row each). A digest it protects already is skipped:
        a pull leases each layer before looking and again as it stores it, and
        the second add would only wait for the catalog's writer."""
        digests = tuple(digest for digest in digests if digest not in self._settled)
        if not digests:
            return
        self._held.extend(digests)
        self.recorded = self.recorded or not self.reading
        self._leases._add(self, digests)
        self._settled.update(digests)  # only now: a concurrent add of one still waits

    def release(self) -> None:
        if not self.released:
            self.released = True
            try:
                self._leases._release(self, self._held)
            finally:
                self._held.clear()
                self._settled.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
