"""Upload sessions of the push category, and the blobs they keep for a manifest.

A session (``POST /v2/<name>/blobs/uploads/``) is one store ingest that grows
chunk by chunk (PATCH) until ``PUT ?digest=`` verifies and commits it. Its
bytes go through the store's verified ingest (docs/design.md §4): an ingest
file in the blob directory's ``ingest/``, named by this replica, hashed as it
is written; only bytes that hash to the digest the client names are renamed
into place. The digest is known only at the end, so the ingest is opened
without one and told it before the commit (``Ingest.expect``).

How the bytes are kept is decided from the first four: zstd is stored as it
is, verified by its digest only (the store reads no zstd); anything else goes
through the layer decoder, which inflates gzip (digest-only) and passes plain
bytes through, so a layer's diff_id is recorded as a pull records it and the
manifest PUT's commit can check the config's diff_ids. A config or any plain
blob is hashed as given (its diff_id is its own digest). A blob beginning
with gzip's magic that is not gzip is refused (BLOB_UPLOAD_INVALID).

Each session holds a writing lease. Once committed, the blob is kept under it
until a manifest that uses it is committed, or ``--registry-upload-timeout``
passes: otherwise the end of the lease would sweep the blob before its
manifest arrives. Mounted and already stored blobs are kept the same way.

Sessions are files any replica can go on with (store/resumable.py): a session's
ingest file is named by a key hashed from its repository and its ID, so a
replica that did not open it finds it, takes it (a lock, and its own name),
hashes its bytes again and continues; a session of one repository is unknown
under another. Each request holds the file's lock: a second request of one
session at once is refused, whichever replica it reaches. So several replicas
behind one address need no session affinity, and a session outlives a restart
or a crash of the replica that served it: the file stays, and the next request
takes it as any other replica would. An idle session expires after
``--registry-upload-timeout``: a sweep every half timeout (at most a minute)
discards the ingest of each session the replica last served and ends its
lease, and removes any session's file untouched that long (left by a restart,
or by a replica that is gone). At most ``--registry-max-upload-sessions`` are
open at once on a replica (429 beyond).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from imagestore import errors
from imagestore.bridges import WorkerPool
from imagestore.distribution.errors import Code, RegistryError, too_many_requests
from imagestore.distribution.limits import EndpointLimits
from imagestore.oci import mediatypes as mt
from imagestore.store.blobs import BlobInfo, Encoding, Ingest
from imagestore.store.leases import Lease
from imagestore.store.resumable import IngestBusyError, ResumableFile
from imagestore.store.store import Store

log = logging.getLogger("imagestore.http")

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: bytes buffered before the ingest opens: enough to tell zstd from the rest
HEAD_BYTES = len(ZSTD_MAGIC)
#: the media type recorded for a blob that is not compressed (a config, a
#: plain tar, anything): its manifest says what it is
PLAIN = "application/octet-stream"
#: the longest wait between two sweeps of idle sessions (seconds)
MAX_SWEEP_INTERVAL = 60.0


def encoding_of(head: bytes) -> tuple[Encoding, str]:
    """How to ingest a blob that begins with ``head``, and the media type to record."""
    if head.startswith(ZSTD_MAGIC):
        return Encoding.RAW, mt.OCI_LAYER_ZSTD
    if head.startswith(GZIP_MAGIC):
        return Encoding.LAYER, mt.OCI_LAYER_GZIP
    return Encoding.LAYER, PLAIN


def unknown_session(session_id: str) -> RegistryError:
    return RegistryError(
        Code.BLOB_UPLOAD_UNKNOWN,
        f"upload {session_id[:64]} is not known here (never opened, finished, cancelled"
        " or expired)",
    )


def session_key(repository: str, session_id: str) -> str:
    """The key of a session's file: another repository's session is another file."""
    return hashlib.sha256(f"{repository}\n{session_id}".encode()).hexdigest()[:32]


def busy_session(session_id: str) -> RegistryError:
    return RegistryError(
        Code.BLOB_UPLOAD_INVALID, f"upload {session_id[:64]} is busy with another request"
    )


@dataclass(eq=False)
class Session:
    """One upload as this replica holds it: its file, and its ingest once the
    first bytes tell how to hash it, under this replica's lease."""

    id: str
    key: str
    lease: Lease
    file: ResumableFile
    last_used: float
    ingest: Ingest | None = None
    media_type: str = PLAIN
    #: the file is closed: committed, discarded or let go
    closed: bool = False
    #: bytes written as they are, before the ingest starts
    _raw: int = 0

    @property
    def size(self) -> int:
        """Bytes received so far (the next chunk starts here)."""
        return self.ingest.written if self.ingest is not None else self._raw

    # ---- blocking: on a worker thread, with the file locked --------------------

    def begin(self) -> bool:
        """Lock the file for a request (IngestBusyError: another holds it); False, and
        unlocked, when another replica took it since or it is gone (this memory is
        stale: on a shared directory, locking a file another machine unlinked
        fails with ESTALE)."""
        try:
            self.file.lock()
        except OSError:  # not IngestBusyError, which goes to the caller
            return False
        if self.file.current() and self.file.size() == self.size:
            return True
        with contextlib.suppress(OSError):
            self.file.unlock()
        return False

    def end(self) -> None:
        """Unlock the file after a request; its idle time starts now."""
        if not self.closed:
            try:
                self.file.touch()
            finally:
                self.file.unlock()

    def resume(self, store: Store) -> None:
        """Taken from another replica: hash the bytes it holds."""
        self._raw = self.file.size()
        if self._raw >= HEAD_BYTES:
            self._start(store, self.file.head(HEAD_BYTES))

    def write(self, store: Store, data: bytes | bytearray) -> None:
        """Append bytes (the first few are written as they are, until they tell
        how the rest is hashed)."""
        if self.ingest is None:
            if self._raw + len(data) < HEAD_BYTES:
                self.file.append(data)
                self._raw += len(data)
                return
            self._start(store, self.file.head(self._raw) + bytes(data[:HEAD_BYTES]))
        assert self.ingest is not None
        self.ingest.write(data)

    def _start(self, store: Store, head: bytes) -> None:
        encoding, self.media_type = encoding_of(head)
        self.ingest = store.resume_ingest(self.file, encoding)

    def commit(self, store: Store, digest: str) -> BlobInfo:
        """Verify every byte against ``digest`` and store the blob (DigestMismatch:
        nothing stored, the file removed). The digest stays leased by :attr:`lease`."""
        if self.ingest is None:
            self._start(store, self.file.head(HEAD_BYTES))
        assert self.ingest is not None
        self.ingest.expect(digest)
        try:
            return store.commit(self.ingest, self.lease, self.media_type)
        except BaseException:
            self.discard()
            raise
        finally:
            self._close(remove=False)  # renamed into place (the lock held till then)

    def discard(self) -> None:
        """Remove the file (locked, and still this replica's)."""
        self._close(remove=True)

    def let_go(self) -> None:
        """Close the file, leaving it to the replica that took it."""
        self._close(remove=False)

    def _close(self, *, remove: bool) -> None:
        if self.closed:
            return
        self.closed = True
        try:  # the ingest has its own descriptor: the file's keeps the lock till last
            if self.ingest is not None and remove:
                self.ingest.discard()
            elif self.ingest is not None:
                self.ingest.abandon()
        finally:
            self.file.close(remove=remove)


@dataclass(eq=False)
class Kept:
    """A stored blob kept for the manifest that will use it, until ``deadline``."""

    lease: Lease
    deadline: float


class Uploads:
    """The open sessions and the kept blobs of one endpoint. Touched on the
    event loop only; blocking work runs on ``pool``."""

    def __init__(self, store: Store, pool: WorkerPool, limits: EndpointLimits) -> None:
        self._store = store
        self._pool = pool
        self._timeout = limits.upload_timeout
        self._max_sessions = limits.max_upload_sessions
        #: the sessions this replica served last, by key
        self._sessions: dict[str, Session] = {}
        #: keys of the sessions a request of this replica holds
        self._busy: set[str] = set()
        self._kept: dict[str, Kept] = {}
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def max_blob_size(self) -> int:
        """The largest blob an upload may grow to (``--max-layer-size``)."""
        return self._store.max_layer_size

    # ---- sessions ------------------------------------------------------------

    async def open(self, repository: str) -> Session:
        """A new session (429 while ``--registry-max-upload-sessions`` are open)."""
        await self._make_room()
        session_id = secrets.token_hex(16)
        key = session_key(repository, session_id)
        lease = await self._pool.run(self._store.open_lease)
        try:
            file = await self._pool.run(self._store.create_resumable, key)
        except BaseException:
            await self._pool.run(self._store.end_lease, lease)
            raise
        session = Session(session_id, key, lease, file, time.monotonic())
        self._sessions[key] = session
        return session

    async def _make_room(self) -> None:
        """Room for one more session: the cap counts the sessions this replica
        holds, so those another replica took since are dropped first."""
        if len(self._sessions) < self._max_sessions:
            return
        idle = [s for s in self._sessions.values() if s.key not in self._busy]
        taken = await self._pool.run(lambda: [s for s in idle if not s.file.current()])
        for session in taken:
            if session.key not in self._busy and self._sessions.get(session.key) is session:
                await self._forget(session, Session.let_go)
        if len(self._sessions) >= self._max_sessions:
            raise too_many_requests(
                f"{self._max_sessions} uploads are open already"
                " (--registry-max-upload-sessions); finish or cancel one",
                None,
            )

    async def size(self, session_id: str, repository: str) -> int:
        """Bytes a session holds, whichever replica last served it (404
        BLOB_UPLOAD_UNKNOWN when there is no such session)."""
        key = session_key(repository, session_id)
        size = await self._pool.run(self._store.resumable_size, key)
        if size is None:
            raise unknown_session(session_id)
        return size

    @contextlib.asynccontextmanager
    async def using(self, session_id: str, repository: str) -> AsyncIterator[Session]:
        """Hold a session for one request: this replica's, or taken from the one
        that last served it. BLOB_UPLOAD_UNKNOWN when there is none, and
        BLOB_UPLOAD_INVALID while another request holds it (here or elsewhere)."""
        key = session_key(repository, session_id)
        if key in self._busy:
            raise busy_session(session_id)
        self._busy.add(key)
        try:
            session = self._sessions.get(key)
            if session is not None and not await self._begin(session):
                await self._forget(session, Session.let_go)  # another replica took it
                session = None
            if session is None:
                session = await self._take(session_id, key)
            try:
                yield session
            finally:
                session.last_used = time.monotonic()
                await self._pool.run(session.end)
                if session.closed:
                    self._sessions.pop(key, None)
        finally:
            self._busy.discard(key)

    async def _begin(self, session: Session) -> bool:
        try:
            return await self._pool.run(session.begin)
        except IngestBusyError:
            raise busy_session(session.id) from None

    async def _take(self, session_id: str, key: str) -> Session:
        """The session's file, taken (locked) from the replica that last wrote it."""
        await self._make_room()
        lease = await self._pool.run(self._store.open_lease)
        file: ResumableFile | None = None
        try:
            file = await self._pool.run(self._store.take_resumable, key)
        except IngestBusyError:
            raise busy_session(session_id) from None
        finally:
            if file is None:  # nothing taken: the lease has nothing to hold
                await self._pool.run(self._store.end_lease, lease)
        if file is None:
            raise unknown_session(session_id)
        session = Session(session_id, key, lease, file, time.monotonic())
        try:
            await self._pool.run(session.resume, self._store)
        except (errors.DataLoss, errors.SizeLimitExceeded) as exc:
            await self._forget(session, Session.discard)  # bytes the store refuses
            raise refused_content(exc) from None
        except BaseException:
            await self._forget(session, Session.let_go)  # the bytes stay for a retry
            raise
        self._sessions[session.key] = session
        return session

    async def write(self, session: Session, data: bytes | bytearray) -> None:
        """Append to a session; past ``--max-layer-size``, or bytes the layer
        decoder refuses, end the session (413 SIZE_INVALID, 400 BLOB_UPLOAD_INVALID)."""
        if session.size + len(data) > self.max_blob_size:
            await self.cancel(session)
            raise RegistryError(
                Code.SIZE_INVALID,
                f"the blob would be larger than {self.max_blob_size} bytes (--max-layer-size);"
                " the upload is cancelled",
                status=413,
            )
        try:
            await self._pool.run(session.write, self._store, data)
        except (errors.DataLoss, errors.SizeLimitExceeded) as exc:
            await self.cancel(session)
            raise refused_content(exc) from None

    async def commit(self, session: Session, digest: str) -> BlobInfo:
        """Verify and store the session's blob (inside :meth:`using`); the
        session ends either way, and the blob is kept for its manifest."""
        self._sessions.pop(session.key, None)
        try:
            info = await self._pool.run(session.commit, self._store, digest)
        except BaseException:
            await self._pool.run(self._store.end_lease, session.lease)
            raise
        await self.keep(digest, session.lease)
        return info

    async def cancel(self, session: Session) -> None:
        """End a session (inside :meth:`using`): its file and its lease go."""
        await self._forget(session, Session.discard)

    async def _forget(self, session: Session, close: Callable[[Session], None]) -> None:
        """Drop a session from memory: ``close`` its file, end its lease."""
        self._sessions.pop(session.key, None)

        def end() -> None:
            try:
                close(session)
            finally:
                self._store.end_lease(session.lease)

        await self._pool.run(end)

    # ---- kept blobs ----------------------------------------------------------

    async def keep(self, digest: str, lease: Lease) -> None:
        """Keep a stored blob, leased by ``lease``, until a manifest uses it or
        the upload timeout passes (a lease it replaces ends)."""
        previous = self._kept.get(digest)
        self._kept[digest] = Kept(lease, time.monotonic() + self._timeout)
        if previous is not None:
            await self._pool.run(self._store.end_lease, previous.lease)

    async def mount(self, digest: str) -> bool:
        """Keep ``digest`` if the store holds it (True), as a cross-repository
        mount does: the endpoint serves the whole store, so any repository's
        blob may be mounted into any other."""

        def lease_if_stored() -> Lease | None:
            lease = self._store.open_lease()
            lease.add(digest)  # first: a collection either sees it or is done
            if self._store.stored(digest):
                return lease
            self._store.end_lease(lease)
            return None

        lease = await self._pool.run(lease_if_stored)
        if lease is None:
            return False
        await self.keep(digest, lease)
        return True

    async def release(self, digests: list[str]) -> None:
        """A committed manifest references these: they need no keeping now."""
        ended = [self._kept.pop(d).lease for d in dict.fromkeys(digests) if d in self._kept]
        if ended:
            await self._pool.run(self._end_leases, ended)

    def _end_leases(self, leases: list[Lease]) -> None:
        for lease in leases:
            self._store.end_lease(lease)

    # ---- expiry and the end --------------------------------------------------

    def start(self) -> None:
        """Sweep idle sessions and kept blobs past their time, in the background."""
        interval = min(self._timeout / 2, MAX_SWEEP_INTERVAL)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_every(interval))

    async def _sweep_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except errors.ImageStoreError as exc:  # the catalog unreachable: next time
                log.warning("sweeping expired uploads failed: %s", exc.message)
            except OSError as exc:  # a shared blob directory's hiccup (ESTALE, ENOLCK)
                log.warning("sweeping expired uploads failed: %s", exc)

    async def sweep(self) -> None:
        """End the sessions idle past the timeout, and remove the files of those
        no replica holds; end the leases of kept blobs past their time."""
        now = time.monotonic()
        for session in list(self._sessions.values()):
            if session.key in self._busy or now - session.last_used <= self._timeout:
                continue
            self._busy.add(session.key)
            try:
                await self._expire(session)
            finally:
                self._busy.discard(session.key)
        expired = [d for d, kept in self._kept.items() if kept.deadline < now]
        await self._pool.run(self._end_leases, [self._kept.pop(d).lease for d in expired])
        await self._pool.run(self._store.remove_idle_uploads)

    async def _expire(self, session: Session) -> None:
        """An idle session ends: its file removed, or left to the replica that
        took it; a request elsewhere holding it keeps it for the next sweep."""
        try:
            ours = await self._pool.run(session.begin)
        except IngestBusyError:
            return
        await self._forget(session, Session.discard if ours else Session.let_go)

    async def close(self) -> None:
        """At shutdown: every session's file let go of (kept, for its next
        request after a restart, here or on another replica), every lease ended."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for session in list(self._sessions.values()):
            if session.key not in self._busy:
                await self._forget(session, Session.let_go)
        kept = [k.lease for k in self._kept.values()]
        self._kept.clear()
        await self._pool.run(self._end_leases, kept)


def refused_content(exc: errors.ImageStoreError) -> RegistryError:
    """What bytes the store refuses become: too large (413) or not decodable."""
    if isinstance(exc, errors.SizeLimitExceeded):
        return RegistryError(
            Code.SIZE_INVALID,
            f"{exc.message} (--max-layer-size); the upload is cancelled",
            status=413,
        )
    return RegistryError(
        Code.BLOB_UPLOAD_INVALID, f"the upload's bytes were refused: {exc.message}"
    )
