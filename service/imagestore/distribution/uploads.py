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

Sessions live in this process's memory. With several replicas behind one
address they are not shared: every request of one upload must reach the
replica that opened it (clients use one connection per upload in practice; a
load balancer needs session affinity). An idle session expires after
``--registry-upload-timeout``: a sweep every half timeout (at most a minute)
discards its ingest and ends its lease. At most
``--registry-max-upload-sessions`` are open at once (429 beyond).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from imagestore import errors
from imagestore.bridges import WorkerPool
from imagestore.distribution.errors import Code, RegistryError, too_many_requests
from imagestore.distribution.limits import EndpointLimits
from imagestore.oci import mediatypes as mt
from imagestore.store.blobs import BlobInfo, Encoding, Ingest
from imagestore.store.leases import Lease
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


@dataclass(eq=False)
class Session:
    """One upload: its ingest (opened on the first bytes) under its lease."""

    id: str
    repository: str
    lease: Lease
    last_used: float
    #: one request at a time writes to a session
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _head: bytes = b""
    _ingest: Ingest | None = None
    _media_type: str = PLAIN
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def size(self) -> int:
        """Bytes received so far (the next chunk starts here)."""
        return len(self._head) + (self._ingest.written if self._ingest else 0)

    def range_header(self) -> str:
        """``Range`` as the spec's clients read it: ``0-<last byte>``; ``0-0`` when empty."""
        return f"0-{max(self.size - 1, 0)}"

    # ---- blocking: on a worker thread, one at a time (``lock``) ---------------

    def write(self, store: Store, data: bytes | bytearray) -> None:
        """Append bytes to the ingest (the first few wait for the encoding)."""
        if self._ingest is None:
            self._head += data
            if len(self._head) >= HEAD_BYTES:
                self._open(store)
            return
        self._ingest.write(data)

    def _open(self, store: Store) -> Ingest:
        encoding, self._media_type = encoding_of(self._head)
        self._ingest = self._stack.enter_context(store.ingest(self.lease, encoding=encoding))
        head, self._head = self._head, b""
        if head:
            self._ingest.write(head)
        return self._ingest

    def commit(self, store: Store, digest: str) -> BlobInfo:
        """Verify every byte against ``digest`` and store the blob (DigestMismatch:
        nothing stored). The digest stays leased by :attr:`lease`."""
        ingest = self._ingest or self._open(store)
        ingest.expect(digest)
        try:
            return store.commit(ingest, self.lease, self._media_type)
        finally:
            self._stack.close()  # a failed ingest's file is unlinked

    def discard(self) -> None:
        """Drop what was written (the ingest file is unlinked)."""
        self._stack.close()


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
        self._sessions: dict[str, Session] = {}
        self._kept: dict[str, Kept] = {}
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def max_blob_size(self) -> int:
        """The largest blob an upload may grow to (``--max-layer-size``)."""
        return self._store.max_layer_size

    # ---- sessions ------------------------------------------------------------

    async def open(self, repository: str) -> Session:
        """A new session (429 while ``--registry-max-upload-sessions`` are open)."""
        if len(self._sessions) >= self._max_sessions:
            raise too_many_requests(
                f"{self._max_sessions} uploads are open already"
                " (--registry-max-upload-sessions); finish or cancel one",
                None,
            )
        lease = await self._pool.run(self._store.open_lease)
        session = Session(uuid.uuid4().hex, repository, lease, time.monotonic())
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str, repository: str) -> Session:
        """The session of that repository, or BLOB_UPLOAD_UNKNOWN (an expired
        one too, before the sweep has removed it)."""
        session = self._sessions.get(session_id)
        if session is None or session.repository != repository or self._expired(session):
            raise unknown_session(session_id)
        return session

    def _expired(self, session: Session) -> bool:
        idle = time.monotonic() - session.last_used
        return not session.lock.locked() and idle > self._timeout

    @contextlib.asynccontextmanager
    async def using(self, session: Session) -> AsyncIterator[Session]:
        """Hold a session for one request; a second one at once is refused."""
        if session.lock.locked():
            raise RegistryError(
                Code.BLOB_UPLOAD_INVALID, f"upload {session.id} is busy with another request"
            )
        async with session.lock:
            try:
                yield session
            finally:
                session.last_used = time.monotonic()

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
        """Verify and store the session's blob; the session ends either way,
        and the blob is kept for its manifest."""
        del self._sessions[session.id]
        try:
            info = await self._pool.run(session.commit, self._store, digest)
        except BaseException:
            await self._pool.run(self._store.end_lease, session.lease)
            raise
        await self.keep(digest, session.lease)
        return info

    async def cancel(self, session: Session) -> None:
        """End a session: its ingest file and its lease go."""
        self._sessions.pop(session.id, None)
        await self._pool.run(self._end, session)

    def _end(self, session: Session) -> None:
        try:
            session.discard()
        finally:
            self._store.end_lease(session.lease)

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

    async def sweep(self) -> None:
        """Cancel expired sessions; end the leases of kept blobs past their time."""
        now = time.monotonic()
        for session in [s for s in self._sessions.values() if self._expired(s)]:
            # looked at again after each await: a request may have taken it since
            if self._expired(session):
                await self.cancel(session)
        expired = [d for d, kept in self._kept.items() if kept.deadline < now]
        await self._pool.run(self._end_leases, [self._kept.pop(d).lease for d in expired])

    async def close(self) -> None:
        """At shutdown: every session's ingest discarded, every lease ended."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for session in list(self._sessions.values()):
            await self.cancel(session)
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
