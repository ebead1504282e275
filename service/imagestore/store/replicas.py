"""Replicas: the server processes that share one catalog and one blob directory.

Each store root names its replica with a stable random ID (``<root>/replica-id``,
written once). Ingest files carry it (``blobs.py``), lease rows and the
replica's heartbeat row are keyed by it (docs/design.md §4).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from imagestore import errors
from imagestore.store.catalog import Catalog, CatalogReader, CatalogWriter
from imagestore.store.records import ReplicaRow

#: the file in a store root that holds its replica ID
REPLICA_ID_FILE = "replica-id"


def replica_id(root: Path) -> str:
    """The root's replica ID, created (random, 32 hex digits) on first use."""
    path = root / REPLICA_ID_FILE
    try:
        found = path.read_text().strip()
    except FileNotFoundError:
        found = ""
    if len(found) == 32 and all(c in "0123456789abcdef" for c in found):
        return found
    new = secrets.token_hex(16)
    temporary = root / f".{REPLICA_ID_FILE}.{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"{new}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    return new


#: seconds between two heartbeats of a replica
DEFAULT_HEARTBEAT_INTERVAL = 2.0
#: seconds without a heartbeat after which a replica counts as dead: its leases
#: no longer protect anything and its ingest files are stale
DEFAULT_REPLICA_TIMEOUT = 60.0

#: seconds a collection waits for the others' heartbeats beyond two intervals:
#: room for a busy machine, where a heartbeat's transaction may take a while
AWAIT_SLACK = 2.0

log = logging.getLogger("imagestore.store")


class Replica:
    """This process as one replica of a catalog: its heartbeat row, kept fresh by
    a thread when the catalog is ``shared``, publishing ``reading()`` (the read
    set) and the collector epoch it has seen."""

    def __init__(
        self,
        replica_id: str,
        catalog: Catalog,
        reading: Callable[[], Iterable[str]],
        *,
        shared: bool,
        interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        timeout: float = DEFAULT_REPLICA_TIMEOUT,
    ) -> None:
        if not 0 < interval < timeout:
            raise errors.OptionInvalid(
                f"the heartbeat interval ({interval} s) must be positive and shorter than"
                f" --replica-timeout ({timeout} s)",
                metadata={"option": "replica-timeout"},
            )
        self.id = replica_id
        self.interval = interval
        self.timeout = timeout
        self._catalog = catalog
        self._reading = reading
        self._shared = shared
        self._stopped = threading.Event()
        #: set to heartbeat now (a collection elsewhere waits for it) or to stop
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        #: when this replica's heartbeats last started succeeding without a gap
        #: (time.monotonic()); None after a failed one
        self._steady_since: float | None = None

    def start(self) -> None:
        """Register, forgetting what a previous run under this ID left (nothing
        else runs under it while the root is locked); then heartbeat."""
        with self._catalog.transaction(bookkeeping=True) as db:
            db.forget_replica(self.id)
            db.heartbeat(self.id, db.collector_epoch(), ())
        self._steady_since = time.monotonic()
        if self._shared:
            self._catalog.watch_collections(lambda epoch: self._wake.set())
            self._thread = threading.Thread(
                target=self._run, name=f"heartbeat-{self.id[:8]}", daemon=True
            )
            self._thread.start()

    def stop(self, *, forget: bool = True) -> None:
        """Stop heartbeating; ``forget`` also removes the row and the leases (a
        clean stop: the others need not wait for the timeout)."""
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if forget:
            try:
                with self._catalog.transaction(bookkeeping=True) as db:
                    db.forget_replica(self.id)
            except errors.ImageStoreError as exc:
                log.warning("replica %s not unregistered: %s", self.id, exc)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                self.beat()
            except errors.ImageStoreError as exc:
                log.warning("heartbeat of replica %s failed: %s", self.id, exc)

    def beat(self) -> None:
        """Publish a heartbeat: the epoch is read first, the read set after it, so
        a heartbeat that has seen epoch n holds every read registered before
        collection n committed."""
        try:
            with self._catalog.transaction(bookkeeping=True) as db:
                epoch = db.collector_epoch()
                if self._shared:
                    self._forget_if_counted_dead(db)
                db.heartbeat(self.id, epoch, sorted(set(self._reading())))
        except BaseException:
            self._steady_since = None
            raise
        if self._steady_since is None:
            self._steady_since = time.monotonic()

    def _forget_if_counted_dead(self, db: CatalogWriter) -> None:
        """After a silence the others took for death (this replica's row gone or
        older than the timeout), drop its lease rows: they protected nothing
        meanwhile, and the commits relying on them are refused (the fence,
        leases.py); heartbeating registers it again."""
        mine = next((r for r in db.replicas() if r.id == self.id), None)
        if mine is not None and mine.last_seen >= db.clock() - int(self.timeout * 1e9):
            return
        log.warning(
            "replica %s was %s: its leases expired (their blobs may have been collected)"
            " and the operations that held them will fail; registering again",
            self.id,
            "forgotten by another replica"
            if mine is None
            else f"not heard from for over {self.timeout:g} s",
        )
        db.forget_replica(self.id)

    def live(self, db: CatalogReader) -> dict[str, ReplicaRow]:
        """The replicas heard from within the timeout (this one always).

        Until this replica's own heartbeats have gone through for a whole
        timeout, every registered replica counts as alive: the others' old
        heartbeats may be an outage of the catalog that stopped everyone's
        (this one's too), not their death."""
        rows = db.replicas()
        steady = self._steady_since
        if steady is None or time.monotonic() - steady < self.timeout:
            return {r.id: r for r in rows}
        cutoff = db.clock() - int(self.timeout * 1e9)
        return {r.id: r for r in rows if r.last_seen >= cutoff or r.id == self.id}

    def await_epoch(self, epoch: int) -> bool:
        """Wait until every live replica has heartbeaten after collection ``epoch``
        committed; False when one has not within two heartbeat intervals and
        AWAIT_SLACK (it heard of the collection at once unless it is hung or
        cut off: the files stay, as orphans, for a later collection) or this
        replica stopped meanwhile."""
        self.beat()
        deadline = time.monotonic() + 2 * self.interval + AWAIT_SLACK
        pause = 0.02  # the others heartbeat as soon as they hear of the collection
        while True:
            with self._catalog.reading() as db:
                behind = [r.id for r in self.live(db).values() if r.seen_epoch < epoch]
            if not behind:
                return True
            if time.monotonic() >= deadline:
                log.info(
                    "collection %d leaves its files for a later one: replica %s has not"
                    " heartbeaten since",
                    epoch,
                    ", ".join(sorted(behind)),
                )
                return False
            if self._stopped.wait(pause):
                return False
            pause = min(pause * 2, self.interval / 4)
