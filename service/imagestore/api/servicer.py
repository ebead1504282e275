"""ImageStoreService: thin async handlers over the store.

Each handler parses nothing itself beyond moving fields, runs the blocking
store call on a worker thread, and converts the result. Errors are domain
exceptions, mapped to statuses by the ErrorMapping interceptor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Generic, TypeVar, cast

import grpc
from imagestore import errors
from imagestore.addresses import is_loopback
from imagestore.api import convert
from imagestore.api.admission import DEFAULT_MAX_RESPONSE_BYTES
from imagestore.archive.load import LoadLimits, LoadProgress, load
from imagestore.archive.save import save
from imagestore.dockerconfig import Credentials
from imagestore.oci.digests import parse_digest
from imagestore.oci.references import normalize_domain
from imagestore.registry.client import RegistryClient
from imagestore.registry.progress import Emit, ProgressEvent
from imagestore.registry.pull import Puller, PullResult
from imagestore.registry.push import Pusher, PushResult
from imagestore.store.check import check
from imagestore.store.filters import parse_list_filters, parse_prune_filters
from imagestore.store.listing import list_images
from imagestore.store.models import ImageSummary
from imagestore.store.prune import disk_usage, prune
from imagestore.store.store import Store
from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]
# Chunks of a Load waiting for the loader thread: bounds memory to ~8 MiB.
LOAD_QUEUE_CHUNKS = 8
# Chunks (<= 1 MiB) a Save or ReadBlob reads ahead of its client: one keeps
# reading and sending overlapped (more bought no throughput on loopback), and
# is, with the chunk being sent and an open blob file, all an unread stream holds.
STREAM_AHEAD = 1
# Pool threads that advance Save and ReadBlob streams one step at a time: a step
# is a short read and hash, so a few threads serve any number of streams.
STREAM_WORKERS = min(16, (os.cpu_count() or 1) + 4)
# Room left in a ListImages response for its page token and framing.
LIST_PAGE_OVERHEAD = 1 << 10


class _CancelledError(Exception):
    """The client went away in the middle of a stream."""


async def _run(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(function, *args, **kwargs)


def _seen(future: asyncio.Future[Any]) -> None:
    """Mark a future's outcome as retrieved (whoever awaits it still gets it)."""
    if not future.cancelled():
        future.exception()


def _in_thread(function: Callable[[], T]) -> asyncio.Future[T]:
    """Run a long job (a whole Load) on its own thread, not the shared pool: it
    waits on its client's chunks, which must not starve other calls of workers.
    The stream cap bounds how many such threads exist."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(cast(T, result))

    def run() -> None:
        try:
            result = function()
        except BaseException as exc:  # handed to the awaiting coroutine
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name="imagestore-load", daemon=True).start()
    return future


class _Stepper(Generic[T]):
    """A blocking generator advanced a few items at a time by pool workers.

    Steps and the final close never overlap (a lock); a step after the close
    finds nothing, so a step still queued when the consumer left cannot
    restart the work."""

    def __init__(self, make: Callable[[], Generator[T, None, None]]) -> None:
        self._make = make
        self._generator: Generator[T, None, None] | None = None
        self._closed = False
        self._lock = threading.Lock()

    def step(self, count: int) -> tuple[list[T], bool]:
        """Up to ``count`` more items, and whether the generator is finished."""
        with self._lock:
            if self._closed:
                return [], True
            if self._generator is None:
                self._generator = self._make()
            items: list[T] = []
            for _ in range(count):
                try:
                    items.append(next(self._generator))
                except StopIteration:
                    self._closed = True
                    return items, True
            return items, False

    def close(self) -> None:
        """Close the generator (its ``finally`` blocks end its leases)."""
        with self._lock:
            self._closed = True
            if self._generator is not None:
                self._generator.close()


def _wrapped(
    chunks: Generator[bytes, None, None], wrap: Callable[..., T]
) -> Generator[T, None, None]:
    """Each chunk in its response message, built on the worker that read it (the
    bare chunk is dropped at once: a buffered or unsent item is one copy, not two)."""
    with contextlib.closing(chunks):
        for chunk in chunks:
            yield wrap(chunk=chunk)


async def _stream_in_steps(
    make: Callable[[], Generator[T, None, None]], pool: Executor, ahead: int = STREAM_AHEAD
) -> AsyncIterator[T]:
    """Run a blocking generator on ``pool``, up to ``ahead`` items in front of
    the consumer, so reading and hashing overlap with sending.

    No thread is held between steps: a stream whose client does not read
    costs its ``ahead`` buffered items and its generator's state (an open
    file), not a thread. When the consumer
    stops early (cancellation), the generator is closed on a pool thread,
    which releases its leases."""
    loop = asyncio.get_running_loop()
    stepper = _Stepper(make)
    buffered: deque[T] = deque()
    pending: asyncio.Future[tuple[list[T], bool]] | None = None
    finished = False
    try:
        while True:
            if pending is not None and (pending.done() or not buffered):
                step, pending = pending, None
                items, finished = await step
                buffered.extend(items)
            if pending is None and not finished and len(buffered) < ahead:
                pending = loop.run_in_executor(pool, stepper.step, ahead - len(buffered))
            if buffered:
                yield buffered.popleft()
            elif finished:
                return
    finally:
        if pending is not None:
            pending.cancel()  # not started: never runs; running: close() waits for it
        try:
            closing = loop.run_in_executor(pool, stepper.close)
        except RuntimeError:  # the pool is shut down (server stopping): close here
            stepper.close()
        else:
            await asyncio.shield(closing)


async def _with_progress(
    job: Callable[[Emit], Awaitable[T]],
) -> AsyncIterator[ProgressEvent | T]:
    """Run a pull or push as a task: its events as they come, then its result.
    If the caller goes away, the task is cancelled and awaited (its lease ends)."""
    events: asyncio.Queue[ProgressEvent | None] = asyncio.Queue()

    async def run() -> T:
        try:
            return await job(events.put_nowait)
        finally:
            events.put_nowait(None)

    task = asyncio.ensure_future(run())
    try:
        while (event := await events.get()) is not None:
            yield event
        yield await task
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})


def local_peer(peer: str) -> bool:
    """A gRPC peer string ("ipv4:127.0.0.1:5000", "ipv6:[::1]:5000", "unix:…") on this machine."""
    if peer.startswith("unix:"):
        return True
    kind, _, address = peer.partition(":")
    host = address.rsplit(":", 1)[0].strip("[]")
    return kind in ("ipv4", "ipv6") and is_loopback(host)


def check_credentials_transport(credentials: Credentials, secure: bool, peer: str) -> None:
    """Registry credentials travel only over TLS or from this machine."""
    if credentials and not secure and not local_peer(peer):
        raise errors.FailedPrecondition(
            "registry credentials are only accepted over TLS or from this machine",
            metadata={"reason": "credentials over plain text"},
        )


class ImageStoreServicer(pb_grpc.ImageStoreServiceServicer):
    """The service's handlers. ``max_response_bytes`` bounds a ListImages page
    and an Inspect answer; ``close()`` once the server has stopped."""

    def __init__(
        self,
        store: Store,
        registry: RegistryClient,
        *,
        secure_transport: bool = False,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        load_limits: LoadLimits | None = None,
    ) -> None:
        self.store = store
        self.load_limits = load_limits or LoadLimits()
        self.registry = registry
        self.puller = Puller(store, registry)
        self.pusher = Pusher(store, registry)
        self.secure_transport = secure_transport
        self.max_response_bytes = max_response_bytes
        self._steps = ThreadPoolExecutor(STREAM_WORKERS, thread_name_prefix="imagestore-stream")

    def close(self) -> None:
        """Let the stream steps still queued finish; then the pool's threads end."""
        self._steps.shutdown(wait=True)

    async def ListImages(
        self, request: pb.ListImagesRequest, context: Context
    ) -> pb.ListImagesResponse:
        filters = parse_list_filters(request.filters)
        # Each row is converted once, as it will be sent (labels cut when the
        # row alone would not fit), and the page ends before the byte budget.
        budget = self.max_response_bytes - LIST_PAGE_OVERHEAD
        rows: dict[str, pb.ImageSummary] = {}

        def measure(image: ImageSummary) -> int:
            # A row alone fits the budget with its tag and length prefix (<= 6 bytes).
            row = rows[image.id] = convert.image_summary(image, max_bytes=budget - 8)
            return convert.field_bytes(row)

        page = await _run(
            list_images,
            self.store,
            filters,
            show_all=request.all,
            page_size=request.page_size,
            page_token=request.page_token,
            max_bytes=budget,
            measure=measure,
        )
        return pb.ListImagesResponse(
            images=[rows[image.id] for image in page.images],
            next_page_token=page.next_page_token,
        )

    async def Inspect(self, request: pb.InspectRequest, context: Context) -> pb.InspectResponse:
        def inspect() -> pb.InspectResponse:  # on a worker: a large answer takes a while
            details = self.store.inspect(request.image, request.platform or None)
            return convert.inspect_response(
                details, include_raw=request.include_raw, max_bytes=self.max_response_bytes
            )

        return await _run(inspect)

    async def History(self, request: pb.HistoryRequest, context: Context) -> pb.HistoryResponse:
        rows = await _run(self.store.history, request.image, request.platform or None)
        return pb.HistoryResponse(entries=[convert.history_entry(row) for row in rows])

    async def Tag(self, request: pb.TagRequest, context: Context) -> pb.TagResponse:
        result = await _run(self.store.tag, request.source, request.target)
        return pb.TagResponse(
            target=result.target,
            image_ids=result.image_ids,
            displaced_image_ids=result.displaced,
        )

    async def Remove(self, request: pb.RemoveRequest, context: Context) -> pb.RemoveResponse:
        if not request.images:
            raise errors.InvalidArgument("name at least one image to remove")
        events = await _run(self.store.remove, list(request.images), force=request.force)
        return pb.RemoveResponse(events=[convert.remove_event(e) for e in events])

    async def Prune(self, request: pb.PruneRequest, context: Context) -> pb.PruneResponse:
        filters = parse_prune_filters(request.filters)
        result = await _run(
            prune, self.store, filters, all_images=request.all, dry_run=request.dry_run
        )
        return convert.prune_response(result)

    async def DiskUsage(
        self, request: pb.DiskUsageRequest, context: Context
    ) -> pb.DiskUsageResponse:
        return convert.disk_usage_response(await _run(disk_usage, self.store))

    async def Check(self, request: pb.CheckRequest, context: Context) -> pb.CheckResponse:
        return convert.check_response(await _run(check, self.store))

    def _credentials(self, auth: pb.RegistryAuth, context: Context) -> Credentials | None:
        """Registry credentials from the request; refused where they could be sniffed."""
        credentials = convert.credentials(auth)
        check_credentials_transport(credentials, self.secure_transport, context.peer())
        return credentials or None

    async def Pull(
        self, request: pb.PullRequest, context: Context
    ) -> AsyncIterator[pb.PullResponse]:
        credentials = self._credentials(request.auth, context)
        platforms = list(request.platforms)

        async def job(emit: Emit) -> PullResult:
            return await self.puller.pull(request.image, platforms, credentials, emit)

        async for event in _with_progress(job):
            if isinstance(event, ProgressEvent):
                yield pb.PullResponse(progress=convert.progress(event))
            else:
                yield convert.pull_result(event)

    async def Push(
        self, request: pb.PushRequest, context: Context
    ) -> AsyncIterator[pb.PushResponse]:
        credentials = self._credentials(request.auth, context)

        async def job(emit: Emit) -> PushResult:
            return await self.pusher.push(request.image, credentials, request.platform, emit)

        async for event in _with_progress(job):
            if isinstance(event, ProgressEvent):
                yield pb.PushResponse(progress=convert.progress(event))
            else:
                yield convert.push_result(event)

    async def Login(self, request: pb.LoginRequest, context: Context) -> pb.LoginResponse:
        credentials = self._credentials(request.auth, context)
        if credentials is None:
            raise errors.InvalidArgument("give a username and a password (or a token) to check")
        domain = normalize_domain(request.registry or "docker.io")
        await self.registry.login(domain, credentials)
        return pb.LoginResponse(status="Login Succeeded")

    async def Save(
        self, request: pb.SaveRequest, context: Context
    ) -> AsyncIterator[pb.SaveResponse]:
        images = list(request.images)

        def responses() -> Generator[pb.SaveResponse, None, None]:
            return _wrapped(save(self.store, images, request.platform), pb.SaveResponse)

        async for response in _stream_in_steps(responses, self._steps):
            yield response

    async def ReadBlob(
        self, request: pb.ReadBlobRequest, context: Context
    ) -> AsyncIterator[pb.ReadBlobResponse]:
        digest = parse_digest(request.digest)
        if request.offset < 0 or request.limit < 0:
            raise errors.InvalidArgument("offset and limit must not be negative")
        offset, limit = request.offset, request.limit or None

        def responses() -> Generator[pb.ReadBlobResponse, None, None]:
            return _wrapped(self._read_blob(digest, offset, limit), pb.ReadBlobResponse)

        async for response in _stream_in_steps(responses, self._steps):
            yield response

    def _read_blob(
        self, digest: str, offset: int, limit: int | None
    ) -> Generator[bytes, None, None]:
        """The blob's bytes under a lease; a whole read is also re-verified."""
        with self.store.lease() as lease:
            lease.add(digest)
            yield from self.store.read_verified(digest, offset, limit)

    async def Load(
        self, request_iterator: AsyncIterator[pb.LoadRequest], context: Context
    ) -> AsyncIterator[pb.LoadResponse]:
        """Chunks flow to a loader thread, at most LOAD_QUEUE_CHUNKS ahead; its
        progress flows back. If the client goes away, the loader fails and its
        lease removes whatever it had stored."""
        loop = asyncio.get_running_loop()
        chunks: queue.SimpleQueue[bytes | BaseException | None] = queue.SimpleQueue()
        slots = asyncio.Semaphore(LOAD_QUEUE_CHUNKS)
        events: asyncio.Queue[pb.LoadResponse | None] = asyncio.Queue()
        first = await anext(aiter(request_iterator), None)
        declared = first.declared_size if first is not None and first.declared_size > 0 else None

        def incoming() -> Iterator[bytes]:
            if first is not None and first.chunk:
                yield first.chunk
            while True:
                item = chunks.get()
                loop.call_soon_threadsafe(slots.release)
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item

        def progress(event: LoadProgress) -> None:
            loop.call_soon_threadsafe(events.put_nowait, convert.load_progress(event))

        def work() -> pb.LoadResponse:
            try:
                return convert.load_result(
                    load(
                        self.store,
                        incoming(),
                        declared_size=declared,
                        progress=progress,
                        limits=self.load_limits,
                    )
                )
            except errors.ImageStoreError as exc:
                # An expected refusal needs no traceback; without it, the loader's
                # frames and their megabyte buffers are freed now, not by a later GC.
                exc.__context__ = None
                raise exc.with_traceback(None) from None
            finally:
                loop.call_soon_threadsafe(events.put_nowait, None)

        async def feed() -> None:
            try:
                if first is not None:
                    async for message in request_iterator:
                        await slots.acquire()
                        chunks.put(message.chunk)
                chunks.put(None)
            except BaseException:
                chunks.put(_CancelledError("the client stopped sending"))
                raise

        worker = _in_thread(work)
        feeder = asyncio.ensure_future(feed())
        for job in (worker, feeder):
            # When the client has left, how the load or the feeding ended is
            # nobody's news: mark it seen, so asyncio does not log it as lost.
            job.add_done_callback(_seen)
        try:
            while (event := await events.get()) is not None:
                yield event
            yield await worker
        finally:
            if not feeder.done():
                feeder.cancel()
            if not worker.done():
                chunks.put(_CancelledError("load cancelled"))
                await asyncio.wait({worker})
