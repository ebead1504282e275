"""The SQLite catalog (WAL, synchronous=FULL) at ``<root>/catalog.db``.

One writer connection, serialised by a lock, runs every transaction (BEGIN
IMMEDIATE … COMMIT). Reads take a connection of their own from a small pool,
so under WAL a read sees the last committed snapshot and never waits for a
write or for garbage collection (docs/design.md §4). The schema is versioned
with ``PRAGMA user_version`` and migrated forward on open. The catalog files
are the owner's alone (0600).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from imagestore import errors
from imagestore.store.catalog import MAX_SOURCES_PER_BLOB
from imagestore.store.sql import SqlReader, SqlWriter

#: idle read connections kept for reuse (more are opened when more threads read)
IDLE_READERS = 8
#: ms a statement waits for a lock SQLite holds briefly (a checkpoint, another process)
BUSY_TIMEOUT_MS = 30_000

# Each entry migrates the schema from version i to i + 1.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE blobs (
        digest            TEXT PRIMARY KEY,
        size              INTEGER NOT NULL,
        media_type        TEXT NOT NULL,
        diff_id           TEXT,
        uncompressed_size INTEGER,
        stored_at         INTEGER NOT NULL
    );
    CREATE INDEX blobs_by_diff_id ON blobs(diff_id) WHERE diff_id IS NOT NULL;

    CREATE TABLE images (
        id                TEXT PRIMARY KEY,   -- config digest
        created           INTEGER,            -- config "created", ns since epoch
        stored_at         INTEGER NOT NULL,   -- when first stored here, ns
        size              INTEGER NOT NULL,   -- sum of uncompressed layer sizes
        content_size      INTEGER NOT NULL,   -- its distinct blobs' bytes on disk
        os                TEXT NOT NULL,
        architecture      TEXT NOT NULL,
        variant           TEXT NOT NULL,
        labels            TEXT NOT NULL,      -- JSON object
        last_tag_time     INTEGER
    );
    CREATE INDEX images_newest_first ON images(COALESCE(created, 0) DESC, id DESC);

    CREATE TABLE targets (
        digest            TEXT PRIMARY KEY,   -- a manifest or an index blob
        media_type        TEXT NOT NULL,
        kind              TEXT NOT NULL CHECK (kind IN ('manifest', 'index')),
        image_id          TEXT REFERENCES images(id),  -- manifests only
        stored_at         INTEGER NOT NULL
    );
    CREATE INDEX targets_by_image ON targets(image_id);

    -- manifest -> its config (position 0) and layers (1..n), base first
    CREATE TABLE manifest_blobs (
        manifest_digest   TEXT NOT NULL REFERENCES targets(digest),
        position          INTEGER NOT NULL,
        blob_digest       TEXT NOT NULL,
        media_type        TEXT NOT NULL,
        size              INTEGER NOT NULL,
        PRIMARY KEY (manifest_digest, position)
    );
    CREATE INDEX manifest_blobs_by_blob ON manifest_blobs(blob_digest);

    -- index -> child manifests, present locally or not
    CREATE TABLE index_children (
        index_digest      TEXT NOT NULL REFERENCES targets(digest),
        position          INTEGER NOT NULL,
        child_digest      TEXT NOT NULL,
        media_type        TEXT NOT NULL,
        size              INTEGER NOT NULL,
        platform          TEXT NOT NULL,      -- os/arch[/variant], "" if none
        PRIMARY KEY (index_digest, position)
    );
    CREATE INDEX index_children_by_child ON index_children(child_digest);

    CREATE TABLE names (
        name              TEXT PRIMARY KEY,   -- canonical: repo:tag or repo@digest
        repository        TEXT NOT NULL,
        tag               TEXT,
        digest            TEXT,
        target            TEXT NOT NULL REFERENCES targets(digest),
        created_at        INTEGER NOT NULL,
        updated_at        INTEGER NOT NULL
    );
    CREATE INDEX names_by_target ON names(target);
    """,
    """
    -- where a blob was pulled from or pushed to: push mounts from these
    CREATE TABLE blob_sources (
        seq               INTEGER PRIMARY KEY AUTOINCREMENT,  -- larger: recorded later
        digest            TEXT NOT NULL REFERENCES blobs(digest) ON DELETE CASCADE,
        registry          TEXT NOT NULL,      -- a reference's domain, e.g. docker.io
        repository        TEXT NOT NULL,      -- the path on it, e.g. library/alpine
        recorded_at       INTEGER NOT NULL,
        UNIQUE (digest, registry, repository)
    );
    CREATE INDEX blob_sources_newest ON blob_sources(digest, registry, seq);

    -- blob files Check found damaged: the next pull or load of them writes them again
    CREATE TABLE damaged_blobs (
        digest            TEXT PRIMARY KEY,
        problem           TEXT NOT NULL,      -- Check's kind, e.g. corrupt-blob
        found_at          INTEGER NOT NULL
    );
    """,
    """
    -- the images a name pointing at a target reaches: a manifest's own image, and
    -- the images of an index's stored children (the one join names and images share)
    CREATE VIEW target_images (target, image_id) AS
        SELECT digest, image_id FROM targets WHERE kind = 'manifest'
        UNION ALL
        SELECT c.index_digest, t.image_id FROM index_children c
        JOIN targets t ON t.digest = c.child_digest AND t.kind = 'manifest';

    -- every image's names, through the targets they point at
    CREATE VIEW image_names AS
        SELECT ti.image_id, n.name, n.repository, n.tag, n.digest, n.target,
               n.created_at, n.updated_at
        FROM names n JOIN target_images ti ON ti.target = n.target;
    """,
    """
    -- the events journal: each change, written in the transaction that makes it
    CREATE TABLE events (
        cursor            INTEGER PRIMARY KEY,  -- from events_state: commit order, no gaps
        time              INTEGER NOT NULL,     -- commit time, ns since epoch
        kind              TEXT NOT NULL,        -- tag, untag, delete, pull, push, load, prune
        image_id          TEXT NOT NULL,        -- "" for none
        name              TEXT NOT NULL,        -- canonical, "" for none
        target            TEXT NOT NULL,        -- the manifest or index named, "" for none
        labels            TEXT NOT NULL,        -- JSON object: the image's config labels
        remote            TEXT NOT NULL,        -- a push's host/path
        reclaimed         INTEGER NOT NULL      -- a prune's bytes freed
    );

    -- the last cursor given, one row: read and bumped by each transaction that
    -- writes events, whose lock on it orders them (no AUTOINCREMENT: portable)
    CREATE TABLE events_state (
        id                INTEGER PRIMARY KEY CHECK (id = 0),
        last_cursor       INTEGER NOT NULL
    );
    INSERT INTO events_state (id, last_cursor) VALUES (0, 0);
    """,
    """
    -- replicas sharing the catalog: each one's last heartbeat (docs/design.md §4)
    CREATE TABLE replicas (
        id                TEXT PRIMARY KEY,     -- <root>/replica-id
        last_seen         INTEGER NOT NULL,     -- the catalog's clock, ns since epoch
        seen_epoch        INTEGER NOT NULL,     -- the collector epoch it had seen then
        reading           TEXT NOT NULL         -- JSON list: the digests it was reading
    );

    -- what each live operation protects from garbage collection
    CREATE TABLE leases (
        replica           TEXT NOT NULL,
        lease             INTEGER NOT NULL,     -- the lease's number in its replica
        digest            TEXT NOT NULL,
        PRIMARY KEY (replica, lease, digest)
    );
    CREATE INDEX leases_by_digest ON leases(digest);

    -- collections that deleted blob rows, counted: a heartbeat that has seen
    -- epoch n published its read set after the collection n committed
    CREATE TABLE collector_state (
        id                INTEGER PRIMARY KEY CHECK (id = 0),
        epoch             INTEGER NOT NULL
    );
    INSERT INTO collector_state (id, epoch) VALUES (0, 0);
    """,
    """
    -- which store this catalog is, and which blob directory is its own: the
    -- directory's store-id file names both, so another one is refused
    CREATE TABLE store_identity (
        id                INTEGER PRIMARY KEY CHECK (id = 0),
        store_id          TEXT NOT NULL,        -- 32 random hex digits
        blob_dir          TEXT                  -- the first marked directory's nonce
    );
    INSERT INTO store_identity (id, store_id) VALUES (0, lower(hex(randomblob(16))));
    """,
)


#: host parameters per statement when a query takes a set of digests
_CHUNK = 500


def _chunks(digests: Iterable[str]) -> Iterator[list[str]]:
    wanted = sorted(set(digests))
    for start in range(0, len(wanted), _CHUNK):
        yield wanted[start : start + _CHUNK]


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA foreign_keys=ON")
    return db


class SqliteCatalog:
    """The catalog in one SQLite file. Implements :class:`~imagestore.store.catalog.Catalog`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._write_lock = threading.Lock()
        self._singletons_lock = threading.Lock()
        self._singletons: dict[str, threading.Lock] = {}
        self._idle: list[sqlite3.Connection] = []
        self._idle_lock = threading.Lock()
        self._generation = 0
        _make_private(path)
        try:
            self._db = _connect(path)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise errors.CatalogCorrupt(f"catalog {path} cannot be opened: {exc}") from None

    def close(self) -> None:
        with self._write_lock, self._idle_lock:
            for reader in self._idle:
                reader.close()
            self._idle.clear()
            self._db.close()

    @property
    def schema_version(self) -> int:
        with self._write_lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @property
    def kind(self) -> str:
        return "sqlite"

    def _migrate(self) -> None:
        version = self.schema_version
        if version > len(MIGRATIONS):
            raise errors.CatalogTooNew(
                f"catalog schema version {version} is newer than this imagestore"
                f" ({len(MIGRATIONS)}); upgrade imagestore",
                metadata={"version": str(version), "supported": str(len(MIGRATIONS))},
            )
        for number in range(version, len(MIGRATIONS)):
            with self.transaction() as writer:
                for statement in _statements(MIGRATIONS[number]):
                    writer.db.execute(statement)
                writer.db.execute(f"PRAGMA user_version = {number + 1}")

    @contextmanager
    def transaction(
        self, *, rollback: bool = False, bookkeeping: bool = False
    ) -> Iterator[SqliteWriter]:
        """One atomic, durable change (BEGIN IMMEDIATE … COMMIT), one at a time."""
        with self._write_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield SqliteWriter(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("ROLLBACK" if rollback else "COMMIT")
            finally:
                # Counted once the change is visible (or undone), however it
                # ended: an answer read after seeing the new number has the change.
                if not bookkeeping:
                    self._generation += 1

    @contextmanager
    def singleton(self, name: str) -> Iterator[bool]:
        """A lock of this process (it alone opens the catalog: the root lock)."""
        with self._singletons_lock:
            lock = self._singletons.setdefault(name, threading.Lock())
        held = lock.acquire(blocking=False)
        try:
            yield held
        finally:
            if held:
                lock.release()

    @property
    def shared(self) -> bool:
        return False

    @property
    def generation(self) -> int:
        # This process alone writes the file (the root lock), so every change is
        # one of its own transactions.
        return self._generation

    def confirm_generation(self) -> int:
        return self._generation

    async def confirm_generation_async(self) -> int:
        return self._generation

    def watch_changes(self, listener: Callable[[int], None]) -> None:
        """Never called: nobody else writes the file."""

    def watch_collections(self, listener: Callable[[int], None]) -> None:
        """Never called: this process is the only replica."""

    @contextmanager
    def reading(self) -> Iterator[SqliteReader]:
        """One snapshot on a read connection of its own (WAL: no writer blocks it)."""
        with self._idle_lock:
            db = self._idle.pop() if self._idle else None
        if db is None:
            try:
                db = _connect(self.path)
                db.execute("PRAGMA query_only=ON")
            except sqlite3.DatabaseError as exc:
                raise errors.CatalogCorrupt(f"catalog {self.path} cannot be read: {exc}") from None
        try:
            db.execute("BEGIN")
            try:
                yield SqliteReader(db)
            finally:
                db.execute("COMMIT")
        except BaseException:
            db.close()  # its state is unknown: do not reuse it
            raise
        with self._idle_lock:
            if len(self._idle) < IDLE_READERS:
                self._idle.append(db)
                return
        db.close()


class SqliteReader(SqlReader):
    """Queries on one connection inside one snapshot (the shared ones: store/sql.py)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def _execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.db.execute(sql, args)

    # Sets of digests go in chunks of host parameters (SQLite has no arrays).

    def blob_sizes(self, digests: Iterable[str]) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for chunk in _chunks(digests):
            marks = ",".join("?" * len(chunk))
            sizes.update(
                self.db.execute(f"SELECT digest, size FROM blobs WHERE digest IN ({marks})", chunk)
            )
        return sizes

    def referenced_among(self, digests: Iterable[str]) -> set[str]:
        live: set[str] = set()
        for chunk in _chunks(digests):
            marks = ",".join("?" * len(chunk))
            live.update(
                row[0]
                for row in self.db.execute(
                    f"SELECT blob_digest FROM manifest_blobs WHERE blob_digest IN ({marks})"
                    f" UNION SELECT digest FROM targets WHERE digest IN ({marks})"
                    "   AND (kind = 'manifest' OR digest IN (SELECT target FROM names))",
                    chunk + chunk,
                )
            )
        return live

    def leased(self, replicas: Iterable[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(replicas):
            marks = ", ".join("?" * len(chunk))
            found.update(
                row[0]
                for row in self.db.execute(
                    f"SELECT DISTINCT digest FROM leases WHERE replica IN ({marks})", chunk
                )
            )
        return found

    def clock(self) -> int:
        return time.time_ns()


class SqliteWriter(SqliteReader, SqlWriter):
    """Changes on the writer connection, inside its transaction."""

    _INSERT_NEW = "INSERT OR IGNORE INTO {}"

    def _executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.db.executemany(sql, rows)

    def delete_blobs(self, digests: Iterable[str]) -> None:
        rows = [(d,) for d in digests]
        self.db.executemany("DELETE FROM blob_sources WHERE digest = ?", rows)
        self.db.executemany("DELETE FROM damaged_blobs WHERE digest = ?", rows)
        self.db.executemany("DELETE FROM blobs WHERE digest = ?", rows)

    def clear_damaged(self, digests: Iterable[str]) -> None:
        self.db.executemany("DELETE FROM damaged_blobs WHERE digest = ?", ((d,) for d in digests))

    def record_blob_sources(
        self, digests: Iterable[str], registry: str, repository: str, when: int
    ) -> None:
        for digest in dict.fromkeys(digests):
            self.db.execute(  # delete and insert again: the new row sorts as the newest
                "DELETE FROM blob_sources WHERE digest = ? AND registry = ? AND repository = ?",
                (digest, registry, repository),
            )
            self.db.execute(
                "INSERT INTO blob_sources (digest, registry, repository, recorded_at)"
                " SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM blobs WHERE digest = ?1)",
                (digest, registry, repository, when),
            )
            self.db.execute(
                "DELETE FROM blob_sources WHERE digest = ?1 AND registry = ?2 AND seq NOT IN ("
                "  SELECT seq FROM blob_sources WHERE digest = ?1 AND registry = ?2"
                "  ORDER BY seq DESC LIMIT ?3)",
                (digest, registry, MAX_SOURCES_PER_BLOB),
            )

    def set_last_tag_time(self, image_ids: Iterable[str], when: int) -> None:
        self.db.executemany(
            "UPDATE images SET last_tag_time = ? WHERE id = ?", ((when, i) for i in image_ids)
        )

    def delete_image(self, image_id: str) -> list[str]:
        manifests = [t.digest for t in self.manifests_of_image(image_id)]
        rows = [(m,) for m in manifests]
        self.db.executemany("DELETE FROM manifest_blobs WHERE manifest_digest = ?", rows)
        self.db.executemany("DELETE FROM targets WHERE digest = ?", rows)
        self.db.execute("DELETE FROM images WHERE id = ?", (image_id,))
        return manifests

    # ---- replicas and leases -------------------------------------------------

    def holds_lease(self, replica: str, lease: int, *, heard_within: int | None = None) -> bool:
        # The store writes lease rows on a shared catalog only: on SQLite this
        # answers for the rows a caller wrote itself.
        if (
            self.db.execute(
                "SELECT 1 FROM leases WHERE replica = ? AND lease = ? LIMIT 1", (replica, lease)
            ).fetchone()
            is None
        ):
            return False
        if heard_within is None:
            return True
        seen = self.db.execute(
            "SELECT 1 FROM replicas WHERE id = ? AND last_seen >= ?",
            (replica, self.clock() - heard_within),
        ).fetchone()
        return seen is not None

    def bump_collector_epoch(self) -> int:
        self.db.execute("UPDATE collector_state SET epoch = epoch + 1 WHERE id = 0")
        return self.collector_epoch()


#: the catalog and its companions: SQLite gives the journal files the catalog's own mode
CATALOG_FILE_SUFFIXES = ("", "-wal", "-shm", "-journal")
#: the mode of the catalog files: the owner's alone (names and labels are private)
CATALOG_FILE_MODE = 0o600


def _make_private(path: Path) -> None:
    """Create the catalog 0600 before SQLite does (it would use 0644), and tighten
    an existing catalog and its journal files to 0600."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, CATALOG_FILE_MODE))
        for suffix in CATALOG_FILE_SUFFIXES:
            companion = path.with_name(path.name + suffix)
            try:
                if stat.S_IMODE(companion.stat().st_mode) != CATALOG_FILE_MODE:
                    companion.chmod(CATALOG_FILE_MODE)
            except FileNotFoundError:
                continue
    except OSError as exc:
        raise errors.IoError(f"catalog {path} cannot be opened: {exc.strerror}") from None


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit midway)."""
    code = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    return [statement.strip() for statement in code.split(";") if statement.strip()]
