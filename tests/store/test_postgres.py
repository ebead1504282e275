"""The PostgreSQL catalog's own behaviour, where several processes share one
database (each ``PostgresCatalog`` here stands for one: its own pool and
locks): migrations run once, writers take turns in commit order, a read waits
for no writer, the generation moves with another process's commit (read at
once, heard by notification a moment later, None while the listener is cut
off, and its watchers told when it is back); and the schema's version and
``--catalog``'s values. (What every catalog must do is
the contract suite in the other modules of ``tests/store``.)"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from imagestore import errors
from imagestore.store.parts import catalog_factory, sqlite_catalog
from imagestore.store.postgres import MIGRATIONS, STATE_TABLE, WRITE_LOCK_KEY, PostgresCatalog
from imagestore.store.records import BlobRow, EventRow
from tests.pg import Cluster

#: seconds before a thread that should have finished is declared stuck (a
#: failure detector for a deadlock, not a wait for a race)
STUCK = 60


def blob(n: int) -> BlobRow:
    return BlobRow("sha256:" + f"{n:064x}", 3, "application/octet-stream", None, None, n)


@pytest.fixture
def admin(url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(url, autocommit=True) as connection:
        yield connection


def test_a_version_1_catalog_is_migrated_and_keeps_its_rows(
    url: str, admin: psycopg.Connection
) -> None:
    with admin.transaction():
        admin.execute(STATE_TABLE)
        admin.execute(MIGRATIONS[0])
        admin.execute("UPDATE catalog_state SET schema_version = 1")
        admin.execute(
            "INSERT INTO blobs VALUES (%s, 3, 'application/octet-stream', NULL, NULL, 1)",
            (blob(1).digest,),
        )
    catalog = PostgresCatalog(url)
    try:
        assert catalog.schema_version == len(MIGRATIONS) == 6
        with catalog.transaction() as writer:
            writer.record_blob_sources([blob(1).digest], "registry.test", "team/app", 2)
        with catalog.reading() as reader:
            assert reader.blob(blob(1).digest) == blob(1)
            assert reader.blob_sources(blob(1).digest, "registry.test") == ["team/app"]
            assert reader.event_bounds() == (1, 0)
    finally:
        catalog.close()


def test_a_catalog_from_a_newer_imagestore_is_refused(url: str, admin: psycopg.Connection) -> None:
    PostgresCatalog(url).close()
    admin.execute("UPDATE catalog_state SET schema_version = 999")
    with pytest.raises(errors.CatalogTooNew, match="newer than this imagestore") as refused:
        PostgresCatalog(url)
    assert refused.value.metadata == {"version": "999", "supported": "6"}


def test_processes_opening_a_new_database_at_once_migrate_it_once(url: str) -> None:
    start = threading.Barrier(4)

    def open_catalog() -> int:
        start.wait(STUCK)
        catalog = PostgresCatalog(url)
        try:
            return catalog.schema_version
        finally:
            catalog.close()

    with ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(lambda _: open_catalog(), range(4), timeout=STUCK))
    assert versions == [6] * 4


def _waiting_for_the_writers_lock(admin: psycopg.Connection) -> int:
    row = admin.execute(
        "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchone()
    return 0 if row is None else int(row[0])


def test_writers_of_two_processes_take_turns_and_cursors_follow_commit_order(
    url: str,
    admin: psycopg.Connection,
) -> None:
    first, second = PostgresCatalog(url), PostgresCatalog(url)
    release = threading.Event()
    holding = threading.Event()
    try:

        def hold_the_lock() -> int:
            with first.transaction() as db:
                holding.set()
                assert release.wait(STUCK)
                db.record_blob(blob(1))
                return db.append_events([EventRow("tag", name="a:1")] * 2, 1)

        def write_after() -> tuple[int, bool]:
            with second.transaction() as db:
                seen = db.blob(blob(1).digest) is not None  # the first one's commit
                return db.append_events([EventRow("tag", name="b:1")], 2), seen

        with ThreadPoolExecutor(2) as pool:
            held = pool.submit(hold_the_lock)
            assert holding.wait(STUCK)
            waiting = pool.submit(write_after)
            # The second writer's BEGIN waits for the lock: polled in pg_locks.
            while _waiting_for_the_writers_lock(admin) == 0:
                assert not waiting.done(), waiting.result()
                admin.execute("SELECT pg_sleep(0.01)")
            release.set()
            assert held.result(STUCK) == 2
            assert waiting.result(STUCK) == (3, True)
        with second.reading() as reader:
            assert [(e.cursor, e.name) for e in reader.events_after(0, 10)] == [
                (1, "a:1"),
                (2, "a:1"),
                (3, "b:1"),
            ]
    finally:
        first.close()
        second.close()


def test_a_read_waits_for_no_writer_of_another_process(url: str) -> None:
    writer, reader = PostgresCatalog(url), PostgresCatalog(url)
    try:
        with writer.transaction() as db:
            db.record_blob(blob(1))
            with reader.reading() as snapshot:  # another process, same moment
                assert snapshot.blob(blob(1).digest) is None
                assert snapshot.blob_count() == 0
        with reader.reading() as snapshot:
            assert snapshot.blob(blob(1).digest) == blob(1)
    finally:
        writer.close()
        reader.close()


class Heard:
    """What a catalog's change listener was told, in order (a queue to wait on)."""

    def __init__(self, catalog: PostgresCatalog) -> None:
        self.told: queue.Queue[int] = queue.Queue()
        catalog.watch_changes(self.told.put)

    def next(self) -> int:
        return self.told.get(timeout=STUCK)


def event(name: str) -> EventRow:
    return EventRow("tag", "", name, "", {})


def test_the_generation_moves_with_another_process_s_commit(url: str) -> None:
    first, second = PostgresCatalog(url), PostgresCatalog(url)
    heard = Heard(second)
    try:
        before = second.confirm_generation()
        assert before is not None
        assert second.generation == before  # heard of every commit so far, no query
        assert second.confirm_generation() == before  # nothing changed: answers may be kept
        with first.transaction() as db:
            db.record_blob(blob(1))
            db.append_events([event("a:1"), event("a:2")], 1)
            assert second.confirm_generation() == before  # not committed yet
        moved = second.confirm_generation()  # at once: it reads the counter
        assert moved is not None
        assert moved > before
        assert asyncio.run(second.confirm_generation_async()) == moved  # the loop's way
        assert heard.next() == 2  # the notification: the last cursor of the change
        assert second.generation == moved
        with first.transaction(rollback=True) as db:
            db.record_blob(blob(2))
            db.append_events([event("b:1")], 2)
        assert second.confirm_generation() == moved  # undone: nothing to see
        with first.transaction() as db:
            db.record_blob(blob(3))  # no events: nobody to wake, the generation moves
        with first.transaction() as db:
            db.append_events([event("c:1")], 3)
        assert heard.next() == 3  # in commit order, the change without events not told
        assert second.generation == moved + 2 == second.confirm_generation()
    finally:
        first.close()
        second.close()


def test_a_process_s_own_commit_moves_its_generation_and_is_not_told_again(url: str) -> None:
    # Opened last: its listener read the counter after every commit so far
    # (opening one commits a migration step that notifies nobody's watchers).
    other, catalog = PostgresCatalog(url), PostgresCatalog(url)
    heard = Heard(catalog)
    try:
        before = catalog.generation
        assert before is not None
        with catalog.transaction() as db:
            db.append_events([event("a:1")], 1)
        assert catalog.generation == before + 1  # its own commit: known at once
        with other.transaction() as db:  # after it, in commit order
            db.append_events([event("b:1")], 2)
        assert heard.next() == 2  # only the other process's change is told
        assert catalog.generation == before + 2
    finally:
        catalog.close()
        other.close()


def test_the_generation_is_none_while_the_database_cannot_be_reached(
    url: str, postgres_cluster: Cluster
) -> None:
    catalog = PostgresCatalog(url)
    heard = Heard(catalog)
    database = url.split("/")[3].split("?")[0]
    try:
        assert catalog.generation is not None
        assert asyncio.run(catalog.confirm_generation_async()) == catalog.generation
        with psycopg.connect(postgres_cluster.url("postgres"), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            try:
                ended = admin.execute(
                    "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
                    " WHERE datname = %s",
                    (database,),
                ).fetchall()
                assert ended
                assert all(row[0] for row in ended)
                assert catalog.confirm_generation() is None  # its connection was lost
                assert asyncio.run(catalog.confirm_generation_async()) is None
                deadline = time.monotonic() + STUCK
                while catalog.generation is not None:  # the listener finds it out
                    assert time.monotonic() < deadline, "the lost listener went unnoticed"
                    time.sleep(0.01)  # a poll with a deadline: the loss has no event
                with pytest.raises(errors.CatalogUnavailable), catalog.reading() as reader:
                    reader.blob_count()
            finally:
                admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        assert heard.next() == 0  # back: whatever it missed, read it again
        assert catalog.generation is not None
        assert catalog.generation == catalog.confirm_generation()
        with catalog.reading() as reader:  # the pool replaced its connections
            assert reader.blob_count() == 0
    finally:
        catalog.close()


def test_the_catalog_option_names_sqlite_or_a_postgresql_url(url: str) -> None:
    assert catalog_factory(None) is sqlite_catalog
    assert catalog_factory("") is sqlite_catalog
    for wrong in ("sqlite:///tmp/catalog.db", "/var/lib/catalog.db", "mysql://db/x"):
        with pytest.raises(errors.OptionInvalid) as refused:
            catalog_factory(wrong)
        assert refused.value.metadata == {"option": "catalog"}
    catalog = catalog_factory(url)(Path("/nonexistent"))  # the root plays no part
    try:
        assert catalog.kind == "postgresql"
    finally:
        catalog.close()


def test_a_writer_that_waits_too_long_for_the_writers_lock_is_unavailable(
    url: str, admin: psycopg.Connection
) -> None:
    catalog = PostgresCatalog(url, write_lock_timeout=0.2)
    try:
        with admin.transaction():  # a hung process holding the lock
            admin.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
            with (
                pytest.raises(errors.CatalogUnavailable, match="writers' lock was not granted"),
                catalog.transaction() as writer,
            ):
                writer.record_blob(blob(1))
        with catalog.transaction() as writer:  # its connection was not left half-way
            writer.record_blob(blob(1))
        with catalog.reading() as reader:
            assert reader.blob(blob(1).digest) == blob(1)
    finally:
        catalog.close()


def test_a_transaction_left_idle_loses_its_session_and_the_writers_lock(url: str) -> None:
    hung = PostgresCatalog(url, idle_in_transaction_timeout=0.3)
    other = PostgresCatalog(url)
    acquired = threading.Event()

    def write() -> None:
        with other.transaction() as writer:
            writer.record_blob(blob(2))
        acquired.set()

    def hang(pool: ThreadPoolExecutor) -> None:
        with hung.transaction() as writer:
            writer.record_blob(blob(1))
            pool.submit(write)
            # idle in its transaction: PostgreSQL ends the session, the other goes on
            assert acquired.wait(STUCK)

    try:
        with ThreadPoolExecutor(1) as pool, pytest.raises(errors.CatalogUnavailable):
            hang(pool)
        with other.reading() as reader:
            assert reader.blob(blob(1).digest) is None  # never committed
            assert reader.blob(blob(2).digest) == blob(2)
    finally:
        hung.close()
        other.close()


def test_a_singleton_is_free_for_another_process_as_soon_as_its_block_ends(url: str) -> None:
    """One replica's prune ended: another's starts at once, never PRUNE_RUNNING
    because the server had not yet ended the first one's session."""
    first, second = PostgresCatalog(url), PostgresCatalog(url)
    try:
        for _ in range(50):
            with first.singleton("prune") as held:
                assert held
            with second.singleton("prune") as held:
                assert held
    finally:
        first.close()
        second.close()
