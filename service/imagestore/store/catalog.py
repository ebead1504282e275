"""The catalog: SQLite (WAL, synchronous=FULL) at ``<root>/catalog.db``.

It records what the blob files mean: blob records (size, media type, and for
layers diff_id and uncompressed size), targets (manifests and indexes), the
images (one per config digest) and the names (tags and digest references) that
point at targets; and, per blob, the registry repositories it was pulled from
or pushed to (push's mount sources) and whether Check found it damaged. Every
state change is one transaction. The schema is versioned with
``PRAGMA user_version`` and migrated forward on open. The catalog files are
the owner's alone (0600).

The catalog holds rows, not policy: what an operation means lives in
``imagestore.store.images``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from imagestore import errors

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
)

#: the repositories kept per blob and registry as mount sources (the latest ones)
MAX_SOURCES_PER_BLOB = 16


@dataclass(frozen=True, slots=True)
class BlobRow:
    digest: str
    size: int
    media_type: str
    diff_id: str | None
    uncompressed_size: int | None
    stored_at: int


class ImageRow(NamedTuple):
    """One image record (a NamedTuple: listing builds 10,000s of them)."""

    id: str
    created: int | None
    stored_at: int
    size: int
    content_size: int
    os: str
    architecture: str
    variant: str
    labels: dict[str, str]
    last_tag_time: int | None


@dataclass(frozen=True, slots=True)
class NameRow:
    name: str
    repository: str
    tag: str | None
    digest: str | None
    target: str
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class TargetRow:
    digest: str
    media_type: str
    kind: str
    image_id: str | None
    stored_at: int


@dataclass(frozen=True, slots=True)
class ManifestBlob:
    position: int
    blob_digest: str
    media_type: str
    size: int


@dataclass(frozen=True, slots=True)
class IndexChild:
    position: int
    child_digest: str
    media_type: str
    size: int
    platform: str


_IMAGE_COLUMNS = (
    "id, created, stored_at, size, content_size, os, architecture, variant, labels, last_tag_time"
)


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


class Catalog:
    """One SQLite connection, serialised by a lock (the store's writes are short)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        _make_private(path)
        try:
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=30
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise errors.DataLoss(f"catalog {path} cannot be opened: {exc}") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        version = self.schema_version
        if version > len(MIGRATIONS):
            raise errors.FailedPrecondition(
                f"catalog schema version {version} is newer than this imagestore"
                f" ({len(MIGRATIONS)}); upgrade imagestore"
            )
        for number in range(version, len(MIGRATIONS)):
            with self.transaction() as db:
                for statement in _statements(MIGRATIONS[number]):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number + 1}")

    @contextmanager
    def transaction(self, *, rollback: bool = False) -> Iterator[sqlite3.Connection]:
        """One atomic, durable change (BEGIN IMMEDIATE … COMMIT).

        ``rollback`` runs the same statements and then undoes them: a dry run
        uses the very code of the real change.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("ROLLBACK" if rollback else "COMMIT")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A consistent read (one snapshot for the block; inside a transaction, that one)."""
        with self._lock:
            if self._db.in_transaction:
                yield self._db
                return
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    # ---- blobs ---------------------------------------------------------------

    def record_blob(self, db: sqlite3.Connection, blob: BlobRow) -> None:
        """Insert a blob record, or update one from content just verified.

        An existing record keeps its first media type and time; its size, and
        its diff_id and uncompressed size when ``blob`` has them, are taken from
        ``blob`` (what the bytes hashed to), so writing a blob again repairs a
        wrong record.
        """
        db.execute(
            "INSERT INTO blobs (digest, size, media_type, diff_id, uncompressed_size, stored_at)"
            " VALUES (?, ?, ?, ?, ?, ?)"
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

    def blob(self, db: sqlite3.Connection, digest: str) -> BlobRow | None:
        row = db.execute(
            "SELECT digest, size, media_type, diff_id, uncompressed_size, stored_at"
            " FROM blobs WHERE digest = ?",
            (digest,),
        ).fetchone()
        return None if row is None else BlobRow(*row)

    def blobs(self, db: sqlite3.Connection) -> list[BlobRow]:
        return [
            BlobRow(*row)
            for row in db.execute(
                "SELECT digest, size, media_type, diff_id, uncompressed_size, stored_at FROM blobs"
            )
        ]

    def blob_by_diff_id(self, db: sqlite3.Connection, diff_id: str) -> BlobRow | None:
        """A stored gzip layer with this diff_id (to reuse instead of compressing again)."""
        row = db.execute(
            "SELECT digest, size, media_type, diff_id, uncompressed_size, stored_at FROM blobs"
            " WHERE diff_id = ? AND digest != diff_id"
            "   AND digest NOT IN (SELECT digest FROM damaged_blobs)"
            " ORDER BY stored_at LIMIT 1",
            (diff_id,),
        ).fetchone()
        return None if row is None else BlobRow(*row)

    def delete_blobs(self, db: sqlite3.Connection, digests: Iterable[str]) -> None:
        """Forget blobs: their records, mount sources and damage marks."""
        rows = [(d,) for d in digests]
        db.executemany("DELETE FROM blob_sources WHERE digest = ?", rows)
        db.executemany("DELETE FROM damaged_blobs WHERE digest = ?", rows)
        db.executemany("DELETE FROM blobs WHERE digest = ?", rows)

    def recorded_among(self, db: sqlite3.Connection, digests: Iterable[str]) -> set[str]:
        """Which of ``digests`` have a blob record."""
        return set(self.blob_sizes(db, digests))

    # ---- damaged blobs (found by Check, replaced by the next ingest) ----------

    def mark_damaged(self, db: sqlite3.Connection, problems: dict[str, str], when: int) -> None:
        """Record blobs found damaged (digest -> Check's problem kind)."""
        db.executemany(
            "INSERT INTO damaged_blobs (digest, problem, found_at) VALUES (?, ?, ?)"
            " ON CONFLICT(digest) DO UPDATE SET problem = excluded.problem,"
            "   found_at = excluded.found_at",
            ((digest, kind, when) for digest, kind in problems.items()),
        )

    def clear_damaged(self, db: sqlite3.Connection, digests: Iterable[str]) -> None:
        """Forget damage marks (the blob was written again, or is gone)."""
        db.executemany("DELETE FROM damaged_blobs WHERE digest = ?", ((d,) for d in digests))

    def is_damaged(self, db: sqlite3.Connection, digest: str) -> bool:
        found = db.execute("SELECT 1 FROM damaged_blobs WHERE digest = ?", (digest,)).fetchone()
        return found is not None

    def damaged(self, db: sqlite3.Connection) -> dict[str, str]:
        """Every damage mark: digest -> Check's problem kind."""
        return dict(db.execute("SELECT digest, problem FROM damaged_blobs"))

    # ---- blob sources (where a blob came from or went to) ---------------------

    def record_blob_sources(
        self,
        db: sqlite3.Connection,
        digests: Iterable[str],
        registry: str,
        repository: str,
        when: int,
    ) -> None:
        """Note that ``registry``/``repository`` holds each blob (recorded blobs only);
        each blob keeps the latest :data:`MAX_SOURCES_PER_BLOB` repositories per registry."""
        for digest in dict.fromkeys(digests):
            db.execute(  # delete and insert again: the new row sorts as the newest
                "DELETE FROM blob_sources WHERE digest = ? AND registry = ? AND repository = ?",
                (digest, registry, repository),
            )
            db.execute(
                "INSERT INTO blob_sources (digest, registry, repository, recorded_at)"
                " SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM blobs WHERE digest = ?1)",
                (digest, registry, repository, when),
            )
            db.execute(
                "DELETE FROM blob_sources WHERE digest = ?1 AND registry = ?2 AND seq NOT IN ("
                "  SELECT seq FROM blob_sources WHERE digest = ?1 AND registry = ?2"
                "  ORDER BY seq DESC LIMIT ?3)",
                (digest, registry, MAX_SOURCES_PER_BLOB),
            )

    def blob_sources(self, db: sqlite3.Connection, digest: str, registry: str) -> list[str]:
        """Repositories of ``registry`` known to hold ``digest``, most recent first."""
        return [
            row[0]
            for row in db.execute(
                "SELECT repository FROM blob_sources WHERE digest = ? AND registry = ?"
                " ORDER BY seq DESC",
                (digest, registry),
            )
        ]

    # ---- targets, images -----------------------------------------------------

    def target(self, db: sqlite3.Connection, digest: str) -> TargetRow | None:
        row = db.execute(
            "SELECT digest, media_type, kind, image_id, stored_at FROM targets WHERE digest = ?",
            (digest,),
        ).fetchone()
        return None if row is None else TargetRow(*row)

    def add_manifest(
        self,
        db: sqlite3.Connection,
        target: TargetRow,
        blobs: Sequence[ManifestBlob],
    ) -> None:
        db.execute(
            "INSERT OR IGNORE INTO targets (digest, media_type, kind, image_id, stored_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (target.digest, target.media_type, target.kind, target.image_id, target.stored_at),
        )
        db.executemany(
            "INSERT OR IGNORE INTO manifest_blobs"
            " (manifest_digest, position, blob_digest, media_type, size) VALUES (?, ?, ?, ?, ?)",
            ((target.digest, b.position, b.blob_digest, b.media_type, b.size) for b in blobs),
        )

    def add_index(
        self, db: sqlite3.Connection, target: TargetRow, children: Sequence[IndexChild]
    ) -> None:
        db.execute(
            "INSERT OR IGNORE INTO targets (digest, media_type, kind, image_id, stored_at)"
            " VALUES (?, ?, 'index', NULL, ?)",
            (target.digest, target.media_type, target.stored_at),
        )
        db.executemany(
            "INSERT OR IGNORE INTO index_children"
            " (index_digest, position, child_digest, media_type, size, platform)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                (target.digest, c.position, c.child_digest, c.media_type, c.size, c.platform)
                for c in children
            ),
        )

    def manifest_blobs(self, db: sqlite3.Connection, manifest_digest: str) -> list[ManifestBlob]:
        return [
            ManifestBlob(*row)
            for row in db.execute(
                "SELECT position, blob_digest, media_type, size FROM manifest_blobs"
                " WHERE manifest_digest = ? ORDER BY position",
                (manifest_digest,),
            )
        ]

    def index_children(self, db: sqlite3.Connection, index_digest: str) -> list[IndexChild]:
        return [
            IndexChild(*row)
            for row in db.execute(
                "SELECT position, child_digest, media_type, size, platform FROM index_children"
                " WHERE index_digest = ? ORDER BY position",
                (index_digest,),
            )
        ]

    def add_image(self, db: sqlite3.Connection, image: ImageRow) -> None:
        db.execute(
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

    def image(self, db: sqlite3.Connection, image_id: str) -> ImageRow | None:
        row = db.execute(
            f"SELECT {_IMAGE_COLUMNS} FROM images WHERE id = ?", (image_id,)
        ).fetchone()
        return None if row is None else _image(row)

    def images(self, db: sqlite3.Connection) -> list[ImageRow]:
        return list(self.iter_images(db))

    def iter_images(
        self, db: sqlite3.Connection, after: tuple[int, str] | None = None
    ) -> Iterator[ImageRow]:
        """Images newest first (then by ID), lazily; ``after`` is a keyset position."""
        order = "ORDER BY COALESCE(created, 0) DESC, id DESC"
        if after is None:
            cursor = db.execute(f"SELECT {_IMAGE_COLUMNS} FROM images {order}")
        else:
            cursor = db.execute(
                f"SELECT {_IMAGE_COLUMNS} FROM images WHERE (COALESCE(created, 0), id) < (?, ?)"
                f" {order}",
                after,
            )
        return map(_image, cursor)

    def images_by_prefix(self, db: sqlite3.Connection, hex_prefix: str) -> list[str]:
        """Image IDs starting with ``sha256:<hex_prefix>`` (at most 10)."""
        low = "sha256:" + hex_prefix
        return [
            row[0]
            for row in db.execute(
                "SELECT id FROM images WHERE id >= ? AND id < ? ORDER BY id LIMIT 10",
                (low, low + "\x7f"),
            )
        ]

    def manifests_of_image(self, db: sqlite3.Connection, image_id: str) -> list[TargetRow]:
        """The image's manifests, most recently stored first."""
        return [
            TargetRow(*row)
            for row in db.execute(
                "SELECT digest, media_type, kind, image_id, stored_at FROM targets"
                " WHERE image_id = ? ORDER BY stored_at DESC, digest",
                (image_id,),
            )
        ]

    def update_content_size(self, db: sqlite3.Connection, image_id: str) -> None:
        """Recompute the bytes an image's distinct blobs take (its manifests included)."""
        db.execute(
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

    def set_last_tag_time(
        self, db: sqlite3.Connection, image_ids: Iterable[str], when: int
    ) -> None:
        db.executemany(
            "UPDATE images SET last_tag_time = ? WHERE id = ?", ((when, i) for i in image_ids)
        )

    def delete_image(self, db: sqlite3.Connection, image_id: str) -> list[str]:
        """Delete an image and its manifests' rows; returns the manifest digests."""
        manifests = [t.digest for t in self.manifests_of_image(db, image_id)]
        db.executemany(
            "DELETE FROM manifest_blobs WHERE manifest_digest = ?", ((m,) for m in manifests)
        )
        db.executemany("DELETE FROM targets WHERE digest = ?", ((m,) for m in manifests))
        db.execute("DELETE FROM images WHERE id = ?", (image_id,))
        return manifests

    def delete_index(self, db: sqlite3.Connection, index_digest: str) -> None:
        db.execute("DELETE FROM index_children WHERE index_digest = ?", (index_digest,))
        db.execute("DELETE FROM targets WHERE digest = ? AND kind = 'index'", (index_digest,))

    def unnamed_indexes(self, db: sqlite3.Connection) -> list[str]:
        return [
            row[0]
            for row in db.execute(
                "SELECT digest FROM targets WHERE kind = 'index'"
                " AND digest NOT IN (SELECT target FROM names)"
            )
        ]

    # ---- names ---------------------------------------------------------------

    def set_name(self, db: sqlite3.Connection, row: NameRow) -> str | None:
        """Create or move a name; returns the target it pointed at before (if any)."""
        previous = db.execute("SELECT target FROM names WHERE name = ?", (row.name,)).fetchone()
        db.execute(
            "INSERT INTO names (name, repository, tag, digest, target, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"
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

    def name(self, db: sqlite3.Connection, name: str) -> NameRow | None:
        row = db.execute(
            "SELECT name, repository, tag, digest, target, created_at, updated_at"
            " FROM names WHERE name = ?",
            (name,),
        ).fetchone()
        return None if row is None else NameRow(*row)

    def names(self, db: sqlite3.Connection) -> list[NameRow]:
        return [
            NameRow(*row)
            for row in db.execute(
                "SELECT name, repository, tag, digest, target, created_at, updated_at FROM names"
            )
        ]

    def delete_name(self, db: sqlite3.Connection, name: str) -> None:
        db.execute("DELETE FROM names WHERE name = ?", (name,))

    def names_by_image(self, db: sqlite3.Connection) -> dict[str, list[NameRow]]:
        """Every image's names: through a manifest target, or an index listing it."""
        result: dict[str, list[NameRow]] = {}
        for row in db.execute(
            "SELECT t.image_id, n.name, n.repository, n.tag, n.digest, n.target,"
            "       n.created_at, n.updated_at"
            " FROM names n JOIN targets t ON t.digest = n.target WHERE t.kind = 'manifest'"
            " UNION"
            " SELECT t.image_id, n.name, n.repository, n.tag, n.digest, n.target,"
            "        n.created_at, n.updated_at"
            " FROM names n JOIN index_children c ON c.index_digest = n.target"
            " JOIN targets t ON t.digest = c.child_digest AND t.kind = 'manifest'"
        ):
            result.setdefault(row[0], []).append(NameRow(*row[1:]))
        return result

    def name_strings_by_image(self, db: sqlite3.Connection) -> dict[str, list[str]]:
        """Every image's canonical names (as :meth:`names_by_image`, only the strings)."""
        result: dict[str, list[str]] = {}
        for image_id, name in db.execute(
            "SELECT t.image_id, n.name FROM names n JOIN targets t ON t.digest = n.target"
            " WHERE t.kind = 'manifest'"
            " UNION ALL"  # a name has one target: no duplicates to remove
            " SELECT t.image_id, n.name FROM names n"
            " JOIN index_children c ON c.index_digest = n.target"
            " JOIN targets t ON t.digest = c.child_digest AND t.kind = 'manifest'"
        ):
            if image_id in result:
                result[image_id].append(name)
            else:
                result[image_id] = [name]
        return result

    def names_of_image(self, db: sqlite3.Connection, image_id: str) -> list[NameRow]:
        return [
            NameRow(*row)
            for row in db.execute(
                "SELECT n.name, n.repository, n.tag, n.digest, n.target, n.created_at,"
                "       n.updated_at"
                " FROM names n JOIN targets t ON t.digest = n.target"
                " WHERE t.kind = 'manifest' AND t.image_id = ?1"
                " UNION"
                " SELECT n.name, n.repository, n.tag, n.digest, n.target, n.created_at,"
                "        n.updated_at"
                " FROM names n JOIN index_children c ON c.index_digest = n.target"
                " JOIN targets t ON t.digest = c.child_digest"
                " WHERE t.kind = 'manifest' AND t.image_id = ?1"
                " ORDER BY 1",
                (image_id,),
            )
        ]

    def images_of_target(self, db: sqlite3.Connection, target: str) -> list[str]:
        """Images a name pointing at ``target`` reaches (present manifests only)."""
        return [
            row[0]
            for row in db.execute(
                "SELECT image_id FROM targets WHERE digest = ?1 AND kind = 'manifest'"
                " UNION"
                " SELECT t.image_id FROM index_children c JOIN targets t"
                "   ON t.digest = c.child_digest AND t.kind = 'manifest'"
                " WHERE c.index_digest = ?1",
                (target,),
            )
        ]

    # ---- reachability (for garbage collection) ----------------------------------

    def referenced_among(self, db: sqlite3.Connection, digests: Iterable[str]) -> set[str]:
        """Which of ``digests`` the catalog needs (see :meth:`referenced_blobs`)."""
        wanted = sorted(set(digests))
        live: set[str] = set()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            live.update(
                row[0]
                for row in db.execute(
                    f"SELECT blob_digest FROM manifest_blobs WHERE blob_digest IN ({marks})"
                    f" UNION SELECT digest FROM targets WHERE digest IN ({marks})"
                    "   AND (kind = 'manifest' OR digest IN (SELECT target FROM names))",
                    chunk + chunk,
                )
            )
        return live

    def blob_sizes(self, db: sqlite3.Connection, digests: Iterable[str]) -> dict[str, int]:
        wanted = sorted(set(digests))
        sizes: dict[str, int] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sizes.update(
                (row[0], row[1])
                for row in db.execute(
                    f"SELECT digest, size FROM blobs WHERE digest IN ({marks})", chunk
                )
            )
        return sizes

    def referenced_blobs(self, db: sqlite3.Connection) -> set[str]:
        """Blobs the catalog needs: every manifest's own blob, config and layers,
        and every named index's blob."""
        live = {row[0] for row in db.execute("SELECT blob_digest FROM manifest_blobs")}
        live.update(
            row[0] for row in db.execute("SELECT digest FROM targets WHERE kind = 'manifest'")
        )
        live.update(
            row[0]
            for row in db.execute(
                "SELECT digest FROM targets WHERE kind = 'index'"
                " AND digest IN (SELECT target FROM names)"
            )
        )
        return live


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
        raise errors.Unavailable(f"catalog {path} cannot be opened: {exc.strerror}") from None


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit midway)."""
    code = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    return [statement.strip() for statement in code.split(";") if statement.strip()]
