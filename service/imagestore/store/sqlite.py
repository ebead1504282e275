"""The SQLite catalog (WAL, synchronous=FULL) at ``<root>/catalog.db``.

One writer connection, serialised by a lock, runs every transaction (BEGIN
IMMEDIATE … COMMIT). Reads take a connection of their own from a small pool,
so under WAL a read sees the last committed snapshot and never waits for a
write or for garbage collection (docs/design.md §4). The schema is versioned
with ``PRAGMA user_version`` and migrated forward on open. The catalog files
are the owner's alone (0600).
"""

from __future__ import annotations

import json
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


_BLOB_COLUMNS = "digest, size, media_type, diff_id, uncompressed_size, stored_at"
_IMAGE_COLUMNS = (
    "id, created, stored_at, size, content_size, os, architecture, variant, labels, last_tag_time"
)
_NAME_COLUMNS = "name, repository, tag, digest, target, created_at, updated_at"
_TARGET_COLUMNS = "digest, media_type, kind, image_id, stored_at"
_EVENT_COLUMNS = "kind, image_id, name, target, labels, remote, reclaimed, cursor, time"
#: host parameters per statement when a query takes a set of digests
_CHUNK = 500


def _image(row: tuple[Any, ...]) -> ImageRow:
    labels = row[8]
    return ImageRow(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        {} if labels == "{}" else json.loads(labels),
        row[9],
    )


def _event(row: tuple[Any, ...]) -> EventRow:
    labels = row[4]
    return EventRow(
        row[0],
        row[1],
        row[2],
        row[3],
        {} if labels == "{}" else json.loads(labels),
        row[5],
        row[6],
        row[7],
        row[8],
    )


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


class SqliteReader:
    """Queries on one connection inside one snapshot."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    # ---- blobs ---------------------------------------------------------------

    def blob(self, digest: str) -> BlobRow | None:
        row = self.db.execute(
            f"SELECT {_BLOB_COLUMNS} FROM blobs WHERE digest = ?", (digest,)
        ).fetchone()
        return None if row is None else BlobRow(*row)

    def blobs(self) -> list[BlobRow]:
        return [BlobRow(*row) for row in self.db.execute(f"SELECT {_BLOB_COLUMNS} FROM blobs")]

    def blob_sizes(self, digests: Iterable[str]) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for chunk in _chunks(digests):
            marks = ",".join("?" * len(chunk))
            sizes.update(
                self.db.execute(f"SELECT digest, size FROM blobs WHERE digest IN ({marks})", chunk)
            )
        return sizes

    def total_blob_bytes(self) -> int:
        return int(self.db.execute("SELECT COALESCE(SUM(size), 0) FROM blobs").fetchone()[0])

    def blob_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM blobs").fetchone()[0])

    def blob_by_diff_id(self, diff_id: str) -> BlobRow | None:
        row = self.db.execute(
            f"SELECT {_BLOB_COLUMNS} FROM blobs"
            " WHERE diff_id = ? AND digest != diff_id"
            "   AND digest NOT IN (SELECT digest FROM damaged_blobs)"
            " ORDER BY stored_at LIMIT 1",
            (diff_id,),
        ).fetchone()
        return None if row is None else BlobRow(*row)

    def is_damaged(self, digest: str) -> bool:
        found = self.db.execute(
            "SELECT 1 FROM damaged_blobs WHERE digest = ?", (digest,)
        ).fetchone()
        return found is not None

    def damaged(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT digest, problem FROM damaged_blobs"))

    def damage(self, digest: str) -> str | None:
        row = self.db.execute(
            "SELECT problem FROM damaged_blobs WHERE digest = ?", (digest,)
        ).fetchone()
        return None if row is None else str(row[0])

    def blob_sources(self, digest: str, registry: str) -> list[str]:
        return [
            row[0]
            for row in self.db.execute(
                "SELECT repository FROM blob_sources WHERE digest = ? AND registry = ?"
                " ORDER BY seq DESC",
                (digest, registry),
            )
        ]

    # ---- targets and images --------------------------------------------------

    def target(self, digest: str) -> TargetRow | None:
        row = self.db.execute(
            f"SELECT {_TARGET_COLUMNS} FROM targets WHERE digest = ?", (digest,)
        ).fetchone()
        return None if row is None else TargetRow(*row)

    def manifest_blobs(self, manifest_digest: str) -> list[ManifestBlob]:
        return [
            ManifestBlob(*row)
            for row in self.db.execute(
                "SELECT position, blob_digest, media_type, size FROM manifest_blobs"
                " WHERE manifest_digest = ? ORDER BY position",
                (manifest_digest,),
            )
        ]

    def index_children(self, index_digest: str) -> list[IndexChild]:
        return [
            IndexChild(*row)
            for row in self.db.execute(
                "SELECT position, child_digest, media_type, size, platform FROM index_children"
                " WHERE index_digest = ? ORDER BY position",
                (index_digest,),
            )
        ]

    def named_index_children(self, image_id: str | None = None) -> list[NamedIndexChild]:
        # Driven by the index rows (few), never by the names (one per image).
        indexes = "SELECT DISTINCT index_digest FROM index_children"
        arguments: tuple[str, ...] = ()
        if image_id is not None:
            indexes += (
                " WHERE child_digest IN"
                " (SELECT digest FROM targets WHERE image_id = ? AND kind = 'manifest')"
            )
            arguments = (image_id,)
        return [
            NamedIndexChild(row[0], row[1], row[2], row[3], IndexChild(*row[4:9]), row[9])
            for row in self.db.execute(
                f"WITH wanted(digest) AS ({indexes})"
                " SELECT n.name, n.target, t.media_type, COALESCE(b.size, 0),"
                " c.position, c.child_digest, c.media_type, c.size, c.platform, m.image_id"
                " FROM wanted w JOIN names n ON n.target = w.digest"
                " JOIN targets t ON t.digest = n.target AND t.kind = 'index'"
                " LEFT JOIN blobs b ON b.digest = n.target"
                " JOIN index_children c ON c.index_digest = n.target"
                " LEFT JOIN targets m ON m.digest = c.child_digest AND m.kind = 'manifest'"
                " ORDER BY n.name, c.position",
                arguments,
            )
        ]

    def image(self, image_id: str) -> ImageRow | None:
        row = self.db.execute(
            f"SELECT {_IMAGE_COLUMNS} FROM images WHERE id = ?", (image_id,)
        ).fetchone()
        return None if row is None else _image(row)

    def images(self, after: tuple[int, str] | None = None) -> Iterator[ImageRow]:
        order = "ORDER BY COALESCE(created, 0) DESC, id DESC"
        if after is None:
            cursor = self.db.execute(f"SELECT {_IMAGE_COLUMNS} FROM images {order}")
        else:
            cursor = self.db.execute(
                f"SELECT {_IMAGE_COLUMNS} FROM images WHERE (COALESCE(created, 0), id) < (?, ?)"
                f" {order}",
                after,
            )
        return map(_image, cursor)

    def images_by_prefix(self, hex_prefix: str) -> list[str]:
        low = "sha256:" + hex_prefix
        return [
            row[0]
            for row in self.db.execute(
                "SELECT id FROM images WHERE id >= ? AND id < ? ORDER BY id LIMIT 10",
                (low, low + "\x7f"),
            )
        ]

    def manifests_of_image(self, image_id: str) -> list[TargetRow]:
        return [
            TargetRow(*row)
            for row in self.db.execute(
                f"SELECT {_TARGET_COLUMNS} FROM targets"
                " WHERE image_id = ? ORDER BY stored_at DESC, digest",
                (image_id,),
            )
        ]

    def blobs_by_image(self) -> dict[str, set[str]]:
        owned: dict[str, set[str]] = {}
        for image_id, digest in self.db.execute(
            "SELECT t.image_id, mb.blob_digest FROM manifest_blobs mb"
            " JOIN targets t ON t.digest = mb.manifest_digest"
            " UNION ALL SELECT image_id, digest FROM targets WHERE kind = 'manifest'"
        ):
            owned.setdefault(image_id, set()).add(digest)
        return owned

    def image_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM images").fetchone()[0])

    def images_using_blob(self, digest: str, limit: int) -> tuple[list[str], int]:
        # The count is taken over every user before LIMIT cuts the list (one
        # row at least, so that a limit of 0 still learns the count).
        rows = self.db.execute(
            "WITH users(image_id) AS ("
            "   SELECT t.image_id FROM manifest_blobs mb"
            "   JOIN targets t ON t.digest = mb.manifest_digest WHERE mb.blob_digest = :digest"
            "   UNION SELECT image_id FROM target_images WHERE target = :digest"
            "     AND (target IN (SELECT digest FROM targets WHERE kind = 'manifest')"
            "          OR target IN (SELECT target FROM names)))"
            " SELECT image_id, COUNT(*) OVER () FROM users WHERE image_id IS NOT NULL"
            " ORDER BY image_id LIMIT :limit",
            {"digest": digest, "limit": max(limit, 1)},
        ).fetchall()
        if not rows:
            return [], 0
        return [row[0] for row in rows[:limit]], int(rows[0][1])

    def unnamed_indexes(self) -> list[str]:
        return [
            row[0]
            for row in self.db.execute(
                "SELECT digest FROM targets WHERE kind = 'index'"
                " AND digest NOT IN (SELECT target FROM names)"
            )
        ]

    # ---- names ---------------------------------------------------------------

    def name(self, name: str) -> NameRow | None:
        row = self.db.execute(
            f"SELECT {_NAME_COLUMNS} FROM names WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else NameRow(*row)

    def names(self) -> list[NameRow]:
        return [NameRow(*row) for row in self.db.execute(f"SELECT {_NAME_COLUMNS} FROM names")]

    def names_of_image(self, image_id: str) -> list[NameRow]:
        return [
            NameRow(*row)
            for row in self.db.execute(
                f"SELECT DISTINCT {_NAME_COLUMNS} FROM image_names WHERE image_id = ?"
                " ORDER BY name",
                (image_id,),
            )
        ]

    def names_by_image(self) -> dict[str, list[NameRow]]:
        result: dict[str, list[NameRow]] = {}
        for row in self.db.execute(f"SELECT DISTINCT image_id, {_NAME_COLUMNS} FROM image_names"):
            result.setdefault(row[0], []).append(NameRow(*row[1:]))
        return result

    def name_strings_by_image(self) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {}
        # An index may list one image twice: a name can come back; callers
        # (the image summary) keep each name once.
        for image_id, name in self.db.execute("SELECT image_id, name FROM image_names"):
            if image_id in result:
                result[image_id].append(name)
            else:
                result[image_id] = [name]
        return result

    def images_of_target(self, target: str) -> list[str]:
        return [
            row[0]
            for row in self.db.execute(
                "SELECT DISTINCT image_id FROM target_images WHERE target = ?", (target,)
            )
        ]

    # ---- repositories: ranges of the names' key (see catalog.py) -------------

    def repository_tags(self, repository: str, after: str, limit: int) -> list[str]:
        return [
            row[0]
            for row in self.db.execute(
                "SELECT tag FROM names WHERE name > ? AND name < ? ORDER BY name LIMIT ?",
                (f"{repository}:{after}", repository + ";", limit),
            )
        ]

    def repositories(self, after: str, limit: int) -> list[str]:
        if limit <= 0:
            return []
        # A skip scan: each step is one lookup of the first name past the
        # previous repository's names (a loose index scan, in one statement).
        rows = self.db.execute(
            "WITH RECURSIVE found(repository, n) AS ("
            "   SELECT (SELECT repository FROM names WHERE name >= :start"
            "           ORDER BY name LIMIT 1), 1"
            "   UNION ALL"
            "   SELECT (SELECT repository FROM names WHERE name >= found.repository || 'A'"
            "           ORDER BY name LIMIT 1), n + 1"
            "   FROM found WHERE found.repository IS NOT NULL AND n < :limit)"
            " SELECT repository FROM found WHERE repository IS NOT NULL ORDER BY n",
            {"start": after + "A" if after else "", "limit": limit},
        )
        return [row[0] for row in rows]

    def repository_reaches(self, repository: str, digest: str | None) -> bool:
        bounds = (repository + ":", repository + "A")
        if digest is None:
            row = self.db.execute(
                "SELECT 1 FROM names WHERE name >= ? AND name < ? LIMIT 1", bounds
            ).fetchone()
        else:
            row = self.db.execute(
                "SELECT 1 FROM names WHERE name >= ? AND name < ? AND (target = ?"
                "   OR target IN (SELECT index_digest FROM index_children"
                "                 WHERE child_digest = ?)) LIMIT 1",
                (*bounds, digest, digest),
            ).fetchone()
        return row is not None

    # ---- reachability --------------------------------------------------------

    def referenced_blobs(self) -> set[str]:
        live = {row[0] for row in self.db.execute("SELECT blob_digest FROM manifest_blobs")}
        live.update(
            row[0]
            for row in self.db.execute(
                "SELECT digest FROM targets WHERE kind = 'manifest'"
                " OR digest IN (SELECT target FROM names)"
            )
        )
        return live

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

    # ---- the events journal --------------------------------------------------

    def event_bounds(self) -> tuple[int, int]:
        oldest, last = self.db.execute(
            "SELECT (SELECT MIN(cursor) FROM events), last_cursor FROM events_state"
        ).fetchone()
        return (int(last) + 1 if oldest is None else int(oldest)), int(last)

    def events_after(self, cursor: int, limit: int) -> list[EventRow]:
        return [
            _event(row)
            for row in self.db.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE cursor > ? ORDER BY cursor LIMIT ?",
                (cursor, limit),
            )
        ]

    # ---- replicas and leases -------------------------------------------------

    def clock(self) -> int:
        return time.time_ns()

    def replicas(self) -> list[ReplicaRow]:
        return [
            ReplicaRow(row[0], row[1], row[2], tuple(json.loads(row[3])))
            for row in self.db.execute(
                "SELECT id, last_seen, seen_epoch, reading FROM replicas ORDER BY id"
            )
        ]

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

    def collector_epoch(self) -> int:
        return int(self.db.execute("SELECT epoch FROM collector_state WHERE id = 0").fetchone()[0])

    def store_id(self) -> str:
        row = self.db.execute("SELECT store_id FROM store_identity WHERE id = 0").fetchone()
        return str(row[0])


class SqliteWriter(SqliteReader):
    """Changes on the writer connection, inside its transaction."""

    def claim_blob_dir(self, nonce: str) -> str:
        self.db.execute(
            "UPDATE store_identity SET blob_dir = ? WHERE id = 0 AND blob_dir IS NULL", (nonce,)
        )
        row = self.db.execute("SELECT blob_dir FROM store_identity WHERE id = 0").fetchone()
        return str(row[0])

    def record_blob(self, blob: BlobRow) -> None:
        self.db.execute(
            f"INSERT INTO blobs ({_BLOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(digest) DO UPDATE SET"
            "   size = excluded.size,"
            "   diff_id = COALESCE(excluded.diff_id, blobs.diff_id),"
            "   uncompressed_size = COALESCE(excluded.uncompressed_size, blobs.uncompressed_size)",
            (
                blob.digest,
                blob.size,
                blob.media_type,
                blob.diff_id,
                blob.uncompressed_size,
                blob.stored_at,
            ),
        )

    def delete_blobs(self, digests: Iterable[str]) -> None:
        rows = [(d,) for d in digests]
        self.db.executemany("DELETE FROM blob_sources WHERE digest = ?", rows)
        self.db.executemany("DELETE FROM damaged_blobs WHERE digest = ?", rows)
        self.db.executemany("DELETE FROM blobs WHERE digest = ?", rows)

    def mark_damaged(self, problems: dict[str, str], when: int) -> None:
        self.db.executemany(
            "INSERT INTO damaged_blobs (digest, problem, found_at) VALUES (?, ?, ?)"
            " ON CONFLICT(digest) DO UPDATE SET problem = excluded.problem,"
            "   found_at = excluded.found_at",
            ((digest, kind, when) for digest, kind in problems.items()),
        )

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

    def add_manifest(self, target: TargetRow, blobs: Sequence[ManifestBlob]) -> None:
        self.db.execute(
            f"INSERT OR IGNORE INTO targets ({_TARGET_COLUMNS}) VALUES (?, ?, 'manifest', ?, ?)",
            (target.digest, target.media_type, target.image_id, target.stored_at),
        )
        self.db.executemany(
            "INSERT OR IGNORE INTO manifest_blobs"
            " (manifest_digest, position, blob_digest, media_type, size) VALUES (?, ?, ?, ?, ?)",
            ((target.digest, b.position, b.blob_digest, b.media_type, b.size) for b in blobs),
        )

    def add_index(self, target: TargetRow, children: Sequence[IndexChild]) -> None:
        self.db.execute(
            f"INSERT OR IGNORE INTO targets ({_TARGET_COLUMNS}) VALUES (?, ?, 'index', NULL, ?)",
            (target.digest, target.media_type, target.stored_at),
        )
        self.db.executemany(
            "INSERT OR IGNORE INTO index_children"
            " (index_digest, position, child_digest, media_type, size, platform)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                (target.digest, c.position, c.child_digest, c.media_type, c.size, c.platform)
                for c in children
            ),
        )

    def add_image(self, image: ImageRow) -> None:
        self.db.execute(
            f"INSERT OR IGNORE INTO images ({_IMAGE_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                image.id,
                image.created,
                image.stored_at,
                image.size,
                image.content_size,
                image.os,
                image.architecture,
                image.variant,
                json.dumps(image.labels, sort_keys=True),
                image.last_tag_time,
            ),
        )

    def update_content_size(self, image_id: str) -> None:
        self.db.execute(
            "UPDATE images SET content_size = COALESCE(("
            "  SELECT SUM(size) FROM ("
            "    SELECT mb.blob_digest, mb.size FROM manifest_blobs mb"
            "    JOIN targets t ON t.digest = mb.manifest_digest WHERE t.image_id = ?1"
            "    UNION"
            "    SELECT b.digest, b.size FROM targets t JOIN blobs b ON b.digest = t.digest"
            "    WHERE t.image_id = ?1)), 0)"
            " WHERE id = ?1",
            (image_id,),
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

    def delete_index(self, index_digest: str) -> None:
        self.db.execute("DELETE FROM index_children WHERE index_digest = ?", (index_digest,))
        self.db.execute("DELETE FROM targets WHERE digest = ? AND kind = 'index'", (index_digest,))

    def set_name(self, row: NameRow) -> str | None:
        previous = self.db.execute(
            "SELECT target FROM names WHERE name = ?", (row.name,)
        ).fetchone()
        self.db.execute(
            f"INSERT INTO names ({_NAME_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(name) DO UPDATE SET target = excluded.target,"
            "   updated_at = excluded.updated_at",
            (
                row.name,
                row.repository,
                row.tag,
                row.digest,
                row.target,
                row.created_at,
                row.updated_at,
            ),
        )
        return None if previous is None else str(previous[0])

    def delete_name(self, name: str) -> None:
        self.db.execute("DELETE FROM names WHERE name = ?", (name,))

    def append_events(self, events: Sequence[EventRow], when: int) -> int:
        # Bumping the counter takes the write lock first (BEGIN IMMEDIATE holds
        # it already): the cursors follow the order transactions commit in.
        last = int(
            self.db.execute(
                "UPDATE events_state SET last_cursor = last_cursor + ? WHERE id = 0"
                " RETURNING last_cursor",
                (len(events),),
            ).fetchone()[0]
        )
        first = last - len(events) + 1
        self.db.executemany(
            f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    event.kind,
                    event.image_id,
                    event.name,
                    event.target,
                    json.dumps(dict(event.labels), sort_keys=True),
                    event.remote,
                    event.reclaimed,
                    first + position,
                    when,
                )
                for position, event in enumerate(events)
            ),
        )
        return last

    def trim_events(self, keep: int, not_before: int) -> None:
        self.db.execute(
            "DELETE FROM events WHERE cursor <= (SELECT last_cursor FROM events_state) - ?",
            (keep,),
        )
        # From the oldest up to the first young enough event: the scan in cursor
        # order stops there, so a trim that removes nothing reads one row.
        self.db.execute(
            "DELETE FROM events WHERE cursor < COALESCE("
            "  (SELECT cursor FROM events WHERE time >= ? ORDER BY cursor LIMIT 1),"
            "  (SELECT last_cursor + 1 FROM events_state))",
            (not_before,),
        )

    # ---- replicas and leases -------------------------------------------------

    def add_lease(self, replica: str, lease: int, digests: Iterable[str]) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO leases (replica, lease, digest) VALUES (?, ?, ?)",
            [(replica, lease, digest) for digest in set(digests)],
        )

    def release_lease(self, replica: str, lease: int) -> None:
        self.db.execute("DELETE FROM leases WHERE replica = ? AND lease = ?", (replica, lease))

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

    def heartbeat(self, replica: str, seen_epoch: int, reading: Sequence[str]) -> None:
        self.db.execute(
            "INSERT INTO replicas (id, last_seen, seen_epoch, reading) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen,"
            "   seen_epoch = excluded.seen_epoch, reading = excluded.reading",
            (replica, self.clock(), seen_epoch, json.dumps(sorted(set(reading)))),
        )

    def forget_replica(self, replica: str) -> None:
        self.db.execute("DELETE FROM leases WHERE replica = ?", (replica,))
        self.db.execute("DELETE FROM replicas WHERE id = ?", (replica,))

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
