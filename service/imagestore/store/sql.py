"""The catalog queries SQLite and PostgreSQL run alike, written once.

``store/sqlite.py`` and ``store/postgres.py`` keep the same tables and views
(docs/design.md §4), so most of their queries are the same text. They live
here, in :class:`SqlReader` and :class:`SqlWriter`, with ``?`` for every
parameter; each engine subclasses both and says how a statement runs on its
connection (``_execute``, ``_executemany``: psycopg's placeholder is ``%s``).
What really differs stays in the engine's module: connections, transactions,
migrations, locking, the clock, the queries over a set of digests (chunks of
``IN (?, …)`` on SQLite, one ``= ANY(array)`` on PostgreSQL), and the
statements only one engine can say.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar, Protocol

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

_BLOB_COLUMNS = "digest, size, media_type, diff_id, uncompressed_size, stored_at"
_IMAGE_COLUMNS = (
    "id, created, stored_at, size, content_size, os, architecture, variant, labels, last_tag_time"
)
_NAME_COLUMNS = "name, repository, tag, digest, target, created_at, updated_at"
_TARGET_COLUMNS = "digest, media_type, kind, image_id, stored_at"
_EVENT_COLUMNS = "kind, image_id, name, target, labels, remote, reclaimed, cursor, time"


class Rows(Protocol):
    """What a statement gives back: the DB-API cursor both drivers return."""

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


def _image(row: Sequence[Any]) -> ImageRow:
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


def _event(row: Sequence[Any]) -> EventRow:
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


class SqlReader(ABC):
    """Queries inside one snapshot; the engine's subclass runs them."""

    @abstractmethod
    def _execute(self, sql: str, args: Sequence[Any] = ()) -> Rows:
        """Run one statement whose parameters are ``?``."""

    def _value(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """The first column of a statement's one row."""
        row = self._execute(sql, args).fetchone()
        assert row is not None  # an aggregate, or a one-row table the migrations fill
        return row[0]

    # ---- blobs ---------------------------------------------------------------

    def blob(self, digest: str) -> BlobRow | None:
        row = self._execute(
            f"SELECT {_BLOB_COLUMNS} FROM blobs WHERE digest = ?", (digest,)
        ).fetchone()
        return None if row is None else BlobRow(*row)

    def blobs(self) -> list[BlobRow]:
        return [BlobRow(*row) for row in self._execute(f"SELECT {_BLOB_COLUMNS} FROM blobs")]

    def total_blob_bytes(self) -> int:
        # CAST: PostgreSQL sums BIGINT as NUMERIC; the total is a BIGINT, as on SQLite.
        return int(self._value("SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM blobs"))

    def blob_count(self) -> int:
        return int(self._value("SELECT COUNT(*) FROM blobs"))

    def blob_by_diff_id(self, diff_id: str) -> BlobRow | None:
        row = self._execute(
            f"SELECT {_BLOB_COLUMNS} FROM blobs"
            " WHERE diff_id = ? AND digest != diff_id"
            "   AND digest NOT IN (SELECT digest FROM damaged_blobs)"
            " ORDER BY stored_at LIMIT 1",
            (diff_id,),
        ).fetchone()
        return None if row is None else BlobRow(*row)

    def is_damaged(self, digest: str) -> bool:
        found = self._execute("SELECT 1 FROM damaged_blobs WHERE digest = ?", (digest,)).fetchone()
        return found is not None

    def damaged(self) -> dict[str, str]:
        return dict(self._execute("SELECT digest, problem FROM damaged_blobs"))

    def damage(self, digest: str) -> str | None:
        row = self._execute(
            "SELECT problem FROM damaged_blobs WHERE digest = ?", (digest,)
        ).fetchone()
        return None if row is None else str(row[0])

    def blob_sources(self, digest: str, registry: str) -> list[str]:
        return [
            row[0]
            for row in self._execute(
                "SELECT repository FROM blob_sources WHERE digest = ? AND registry = ?"
                " ORDER BY seq DESC",
                (digest, registry),
            )
        ]

    # ---- targets and images --------------------------------------------------

    def target(self, digest: str) -> TargetRow | None:
        row = self._execute(
            f"SELECT {_TARGET_COLUMNS} FROM targets WHERE digest = ?", (digest,)
        ).fetchone()
        return None if row is None else TargetRow(*row)

    def manifest_blobs(self, manifest_digest: str) -> list[ManifestBlob]:
        return [
            ManifestBlob(*row)
            for row in self._execute(
                "SELECT position, blob_digest, media_type, size FROM manifest_blobs"
                " WHERE manifest_digest = ? ORDER BY position",
                (manifest_digest,),
            )
        ]

    def index_children(self, index_digest: str) -> list[IndexChild]:
        return [
            IndexChild(*row)
            for row in self._execute(
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
            for row in self._execute(
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
        row = self._execute(
            f"SELECT {_IMAGE_COLUMNS} FROM images WHERE id = ?", (image_id,)
        ).fetchone()
        return None if row is None else _image(row)

    def images(self, after: tuple[int, str] | None = None) -> Iterator[ImageRow]:
        order = "ORDER BY COALESCE(created, 0) DESC, id DESC"
        if after is None:
            rows = self._execute(f"SELECT {_IMAGE_COLUMNS} FROM images {order}")
        else:
            # CAST: psycopg types an int by its value (0 is SMALLINT), the column is BIGINT.
            rows = self._execute(
                f"SELECT {_IMAGE_COLUMNS} FROM images"
                f" WHERE (COALESCE(created, 0), id) < (CAST(? AS BIGINT), ?) {order}",
                after,
            )
        return map(_image, rows)

    def images_by_prefix(self, hex_prefix: str) -> list[str]:
        low = "sha256:" + hex_prefix
        return [
            row[0]
            for row in self._execute(
                "SELECT id FROM images WHERE id >= ? AND id < ? ORDER BY id LIMIT 10",
                (low, low + "\x7f"),
            )
        ]

    def manifests_of_image(self, image_id: str) -> list[TargetRow]:
        return [
            TargetRow(*row)
            for row in self._execute(
                f"SELECT {_TARGET_COLUMNS} FROM targets"
                " WHERE image_id = ? ORDER BY stored_at DESC, digest",
                (image_id,),
            )
        ]

    def blobs_by_image(self) -> dict[str, set[str]]:
        owned: dict[str, set[str]] = {}
        for image_id, digest in self._execute(
            "SELECT t.image_id, mb.blob_digest FROM manifest_blobs mb"
            " JOIN targets t ON t.digest = mb.manifest_digest"
            " UNION ALL SELECT image_id, digest FROM targets WHERE kind = 'manifest'"
        ):
            owned.setdefault(image_id, set()).add(digest)
        return owned

    def image_count(self) -> int:
        return int(self._value("SELECT COUNT(*) FROM images"))

    def images_using_blob(self, digest: str, limit: int) -> tuple[list[str], int]:
        # The count is taken over every user before LIMIT cuts the list (one
        # row at least, so that a limit of 0 still learns the count).
        rows = self._execute(
            "WITH users(image_id) AS ("
            "   SELECT t.image_id FROM manifest_blobs mb"
            "   JOIN targets t ON t.digest = mb.manifest_digest WHERE mb.blob_digest = ?"
            "   UNION SELECT image_id FROM target_images WHERE target = ?"
            "     AND (target IN (SELECT digest FROM targets WHERE kind = 'manifest')"
            "          OR target IN (SELECT target FROM names)))"
            " SELECT image_id, COUNT(*) OVER () FROM users WHERE image_id IS NOT NULL"
            " ORDER BY image_id LIMIT ?",
            (digest, digest, max(limit, 1)),
        ).fetchall()
        if not rows:
            return [], 0
        return [row[0] for row in rows[:limit]], int(rows[0][1])

    def unnamed_indexes(self) -> list[str]:
        return [
            row[0]
            for row in self._execute(
                "SELECT digest FROM targets WHERE kind = 'index'"
                " AND digest NOT IN (SELECT target FROM names)"
            )
        ]

    # ---- names ---------------------------------------------------------------

    def name(self, name: str) -> NameRow | None:
        row = self._execute(f"SELECT {_NAME_COLUMNS} FROM names WHERE name = ?", (name,)).fetchone()
        return None if row is None else NameRow(*row)

    def names(self) -> list[NameRow]:
        return [NameRow(*row) for row in self._execute(f"SELECT {_NAME_COLUMNS} FROM names")]

    def names_of_image(self, image_id: str) -> list[NameRow]:
        return [
            NameRow(*row)
            for row in self._execute(
                f"SELECT DISTINCT {_NAME_COLUMNS} FROM image_names WHERE image_id = ?"
                " ORDER BY name",
                (image_id,),
            )
        ]

    def names_by_image(self) -> dict[str, list[NameRow]]:
        result: dict[str, list[NameRow]] = {}
        for row in self._execute(f"SELECT DISTINCT image_id, {_NAME_COLUMNS} FROM image_names"):
            result.setdefault(row[0], []).append(NameRow(*row[1:]))
        return result

    def name_strings_by_image(self) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {}
        # An index may list one image twice: a name can come back; callers
        # (the image summary) keep each name once.
        for image_id, name in self._execute("SELECT image_id, name FROM image_names"):
            if image_id in result:
                result[image_id].append(name)
            else:
                result[image_id] = [name]
        return result

    def images_of_target(self, target: str) -> list[str]:
        return [
            row[0]
            for row in self._execute(
                "SELECT DISTINCT image_id FROM target_images WHERE target = ?", (target,)
            )
        ]

    # ---- repositories: ranges of the names' key (see catalog.py) -------------

    def repository_tags(self, repository: str, after: str, limit: int) -> list[str]:
        return [
            row[0]
            for row in self._execute(
                "SELECT tag FROM names WHERE name > ? AND name < ? ORDER BY name LIMIT ?",
                (f"{repository}:{after}", repository + ";", limit),
            )
        ]

    def repositories(self, after: str, limit: int) -> list[str]:
        if limit <= 0:
            return []
        # A skip scan: each step is one lookup of the first name past the
        # previous repository's names (a loose index scan, in one statement).
        rows = self._execute(
            "WITH RECURSIVE found(repository, n) AS ("
            "   SELECT (SELECT repository FROM names WHERE name >= ?"
            "           ORDER BY name LIMIT 1), 1"
            "   UNION ALL"
            "   SELECT (SELECT repository FROM names WHERE name >= found.repository || 'A'"
            "           ORDER BY name LIMIT 1), n + 1"
            "   FROM found WHERE found.repository IS NOT NULL AND n < ?)"
            " SELECT repository FROM found WHERE repository IS NOT NULL ORDER BY n",
            (after + "A" if after else "", limit),
        )
        return [row[0] for row in rows]

    def repository_reaches(self, repository: str, digest: str | None) -> bool:
        bounds = (repository + ":", repository + "A")
        if digest is None:
            row = self._execute(
                "SELECT 1 FROM names WHERE name >= ? AND name < ? LIMIT 1", bounds
            ).fetchone()
        else:
            row = self._execute(
                "SELECT 1 FROM names WHERE name >= ? AND name < ? AND (target = ?"
                "   OR target IN (SELECT index_digest FROM index_children"
                "                 WHERE child_digest = ?)) LIMIT 1",
                (*bounds, digest, digest),
            ).fetchone()
        return row is not None

    # ---- reachability --------------------------------------------------------

    def referenced_blobs(self) -> set[str]:
        live = {row[0] for row in self._execute("SELECT blob_digest FROM manifest_blobs")}
        live.update(
            row[0]
            for row in self._execute(
                "SELECT digest FROM targets WHERE kind = 'manifest'"
                " OR digest IN (SELECT target FROM names)"
            )
        )
        return live

    # ---- the events journal --------------------------------------------------

    def event_bounds(self) -> tuple[int, int]:
        row = self._execute(
            "SELECT (SELECT MIN(cursor) FROM events), last_cursor FROM events_state"
        ).fetchone()
        assert row is not None  # the migration inserts the one row
        oldest, last = row
        return (int(last) + 1 if oldest is None else int(oldest)), int(last)

    def events_after(self, cursor: int, limit: int) -> list[EventRow]:
        return [
            _event(row)
            for row in self._execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE cursor > ? ORDER BY cursor LIMIT ?",
                (cursor, limit),
            )
        ]

    # ---- replicas and leases -------------------------------------------------

    @abstractmethod
    def clock(self) -> int:
        """The catalog's clock, ns since the epoch (heartbeats are judged by it)."""

    def replicas(self) -> list[ReplicaRow]:
        return [
            ReplicaRow(row[0], row[1], row[2], tuple(json.loads(row[3])))
            for row in self._execute(
                "SELECT id, last_seen, seen_epoch, reading FROM replicas ORDER BY id"
            )
        ]

    def collector_epoch(self) -> int:
        return int(self._value("SELECT epoch FROM collector_state WHERE id = 0"))

    def store_id(self) -> str:
        return str(self._value("SELECT store_id FROM store_identity WHERE id = 0"))


class SqlWriter(SqlReader):
    """Changes inside the writer's transaction; the engine's subclass runs them."""

    #: an INSERT that skips a row whose key is taken, around "table (columns) VALUES (…)":
    #: each engine keeps its own form (SQLite's OR IGNORE also skips NOT NULL and CHECK failures)
    _INSERT_NEW: ClassVar[str]

    @abstractmethod
    def _executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement whose parameters are ``?`` once per row."""

    def claim_blob_dir(self, nonce: str) -> str:
        self._execute(
            "UPDATE store_identity SET blob_dir = ? WHERE id = 0 AND blob_dir IS NULL", (nonce,)
        )
        return str(self._value("SELECT blob_dir FROM store_identity WHERE id = 0"))

    def record_blob(self, blob: BlobRow) -> None:
        self._execute(
            f"INSERT INTO blobs ({_BLOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (digest) DO UPDATE SET"
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

    def mark_damaged(self, problems: dict[str, str], when: int) -> None:
        self._executemany(
            "INSERT INTO damaged_blobs (digest, problem, found_at) VALUES (?, ?, ?)"
            " ON CONFLICT (digest) DO UPDATE SET problem = excluded.problem,"
            "   found_at = excluded.found_at",
            [(digest, kind, when) for digest, kind in problems.items()],
        )

    def add_manifest(self, target: TargetRow, blobs: Sequence[ManifestBlob]) -> None:
        self._execute(
            self._INSERT_NEW.format(f"targets ({_TARGET_COLUMNS}) VALUES (?, ?, 'manifest', ?, ?)"),
            (target.digest, target.media_type, target.image_id, target.stored_at),
        )
        self._executemany(
            self._INSERT_NEW.format(
                "manifest_blobs (manifest_digest, position, blob_digest, media_type, size)"
                " VALUES (?, ?, ?, ?, ?)"
            ),
            [(target.digest, b.position, b.blob_digest, b.media_type, b.size) for b in blobs],
        )

    def add_index(self, target: TargetRow, children: Sequence[IndexChild]) -> None:
        self._execute(
            self._INSERT_NEW.format(f"targets ({_TARGET_COLUMNS}) VALUES (?, ?, 'index', NULL, ?)"),
            (target.digest, target.media_type, target.stored_at),
        )
        self._executemany(
            self._INSERT_NEW.format(
                "index_children (index_digest, position, child_digest, media_type, size, platform)"
                " VALUES (?, ?, ?, ?, ?, ?)"
            ),
            [
                (target.digest, c.position, c.child_digest, c.media_type, c.size, c.platform)
                for c in children
            ],
        )

    def add_image(self, image: ImageRow) -> None:
        self._execute(
            self._INSERT_NEW.format(
                f"images ({_IMAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
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
        self._execute(
            "UPDATE images SET content_size = COALESCE(("
            "  SELECT SUM(size) FROM ("
            "    SELECT mb.blob_digest, mb.size FROM manifest_blobs mb"
            "    JOIN targets t ON t.digest = mb.manifest_digest WHERE t.image_id = ?"
            "    UNION"
            "    SELECT b.digest, b.size FROM targets t JOIN blobs b ON b.digest = t.digest"
            "    WHERE t.image_id = ?) owned), 0)"
            " WHERE id = ?",
            (image_id, image_id, image_id),
        )

    def delete_index(self, index_digest: str) -> None:
        self._execute("DELETE FROM index_children WHERE index_digest = ?", (index_digest,))
        self._execute("DELETE FROM targets WHERE digest = ? AND kind = 'index'", (index_digest,))

    def set_name(self, row: NameRow) -> str | None:
        previous = self._execute("SELECT target FROM names WHERE name = ?", (row.name,)).fetchone()
        self._execute(
            f"INSERT INTO names ({_NAME_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET target = excluded.target,"
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
        self._execute("DELETE FROM names WHERE name = ?", (name,))

    def append_events(self, events: Sequence[EventRow], when: int) -> int:
        # The transaction holds the writers' lock since it began (BEGIN
        # IMMEDIATE; PostgreSQL's advisory lock): the cursors follow the order
        # transactions commit in.
        last = int(
            self._value(
                "UPDATE events_state SET last_cursor = last_cursor + ? WHERE id = 0"
                " RETURNING last_cursor",
                (len(events),),
            )
        )
        first = last - len(events) + 1
        self._executemany(
            f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
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
            ],
        )
        return last

    def trim_events(self, keep: int, not_before: int) -> None:
        self._execute(
            "DELETE FROM events WHERE cursor <= (SELECT last_cursor FROM events_state) - ?",
            (keep,),
        )
        # From the oldest up to the first young enough event: the scan in cursor
        # order stops there, so a trim that removes nothing reads one row.
        self._execute(
            "DELETE FROM events WHERE cursor < COALESCE("
            "  (SELECT cursor FROM events WHERE time >= ? ORDER BY cursor LIMIT 1),"
            "  (SELECT last_cursor + 1 FROM events_state))",
            (not_before,),
        )

    # ---- replicas and leases -------------------------------------------------

    def add_lease(self, replica: str, lease: int, digests: Iterable[str]) -> None:
        self._executemany(
            self._INSERT_NEW.format("leases (replica, lease, digest) VALUES (?, ?, ?)"),
            [(replica, lease, digest) for digest in set(digests)],
        )

    def release_lease(self, replica: str, lease: int) -> None:
        self._execute("DELETE FROM leases WHERE replica = ? AND lease = ?", (replica, lease))

    def heartbeat(self, replica: str, seen_epoch: int, reading: Sequence[str]) -> None:
        self._execute(
            "INSERT INTO replicas (id, last_seen, seen_epoch, reading) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen,"
            "   seen_epoch = excluded.seen_epoch, reading = excluded.reading",
            (replica, self.clock(), seen_epoch, json.dumps(sorted(set(reading)))),
        )

    def forget_replica(self, replica: str) -> None:
        self._execute("DELETE FROM leases WHERE replica = ?", (replica,))
        self._execute("DELETE FROM replicas WHERE id = ?", (replica,))
