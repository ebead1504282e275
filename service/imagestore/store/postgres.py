"""The PostgreSQL catalog: the same tables and migrations as the SQLite one,
in a database that several imagestore processes can share.

**Writers are serialised**, by a transaction-level advisory lock taken as the
first statement of every transaction (``pg_advisory_xact_lock``), at READ
COMMITTED. The store runs its own code inside :meth:`transaction` (it reads,
decides, then writes), so a transaction cannot be replayed by the catalog:
SERIALIZABLE would need a retry of the whole block on every serialisation
failure, which a context manager cannot do. Under the lock no other writer
runs, and at READ COMMITTED each statement sees every transaction committed
before it (the lock is granted only after the previous holder's commit is
visible), so the store's read-modify-write sequences are as safe as under
SQLite's ``BEGIN IMMEDIATE``, with no serialisation failures or deadlocks to
retry: readers take no locks that a writer waits for. The events journal's
cursors are consecutive and in commit order for the same reason. Inside one
process a lock also keeps waiting writers from holding pooled connections.

**Reads** run at REPEATABLE READ, READ ONLY: one snapshot for the block that
never waits for a writer (MVCC) and never fails with a serialisation error.

**The generation** is a counter row (``catalog_state.generation``) that every
committing transaction bumps in its last statement, and announces in the same
transaction with ``NOTIFY imagestore_changes, '<generation> <last cursor>
<origin>'`` (delivered at commit, in commit order; the cursor is 0 when it
wrote no events; the origin names the catalog object that committed, so that
its own commits do not wake its watchers twice). Each catalog holds one
listening connection on a thread of its own: :attr:`generation` is the latest
number it heard (or this process committed), with no query, and None while that
connection is lost (it reconnects, reads the counter again, then tells its
watchers that events may have been missed).
Another process's commit reaches it a moment after that process saw it commit,
so :meth:`confirm_generation` reads the counter itself, for answers that must
not lag (docs/design.md §4), on a connection of its own (and
:meth:`confirm_generation_async` on one of the event loop's, which it does not
block); when the database cannot be reached it is None rather than an error.

The schema version is in ``catalog_state`` too (SQLite's ``PRAGMA
user_version``); migrations run under the writers' lock, so two processes
opening one database at once migrate it once. Text columns use the "C"
collation: ordering and prefix ranges compare bytes, as SQLite does, whatever
the database's locale. A lost connection is CatalogUnavailable (UNAVAILABLE):
the pool checks its idle connections then, and the next call gets fresh ones.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from imagestore import errors
from imagestore.store.catalog import MAX_SOURCES_PER_BLOB
from imagestore.store.records import EventRow, ImageRow
from imagestore.store.sql import SqlReader, SqlWriter

#: connections kept open at least, and at most (readers, the writer, a migration)
POOL_MIN_SIZE = 2
POOL_MAX_SIZE = 20
#: seconds to wait for a connection (the database at start, or a free pooled one)
CONNECT_TIMEOUT = 30.0
#: ... once the database was found unreachable: calls fail fast (UNAVAILABLE,
#: retry later) until a connection is had again, instead of each waiting 30 s
UNREACHABLE_CONNECT_TIMEOUT = 1.0
#: seconds the generation's query may take, and its connection's attempt (at least 2)
PROBE_TIMEOUT = 2
#: seconds between attempts to reach the database again for the generation
PROBE_RETRY_INTERVAL = 1.0
#: the channel every commit notifies: "<generation> <last event cursor, 0 for none> <origin>"
CHANGES_CHANNEL = "imagestore_changes"
#: the channel a collection notifies at its commit: "<collector epoch>"
COLLECTIONS_CHANNEL = "imagestore_collections"
#: seconds the listener waits for a notification before it checks whether to stop
LISTEN_WAKE_INTERVAL = 5.0
#: the advisory lock every writing transaction holds until it ends ("imgstore")
WRITE_LOCK_KEY = 0x696D6773746F7265
#: the session-level advisory locks of the one-at-a-time operations (Store.prune, check)
SINGLETON_KEYS = {"prune": WRITE_LOCK_KEY + 1, "check": WRITE_LOCK_KEY + 2}
#: seconds a transaction waits for the writers' lock before it fails (UNAVAILABLE, to
#: retry): a replica that hangs holding it must not stop the others for good
WRITE_LOCK_TIMEOUT = 30.0
#: seconds a connection may sit idle inside a transaction before PostgreSQL ends its
#: session (and so releases the writers' lock a hung replica holds)
IDLE_IN_TRANSACTION_TIMEOUT = 60.0

#: the catalog's own state: its schema version, and the generation every commit bumps
STATE_TABLE = """
    CREATE TABLE IF NOT EXISTS catalog_state (
        id                SMALLINT PRIMARY KEY CHECK (id = 0),
        schema_version    INTEGER NOT NULL,
        generation        BIGINT NOT NULL
    );
    INSERT INTO catalog_state (id, schema_version, generation) VALUES (0, 0, 0)
        ON CONFLICT (id) DO NOTHING;
"""

# Each entry migrates the schema from version i to i + 1 (as sqlite.MIGRATIONS).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE blobs (
        digest            TEXT COLLATE "C" PRIMARY KEY,
        size              BIGINT NOT NULL,
        media_type        TEXT COLLATE "C" NOT NULL,
        diff_id           TEXT COLLATE "C",
        uncompressed_size BIGINT,
        stored_at         BIGINT NOT NULL
    );
    CREATE INDEX blobs_by_diff_id ON blobs(diff_id) WHERE diff_id IS NOT NULL;

    CREATE TABLE images (
        id                TEXT COLLATE "C" PRIMARY KEY,   -- config digest
        created           BIGINT,                         -- config "created", ns since epoch
        stored_at         BIGINT NOT NULL,                -- when first stored here, ns
        size              BIGINT NOT NULL,                -- sum of uncompressed layer sizes
        content_size      BIGINT NOT NULL,                -- its distinct blobs' bytes on disk
        os                TEXT COLLATE "C" NOT NULL,
        architecture      TEXT COLLATE "C" NOT NULL,
        variant           TEXT COLLATE "C" NOT NULL,
        labels            TEXT COLLATE "C" NOT NULL,      -- JSON object
        last_tag_time     BIGINT
    );
    CREATE INDEX images_newest_first ON images((COALESCE(created, 0)) DESC, id DESC);

    CREATE TABLE targets (
        digest            TEXT COLLATE "C" PRIMARY KEY,   -- a manifest or an index blob
        media_type        TEXT COLLATE "C" NOT NULL,
        kind              TEXT COLLATE "C" NOT NULL CHECK (kind IN ('manifest', 'index')),
        image_id          TEXT COLLATE "C" REFERENCES images(id),  -- manifests only
        stored_at         BIGINT NOT NULL
    );
    CREATE INDEX targets_by_image ON targets(image_id);

    -- manifest -> its config (position 0) and layers (1..n), base first
    CREATE TABLE manifest_blobs (
        manifest_digest   TEXT COLLATE "C" NOT NULL REFERENCES targets(digest),
        position          INTEGER NOT NULL,
        blob_digest       TEXT COLLATE "C" NOT NULL,
        media_type        TEXT COLLATE "C" NOT NULL,
        size              BIGINT NOT NULL,
        PRIMARY KEY (manifest_digest, position)
    );
    CREATE INDEX manifest_blobs_by_blob ON manifest_blobs(blob_digest);

    -- index -> child manifests, present locally or not
    CREATE TABLE index_children (
        index_digest      TEXT COLLATE "C" NOT NULL REFERENCES targets(digest),
        position          INTEGER NOT NULL,
        child_digest      TEXT COLLATE "C" NOT NULL,
        media_type        TEXT COLLATE "C" NOT NULL,
        size              BIGINT NOT NULL,
        platform          TEXT COLLATE "C" NOT NULL,      -- os/arch[/variant], "" if none
        PRIMARY KEY (index_digest, position)
    );
    CREATE INDEX index_children_by_child ON index_children(child_digest);

    CREATE TABLE names (
        name              TEXT COLLATE "C" PRIMARY KEY,   -- canonical: repo:tag or repo@digest
        repository        TEXT COLLATE "C" NOT NULL,
        tag               TEXT COLLATE "C",
        digest            TEXT COLLATE "C",
        target            TEXT COLLATE "C" NOT NULL REFERENCES targets(digest),
        created_at        BIGINT NOT NULL,
        updated_at        BIGINT NOT NULL
    );
    CREATE INDEX names_by_target ON names(target);
    """,
    """
    -- where a blob was pulled from or pushed to: push mounts from these
    CREATE TABLE blob_sources (
        seq               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- larger: later
        digest            TEXT COLLATE "C" NOT NULL REFERENCES blobs(digest) ON DELETE CASCADE,
        registry          TEXT COLLATE "C" NOT NULL,      -- a reference's domain
        repository        TEXT COLLATE "C" NOT NULL,      -- the path on it
        recorded_at       BIGINT NOT NULL,
        UNIQUE (digest, registry, repository)
    );
    CREATE INDEX blob_sources_newest ON blob_sources(digest, registry, seq);

    -- blob files Check found damaged: the next pull or load of them writes them again
    CREATE TABLE damaged_blobs (
        digest            TEXT COLLATE "C" PRIMARY KEY,
        problem           TEXT COLLATE "C" NOT NULL,      -- Check's kind, e.g. corrupt-blob
        found_at          BIGINT NOT NULL
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
        cursor            BIGINT PRIMARY KEY,             -- from events_state: commit order
        time              BIGINT NOT NULL,                -- commit time, ns since epoch
        kind              TEXT COLLATE "C" NOT NULL,      -- tag, untag, delete, pull...
        image_id          TEXT COLLATE "C" NOT NULL,      -- "" for none
        name              TEXT COLLATE "C" NOT NULL,      -- canonical, "" for none
        target            TEXT COLLATE "C" NOT NULL,      -- the manifest or index named
        labels            TEXT COLLATE "C" NOT NULL,      -- JSON object: the image's labels
        remote            TEXT COLLATE "C" NOT NULL,      -- a push's host/path
        reclaimed         BIGINT NOT NULL                 -- a prune's bytes freed
    );

    -- the last cursor given, one row: read and bumped by each transaction that
    -- writes events (under the writers' lock: commit order)
    CREATE TABLE events_state (
        id                INTEGER PRIMARY KEY CHECK (id = 0),
        last_cursor       BIGINT NOT NULL
    );
    INSERT INTO events_state (id, last_cursor) VALUES (0, 0);
    """,
    """
    -- replicas sharing the catalog: each one's last heartbeat (docs/design.md §4)
    CREATE TABLE replicas (
        id                TEXT COLLATE "C" PRIMARY KEY,  -- <root>/replica-id
        last_seen         BIGINT NOT NULL,      -- the catalog's clock, ns since epoch
        seen_epoch        BIGINT NOT NULL,      -- the collector epoch it had seen then
        reading           TEXT COLLATE "C" NOT NULL        -- JSON list: the digests it was reading
    );

    -- what each live operation protects from garbage collection
    CREATE TABLE leases (
        replica           TEXT COLLATE "C" NOT NULL,
        lease             BIGINT NOT NULL,       -- the lease's number in its replica
        digest            TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (replica, lease, digest)
    );
    CREATE INDEX leases_by_digest ON leases(digest);

    -- collections that deleted blob rows, counted: a heartbeat that has seen
    -- epoch n published its read set after the collection n committed
    CREATE TABLE collector_state (
        id                INTEGER PRIMARY KEY CHECK (id = 0),
        epoch             BIGINT NOT NULL
    );
    INSERT INTO collector_state (id, epoch) VALUES (0, 0);
    """,
    """
    -- which store this catalog is, and which blob directory is its own: the
    -- directory's store-id file names both, so another one is refused
    CREATE TABLE store_identity (
        id                INTEGER PRIMARY KEY CHECK (id = 0),
        store_id          TEXT COLLATE "C" NOT NULL,  -- 32 random hex digits
        blob_dir          TEXT COLLATE "C"            -- the first marked directory's nonce
    );
    INSERT INTO store_identity (id, store_id)
        VALUES (0, md5(random()::text || clock_timestamp()::text));
    """,
)

#: a lost connection: the network, the server, or the server ending an idle transaction
_LOST = (psycopg.OperationalError, psycopg.errors.IdleInTransactionSessionTimeout)
#: the last statements of a writing transaction: the generation moves with the
#: change, atomically, and every listener hears of it at the commit (``{cursor}``
#: an integer, ``{origin}`` hex digits to fill in)
_COMMIT_WRITE = (
    "WITH bumped AS (UPDATE catalog_state SET generation = generation + 1 WHERE id = 0"
    "   RETURNING generation)"
    f" SELECT generation, pg_notify('{CHANGES_CHANNEL}', generation || ' {{cursor}} {{origin}}')"
    " FROM bumped; COMMIT"
)
_BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
_GENERATION = "SELECT generation FROM catalog_state WHERE id = 0"


log = logging.getLogger("imagestore.store")

#: told the last cursor of a change another process committed with events, or 0
#: when changes may have been missed (the listener reconnected)
ChangeListener = Callable[[int], None]


def describe(url: str) -> str:
    """The database a URL names, for messages: no password, no other options."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "PostgreSQL (a URL that does not parse)"
    database = params.get("dbname") or params.get("user") or "?"
    host = params.get("host") or "the default socket"
    port = f":{params['port']}" if params.get("port") else ""
    return f"PostgreSQL database {database} on {host}{port}"


class PostgresCatalog:
    """The catalog in a PostgreSQL database. Implements
    :class:`~imagestore.store.catalog.Catalog`."""

    def __init__(
        self,
        url: str,
        *,
        min_size: int = POOL_MIN_SIZE,
        max_size: int = POOL_MAX_SIZE,
        write_lock_timeout: float = WRITE_LOCK_TIMEOUT,
        idle_in_transaction_timeout: float = IDLE_IN_TRANSACTION_TIMEOUT,
    ) -> None:
        self.url = url
        self.write_lock_timeout = write_lock_timeout
        self._idle_in_transaction_ms = int(idle_in_transaction_timeout * 1000)
        self._begin_write = (
            "BEGIN ISOLATION LEVEL READ COMMITTED;"
            f" SET LOCAL lock_timeout = {int(write_lock_timeout * 1000)};"
            f" SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})"
        )
        self.where = describe(url)
        try:
            conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise errors.OptionInvalid(
                f"--catalog: not a PostgreSQL URL: {exc}", metadata={"option": "catalog"}
            ) from None
        self._write_lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._probe: psycopg.Connection[Any] | None = None
        self._probe_retry_at = 0.0
        #: the event loop's connection for confirm_generation_async, opened by its first call
        self._loop_probe: psycopg.AsyncConnection[Any] | None = None
        self._loop_probe_retry_at = 0.0
        self._heard_lock = threading.Lock()
        #: the latest generation heard of (or committed here); None while not listening
        self._heard: int | None = None
        self._change_listeners: list[ChangeListener] = []
        self._collection_listeners: list[Callable[[int], None]] = []
        self._stopping = threading.Event()
        self._first_listen = threading.Event()
        #: names this catalog object in its notifications
        self._origin = secrets.token_hex(8)
        self._stop_channel = f"imagestore_stop_{self._origin}"
        self._listener: threading.Thread | None = None
        #: the last attempt to reach the database failed (see UNREACHABLE_CONNECT_TIMEOUT)
        self._unreachable = False
        self._pool = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True, "fallback_application_name": "imagestore"},
            timeout=CONNECT_TIMEOUT,
            name="imagestore-catalog",
            configure=self._configure,
            open=False,
        )
        try:
            # One connection first: a database that cannot be reached fails the
            # open at once with libpq's reason, not after the pool's retries.
            self._probe = self._connect_probe()
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
            self._migrate()
            self._listener = threading.Thread(
                target=self._listen, name="imagestore-catalog-listener", daemon=True
            )
            self._listener.start()
            self._first_listen.wait(CONNECT_TIMEOUT)
        except psycopg.OperationalError as exc:
            self.close()
            raise self._unavailable(exc) from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._stop_listening()
        with self._write_lock, self._probe_lock:
            if self._probe is not None:
                self._probe.close()
                self._probe = None
            loop_probe, self._loop_probe = self._loop_probe, None
            if loop_probe is not None:
                loop_probe.pgconn.finish()  # its close() is a coroutine; the loop may be gone
            self._pool.close()

    @property
    def kind(self) -> str:
        return "postgresql"

    @property
    def schema_version(self) -> int:
        with self._connection() as db, self._mapped():
            row = db.execute("SELECT schema_version FROM catalog_state WHERE id = 0").fetchone()
        return 0 if row is None else int(row[0])

    def _migrate(self) -> None:
        # Each step in its own transaction, under the writers' lock: a process
        # that waited for another's migration finds the version moved on.
        while True:
            with self.transaction() as writer:
                writer.db.execute(STATE_TABLE)
                row = writer.db.execute(
                    "SELECT schema_version FROM catalog_state WHERE id = 0"
                ).fetchone()
                version = int(row[0]) if row is not None else 0
                if version > len(MIGRATIONS):
                    raise errors.CatalogTooNew(
                        f"catalog schema version {version} ({self.where}) is newer than"
                        f" this imagestore ({len(MIGRATIONS)}); upgrade imagestore",
                        metadata={"version": str(version), "supported": str(len(MIGRATIONS))},
                    )
                if version == len(MIGRATIONS):
                    return
                writer.db.execute(MIGRATIONS[version])
                writer.db.execute(
                    "UPDATE catalog_state SET schema_version = %s WHERE id = 0", (version + 1,)
                )

    # ---- connections and their failures --------------------------------------

    def _configure(self, db: psycopg.Connection[Any]) -> None:
        """Every pooled connection: a transaction left idle (a hung process) ends
        with its session, releasing the writers' lock."""
        db.execute(f"SET idle_in_transaction_session_timeout = {self._idle_in_transaction_ms}")

    def _unavailable(self, exc: psycopg.Error) -> errors.CatalogUnavailable:
        """The error a lost or unreachable database is; the pool then checks its
        idle connections, so that the next call does not meet a dead one."""
        self._unreachable = True
        if not self._pool.closed:
            self._pool.check()
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return errors.CatalogUnavailable(f"catalog {self.where} is unavailable: {detail}")

    @contextmanager
    def _mapped(self) -> Iterator[None]:
        try:
            yield
        except _LOST as exc:
            raise self._unavailable(exc) from None

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        timeout = UNREACHABLE_CONNECT_TIMEOUT if self._unreachable else CONNECT_TIMEOUT
        try:
            with self._pool.connection(timeout=timeout) as db:
                self._unreachable = False
                yield db
        except psycopg.OperationalError as exc:  # no connection to be had
            raise self._unavailable(exc) from None

    # ---- transactions and snapshots ------------------------------------------

    @contextmanager
    def transaction(
        self, *, rollback: bool = False, bookkeeping: bool = False
    ) -> Iterator[PostgresWriter]:
        """One atomic, durable change at READ COMMITTED under the writers' lock."""
        with self._write_lock, self._connection() as db:
            try:
                db.execute(self._begin_write)
            except psycopg.errors.LockNotAvailable:
                _roll_back(db)
                raise errors.CatalogUnavailable(
                    f"catalog {self.where}: the writers' lock was not granted within"
                    f" {self.write_lock_timeout:g} s (another imagestore process holds it)"
                ) from None
            except _LOST as exc:
                raise self._unavailable(exc) from None
            writer = PostgresWriter(db)
            try:
                yield writer
            except BaseException as exc:
                _roll_back(db)
                if isinstance(exc, _LOST):
                    raise self._unavailable(exc) from None
                if isinstance(exc, psycopg.DataError):
                    # Values SQLite keeps and PostgreSQL cannot (a NUL in a
                    # config's strings): the content is refused, nothing stored.
                    raise errors.MalformedContent(
                        f"the catalog cannot store this content: {exc}"
                    ) from None
                raise
            if rollback:
                with self._mapped():
                    db.execute("ROLLBACK")
                return
            with self._mapped():
                if bookkeeping:  # leases and heartbeats change no answer: the generation stays
                    db.execute("COMMIT")
                    return
                row = db.execute(
                    _COMMIT_WRITE.format(cursor=int(writer.last_cursor), origin=self._origin)
                ).fetchone()
            if row is not None:
                self._committed_here(int(row[0]))

    @contextmanager
    def reading(self) -> Iterator[PostgresReader]:
        """One snapshot (REPEATABLE READ, READ ONLY): it waits for no writer."""
        with self._connection() as db:
            with self._mapped():
                db.execute(_BEGIN_READ)
            try:
                yield PostgresReader(db)
            except BaseException as exc:
                _roll_back(db)
                if isinstance(exc, _LOST):
                    raise self._unavailable(exc) from None
                raise
            with self._mapped():
                db.execute("COMMIT")

    @contextmanager
    def singleton(self, name: str) -> Iterator[bool]:
        """A session-level advisory lock on a connection of its own for the block:
        a process that dies releases it with its session."""
        try:
            db = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=int(CONNECT_TIMEOUT),
                fallback_application_name="imagestore",
            )
        except psycopg.OperationalError as exc:
            raise self._unavailable(exc) from None
        held = False
        try:
            with self._mapped():
                row = db.execute(
                    "SELECT pg_try_advisory_lock(%s)", (SINGLETON_KEYS[name],)
                ).fetchone()
            held = row is not None and bool(row[0])
            yield held
        finally:
            if held:  # at once: the server ends a closed session's locks a moment later
                with suppress(psycopg.Error):
                    db.execute("SELECT pg_advisory_unlock(%s)", (SINGLETON_KEYS[name],))
            db.close()  # a process that dies: the session's end releases the lock

    @property
    def shared(self) -> bool:
        return True

    @property
    def generation(self) -> int | None:
        # What the listener heard: no query. It may lag another process's commit
        # by the notification's delay (confirm_generation does not).
        return self._heard

    def confirm_generation(self) -> int | None:
        # A connection of its own, never a wait for the pool; an unreachable
        # database keeps no answers (None) and is tried again at most once per
        # PROBE_RETRY_INTERVAL.
        with self._probe_lock:
            if self._probe is None:
                if time.monotonic() < self._probe_retry_at or self._pool.closed:
                    return None
                try:
                    self._probe = self._connect_probe()
                except psycopg.Error:
                    self._probe_retry_at = time.monotonic() + PROBE_RETRY_INTERVAL
                    return None
            try:
                row = self._probe.execute(_GENERATION).fetchone()
            except psycopg.Error:
                self._probe.close()
                self._probe = None
                return None
            return None if row is None else int(row[0])

    async def confirm_generation_async(self) -> int | None:
        # One caller at a time (api/answers.py shares each read among callers).
        db = self._loop_probe
        if db is None or db.closed:
            if time.monotonic() < self._loop_probe_retry_at or self._pool.closed:
                return None
            try:
                db = await psycopg.AsyncConnection.connect(
                    self.url,
                    autocommit=True,
                    connect_timeout=PROBE_TIMEOUT,
                    fallback_application_name="imagestore",
                )
                await db.execute(f"SET statement_timeout = {PROBE_TIMEOUT * 1000}")
            except psycopg.Error:
                self._loop_probe_retry_at = time.monotonic() + PROBE_RETRY_INTERVAL
                return None
            self._loop_probe = db
        try:
            row = await (await db.execute(_GENERATION)).fetchone()
        except psycopg.Error:
            self._loop_probe = None
            db.pgconn.finish()
            return None
        return None if row is None else int(row[0])

    def watch_changes(self, listener: ChangeListener) -> None:
        with self._heard_lock:
            self._change_listeners.append(listener)

    def watch_collections(self, listener: Callable[[int], None]) -> None:
        with self._heard_lock:
            self._collection_listeners.append(listener)

    # ---- notifications -------------------------------------------------------

    def _committed_here(self, generation: int) -> None:
        with self._heard_lock:
            if self._heard is not None and generation > self._heard:
                self._heard = generation

    def _listen(self) -> None:
        """The listener thread: LISTEN, read the counter, then follow the
        notifications until the connection is lost; again after a pause."""
        lost = False
        while not self._stopping.is_set():
            try:
                with psycopg.connect(
                    self.url,
                    autocommit=True,
                    connect_timeout=PROBE_TIMEOUT,
                    # which replica's it is, for operators (pg_stat_activity)
                    fallback_application_name=f"imagestore-listener-{os.getpid()}",
                    keepalives_idle=10,
                    keepalives_interval=5,
                    keepalives_count=3,
                ) as db:
                    # LISTEN first: a commit after the counter's read is heard.
                    db.execute(
                        f"LISTEN {CHANGES_CHANNEL}; LISTEN {COLLECTIONS_CHANNEL};"
                        f" LISTEN {self._stop_channel}"
                    )
                    row = db.execute(_GENERATION).fetchone()
                    if lost:
                        log.info("catalog notifications are back (%s)", self.where)
                    lost = False
                    self._listening(None if row is None else int(row[0]))
                    while not self._stopping.is_set():
                        for note in db.notifies(timeout=LISTEN_WAKE_INTERVAL):
                            if note.channel == COLLECTIONS_CHANNEL:
                                self._collected(note.payload)
                            elif note.channel == CHANGES_CHANNEL:
                                self._heard_of(note.payload)
                            else:
                                break  # the stop channel: close() is waiting
            except Exception as exc:  # the thread must go on: it is the only listener
                if not lost and not self._stopping.is_set():
                    lost = True
                    log.warning(
                        "catalog notifications from %s lost, listening again: %s",
                        self.where,
                        str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc),
                    )
            finally:
                with self._heard_lock:
                    self._heard = None
                self._first_listen.set()
            self._stopping.wait(PROBE_RETRY_INTERVAL)

    def _listening(self, generation: int | None) -> None:
        with self._heard_lock:
            self._heard = generation
        self._first_listen.set()
        self._tell(0)  # whatever was committed while nobody listened: read again

    def _heard_of(self, payload: str) -> None:
        try:
            number, last_cursor, origin = payload.split()
            generation, cursor = int(number), int(last_cursor)
        except ValueError:
            return
        with self._heard_lock:
            if self._heard is not None and generation > self._heard:
                self._heard = generation
        if cursor and origin != self._origin:  # its own: the journal told its watchers
            self._tell(cursor)

    def _collected(self, payload: str) -> None:
        try:
            epoch = int(payload)
        except ValueError:
            return
        with self._heard_lock:
            listeners = list(self._collection_listeners)
        for listener in listeners:
            try:
                listener(epoch)
            except Exception:  # a listener's failure must not stop the notifications
                log.exception("catalog collection listener failed")

    def _tell(self, cursor: int) -> None:
        with self._heard_lock:
            listeners = list(self._change_listeners)
        for listener in listeners:
            try:
                listener(cursor)
            except Exception:  # a listener's failure must not stop the notifications
                log.exception("catalog change listener failed")

    def _stop_listening(self) -> None:
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is None:
            return
        # Wake its wait for notifications at once (it checks every
        # LISTEN_WAKE_INTERVAL anyway, should the database be out of reach).
        with suppress(psycopg.Error), self._pool.connection(timeout=PROBE_TIMEOUT) as db:
            db.execute(f"NOTIFY {self._stop_channel}")
        listener.join(LISTEN_WAKE_INTERVAL + PROBE_TIMEOUT)

    def _connect_probe(self) -> psycopg.Connection[Any]:
        probe = psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=PROBE_TIMEOUT,
            fallback_application_name="imagestore",
        )
        probe.execute(f"SET statement_timeout = {PROBE_TIMEOUT * 1000}")
        return probe


def _roll_back(db: psycopg.Connection[Any]) -> None:
    """End a failed block's transaction; a broken connection is left to the pool
    (which discards it)."""
    if db.closed or db.info.transaction_status not in (
        pq.TransactionStatus.INTRANS,
        pq.TransactionStatus.INERROR,
    ):
        return
    with suppress(psycopg.Error):
        db.execute("ROLLBACK")


#: the catalog's clock in SQL, ns since the epoch (the one heartbeats are judged by)
_CLOCK_NS = "((extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000)"


def _placeholders(sql: str) -> str:
    """The shared SQL's ``?`` as psycopg's ``%s`` (and a literal ``%`` as ``%%``)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresReader(SqlReader):
    """Queries on one connection inside one snapshot (the shared ones: store/sql.py)."""

    def __init__(self, db: psycopg.Connection[Any]) -> None:
        self.db = db

    def _execute(self, sql: str, args: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        # Without parameters psycopg reads no placeholders: the SQL goes as it is.
        return self.db.execute(_placeholders(sql), args) if args else self.db.execute(sql)

    def images(self, after: tuple[int, str] | None = None) -> Iterator[ImageRow]:
        # psycopg has every row already: hand over the rows, not a cursor.
        return iter(list(super().images(after)))

    # Sets of digests go as one array parameter.

    def blob_sizes(self, digests: Iterable[str]) -> dict[str, int]:
        wanted = sorted(set(digests))
        if not wanted:
            return {}
        rows = self.db.execute(
            "SELECT digest, size FROM blobs WHERE digest = ANY(%s)", (wanted,)
        ).fetchall()
        return dict(rows)

    def referenced_among(self, digests: Iterable[str]) -> set[str]:
        wanted = sorted(set(digests))
        if not wanted:
            return set()
        return {
            row[0]
            for row in self.db.execute(
                "SELECT blob_digest FROM manifest_blobs WHERE blob_digest = ANY(%(wanted)s)"
                " UNION SELECT digest FROM targets WHERE digest = ANY(%(wanted)s)"
                "   AND (kind = 'manifest' OR digest IN (SELECT target FROM names))",
                {"wanted": wanted},
            )
        }

    def leased(self, replicas: Iterable[str]) -> set[str]:
        wanted = sorted(set(replicas))
        if not wanted:
            return set()
        return {
            row[0]
            for row in self.db.execute(
                "SELECT DISTINCT digest FROM leases WHERE replica = ANY(%s)", (wanted,)
            )
        }

    def clock(self) -> int:
        row = self.db.execute(f"SELECT {_CLOCK_NS}").fetchone()
        assert row is not None
        return int(row[0])


class PostgresWriter(PostgresReader, SqlWriter):
    """Changes on the writer's connection, inside its transaction."""

    _INSERT_NEW = "INSERT INTO {} ON CONFLICT DO NOTHING"

    def __init__(self, db: psycopg.Connection[Any]) -> None:
        super().__init__(db)
        #: the last event cursor this transaction gave (0: none), for its notification
        self.last_cursor = 0

    def _executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = list(rows)
        if batch:
            self.db.cursor().executemany(_placeholders(sql), batch)

    def delete_blobs(self, digests: Iterable[str]) -> None:
        wanted = sorted(set(digests))
        if not wanted:
            return
        self.db.execute("DELETE FROM blob_sources WHERE digest = ANY(%s)", (wanted,))
        self.db.execute("DELETE FROM damaged_blobs WHERE digest = ANY(%s)", (wanted,))
        self.db.execute("DELETE FROM blobs WHERE digest = ANY(%s)", (wanted,))

    def clear_damaged(self, digests: Iterable[str]) -> None:
        wanted = sorted(set(digests))
        if wanted:
            self.db.execute("DELETE FROM damaged_blobs WHERE digest = ANY(%s)", (wanted,))

    def record_blob_sources(
        self, digests: Iterable[str], registry: str, repository: str, when: int
    ) -> None:
        wanted = list(dict.fromkeys(digests))
        if not wanted:
            return
        arguments = {
            "wanted": wanted,
            "registry": registry,
            "repository": repository,
            "when": when,
            "keep": MAX_SOURCES_PER_BLOB,
        }
        # Delete and insert again: the new row sorts as the newest.
        self.db.execute(
            "DELETE FROM blob_sources WHERE digest = ANY(%(wanted)s)"
            " AND registry = %(registry)s AND repository = %(repository)s",
            arguments,
        )
        self.db.execute(
            "INSERT INTO blob_sources (digest, registry, repository, recorded_at)"
            " SELECT b.digest, %(registry)s, %(repository)s, %(when)s FROM blobs b"
            " WHERE b.digest = ANY(%(wanted)s)",
            arguments,
        )
        self.db.execute(
            "DELETE FROM blob_sources WHERE seq IN ("
            "  SELECT seq FROM ("
            "    SELECT seq, row_number() OVER (PARTITION BY digest ORDER BY seq DESC) AS age"
            "    FROM blob_sources WHERE digest = ANY(%(wanted)s) AND registry = %(registry)s"
            "  ) ranked WHERE age > %(keep)s)",
            arguments,
        )

    def set_last_tag_time(self, image_ids: Iterable[str], when: int) -> None:
        wanted = sorted(set(image_ids))
        if wanted:
            self.db.execute(
                "UPDATE images SET last_tag_time = %s WHERE id = ANY(%s)", (when, wanted)
            )

    def delete_image(self, image_id: str) -> list[str]:
        manifests = [t.digest for t in self.manifests_of_image(image_id)]
        if manifests:
            self.db.execute(
                "DELETE FROM manifest_blobs WHERE manifest_digest = ANY(%s)", (manifests,)
            )
            self.db.execute("DELETE FROM targets WHERE digest = ANY(%s)", (manifests,))
        self.db.execute("DELETE FROM images WHERE id = %s", (image_id,))
        return manifests

    def append_events(self, events: Sequence[EventRow], when: int) -> int:
        self.last_cursor = super().append_events(events, when)
        return self.last_cursor

    # ---- replicas and leases -------------------------------------------------

    def holds_lease(self, replica: str, lease: int, *, heard_within: int | None = None) -> bool:
        # One round trip under the writers' lock; the heartbeat is judged by the
        # clock the collectors judge it by (clock()).
        row = self.db.execute(
            "SELECT EXISTS (SELECT 1 FROM leases WHERE replica = %(replica)s AND lease = %(lease)s)"
            " AND (%(within)s::bigint IS NULL OR EXISTS (SELECT 1 FROM replicas"
            f"   WHERE id = %(replica)s AND last_seen >= {_CLOCK_NS} - %(within)s::bigint))",
            {"replica": replica, "lease": lease, "within": heard_within},
        ).fetchone()
        assert row is not None
        return bool(row[0])

    def bump_collector_epoch(self) -> int:
        # Every replica's listener hears it at the commit and heartbeats then.
        row = self.db.execute(
            "WITH bumped AS (UPDATE collector_state SET epoch = epoch + 1 WHERE id = 0"
            "   RETURNING epoch)"
            f" SELECT epoch, pg_notify('{COLLECTIONS_CHANNEL}', epoch::text) FROM bumped"
        ).fetchone()
        assert row is not None
        return int(row[0])
