"""Leases: the digests an operation will reference or read, protected from GC.

An operation takes a lease on a digest *before* it checks whether the blob
exists, so garbage collection either sees the lease or has already finished
deleting (and the operation then finds the blob missing). The collector holds
``Leases.lock`` while it decides and deletes; ``Lease.add`` takes it too.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Self


class Leases:
    """All live leases of one store."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._protected: Counter[str] = Counter()
        self._ids = itertools.count(1)

    def new(self) -> Lease:
        return Lease(self, next(self._ids))

    def protected(self) -> set[str]:
        """Digests some live lease holds (call with ``lock`` held for a stable answer)."""
        with self.lock:
            return set(self._protected)

    def _add(self, digests: Iterable[str]) -> None:
        with self.lock:
            self._protected.update(digests)

    def _release(self, digests: Iterable[str]) -> None:
        with self.lock:
            self._protected.subtract(digests)
            self._protected += Counter()  # drop zero counts


class Lease:
    """One operation's lease. ``added`` collects blobs it wrote, for clean-up."""

    def __init__(self, leases: Leases, lease_id: int) -> None:
        self.id = lease_id
        self._leases = leases
        self._held: list[str] = []
        self.added: set[str] = set()
        self.released = False

    def add(self, *digests: str) -> None:
        """Protect more digests until the lease ends."""
        self._leases._add(digests)
        self._held.extend(digests)

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._leases._release(self._held)
            self._held.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
