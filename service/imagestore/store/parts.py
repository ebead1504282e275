"""The parts one store is made of, opened together and shared by its modules.

Callers outside ``store/`` use :class:`~imagestore.store.store.Store` only;
the store's own modules (content, images, names, listing, prune, check) work
on these parts.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from imagestore import errors
from imagestore.store.blobs import DEFAULT_UPLOAD_TIMEOUT, BlobStore
from imagestore.store.catalog import Catalog
from imagestore.store.gc import Collector
from imagestore.store.leases import Leases
from imagestore.store.lock import Gate, RootLock
from imagestore.store.replicas import (
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_REPLICA_TIMEOUT,
    Replica,
    replica_id,
)
from imagestore.store.sqlite import SqliteCatalog

#: the store root's mode: the owner's alone
ROOT_MODE = 0o700

#: opens the catalog of a store root
CatalogFactory = Callable[[Path], Catalog]

log = logging.getLogger("imagestore.store")


def sqlite_catalog(root: Path) -> Catalog:
    """The embedded default: SQLite at ``<root>/catalog.db``."""
    return SqliteCatalog(root / "catalog.db")


def postgres_catalog(url: str) -> CatalogFactory:
    """A PostgreSQL database (``postgresql://…``), the same whatever the root."""

    def opener(root: Path) -> Catalog:
        # Imported here: a store on SQLite never loads the PostgreSQL driver.
        from imagestore.store.postgres import PostgresCatalog

        return PostgresCatalog(url)

    return opener


#: the URL schemes --catalog takes for PostgreSQL (libpq's)
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def catalog_factory(location: str | None) -> CatalogFactory:
    """What ``--catalog`` names: nothing (the SQLite file in the root) or a
    PostgreSQL URL; anything else is OptionInvalid."""
    if not location:
        return sqlite_catalog
    if location.startswith(POSTGRES_SCHEMES):
        return postgres_catalog(location)
    raise errors.OptionInvalid(
        "--catalog takes a PostgreSQL URL (postgresql://…); leave it unset for the"
        " SQLite catalog in the root",
        metadata={"option": "catalog"},
    )


@dataclass(eq=False)
class Parts:
    """One open store root: its lock, blob files, catalog, leases and collector."""

    root: Path
    max_layer_size: int
    lock: RootLock
    #: this process's replica ID (``<root>/replica-id``)
    replica_id: str
    blobs: BlobStore
    catalog: Catalog
    leases: Leases
    collector: Collector
    #: this process's heartbeat, and who else is alive
    replica: Replica
    #: one check at a time in this process (the catalog's singleton: on every replica)
    check_gate: Gate = field(default_factory=Gate)

    @classmethod
    def open(
        cls,
        root: Path,
        catalog: CatalogFactory,
        max_layer_size: int,
        blob_dir: Path | None = None,
        *,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        replica_timeout: float = DEFAULT_REPLICA_TIMEOUT,
        upload_timeout: float = DEFAULT_UPLOAD_TIMEOUT,
    ) -> Parts:
        """Make the root private, take its lock, open the blob files (in
        ``blob_dir``, default ``<root>/blobs``) and the catalog."""
        _make_private(root)
        lock = RootLock(root)
        try:
            replica = replica_id(root)
            opened = catalog(root)
            try:
                if blob_dir is not None and opened.kind == "sqlite":
                    # One process owns a SQLite catalog: a blob directory shared
                    # with another store would lose blobs to its collector.
                    raise errors.OptionInvalid(
                        "--blob-dir needs a PostgreSQL --catalog: with the SQLite catalog"
                        " the blob files stay in the root",
                        metadata={"option": "blob-dir"},
                    )
                blobs = BlobStore(blob_dir or root / "blobs", replica, upload_timeout)
                with opened.reading() as db:
                    store_id, recorded = db.store_id(), db.blob_count()
                blobs.bind(store_id, recorded, partial(_claim_blob_dir, opened))
                leases = Leases(opened, replica)
                heartbeat = Replica(
                    replica,
                    opened,
                    leases.protected,
                    shared=opened.kind != "sqlite",
                    interval=heartbeat_interval,
                    timeout=replica_timeout,
                )
                heartbeat.start()
            except BaseException:
                opened.close()
                raise
        except BaseException:
            lock.release()
            raise
        collector = Collector(blobs, opened, leases, heartbeat)
        return cls(root, max_layer_size, lock, replica, blobs, opened, leases, collector, heartbeat)

    def live_replicas(self) -> set[str]:
        """The IDs of the replicas alive now (this one included)."""
        with self.catalog.reading() as db:
            return set(self.replica.live(db))

    def close(self) -> None:
        try:
            self.replica.stop()
        finally:
            self.catalog.close()
        self.lock.release()


def _claim_blob_dir(catalog: Catalog, nonce: str) -> str:
    with catalog.transaction(bookkeeping=True) as writer:
        return writer.claim_blob_dir(nonce)


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
        raise errors.StoreRootUnsafe(
            f"store root {root} is mode {mode:04o} and cannot be made private (0700):"
            " make it this user's and 0700, or choose another root",
            metadata={"root": str(root)},
        ) from None
    log.warning("store root %s was mode %04o; made it %04o", root, mode, ROOT_MODE)
