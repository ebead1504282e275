"""ImageStoreService: thin async handlers over the store.

Each handler parses nothing itself beyond moving fields, runs its blocking work
through a bridge of ``imagestore/bridges.py`` (the one cancellation rule) on a
pool of ``api/pools.py``, and converts the result. Errors are domain exceptions,
mapped to statuses by the ErrorMapping interceptor.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import Any, TypeVar

import grpc

from imagestore import errors
from imagestore.addresses import is_loopback
from imagestore.api import convert
from imagestore.api.admission import DEFAULT_MAX_RESPONSE_BYTES, Limits
from imagestore.api.answers import RecentAnswers
from imagestore.api.events import EventHub
from imagestore.api.metrics import count_load, count_pull, count_push
from imagestore.api.pools import Pools
from imagestore.archive.load import LoadLimits, LoadProgress, load
from imagestore.archive.save import save
from imagestore.bridges import InputCancelledError, with_events
from imagestore.dockerconfig import Credentials
from imagestore.oci.digests import parse_digest
from imagestore.oci.references import normalize_domain
from imagestore.registry.client import RegistryClient
from imagestore.registry.progress import ProgressEvent
from imagestore.registry.pull import Puller
from imagestore.registry.push import Pusher
from imagestore.store.filters import (
    parse_event_filters,
    parse_list_filters,
    parse_prune_filters,
)
from imagestore.store.models import CheckProgress, ImageSummary
from imagestore.store.store import Store
from imagestore.telemetry import Telemetry
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
# Room left in a ListImages response for its page token and framing.
LIST_PAGE_OVERHEAD = 1 << 10
# Image IDs a StatBlob lists: a base layer may be shared by thousands of images,
# and the answer must stay small; the count says how many there are.
STAT_BLOB_IMAGES = 100
# Check progress messages in all, about: one per percent of blobs or bytes.
CHECK_PROGRESS_STEPS = 100


def _wrapped(
    chunks: Generator[bytes, None, None], wrap: Callable[..., T]
) -> Generator[T, None, None]:
    """Each chunk in its response message, built on the worker that read it (the
    bare chunk is dropped at once: a buffered or unsent item is one copy, not two)."""
    with contextlib.closing(chunks):
        for chunk in chunks:
            yield wrap(chunk=chunk)


def _at_offsets(
    chunks: Generator[bytes, None, None], offset: int
) -> Generator[pb.ReadBlobResponse, None, None]:
    """ReadBlob's messages, each with the offset of its first byte in the blob."""
    with contextlib.closing(chunks):
        for chunk in chunks:
            yield pb.ReadBlobResponse(chunk=chunk, offset=offset)
            offset += len(chunk)


def _platform(value: pb.Platform, field: str = "platform") -> str:
    """A request's platform as the text the store and the registry take ("": unset)."""
    with errors.about_field(field):
        return convert.request_platform(value)


def _progressed(sent: CheckProgress, now: CheckProgress) -> bool:
    """Worth a Check progress message: a percent more blobs or bytes, or the end."""
    if now.blobs_checked == now.blobs_total:
        return now.blobs_checked != sent.blobs_checked
    blobs = (now.blobs_checked - sent.blobs_checked) * CHECK_PROGRESS_STEPS
    size = (now.bytes_checked - sent.bytes_checked) * CHECK_PROGRESS_STEPS
    return blobs >= now.blobs_total or size >= now.bytes_total


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
        raise errors.CredentialsInsecure(
            "registry credentials are only accepted over TLS or from this machine"
        )


class ImageStoreServicer(pb_grpc.ImageStoreServiceServicer):
    """The service's handlers. Their blocking work runs on ``pools``, which the
    server shuts down once it has stopped; ``max_response_bytes`` bounds a
    ListImages page and an Inspect answer.

    ``limits`` (the admission limits; when given, its ``max_response_bytes``
    is the one used), ``secure_transport`` (TLS), ``mutual_tls`` and
    ``token_auth`` are what the server runs with, as GetServerInfo reports them.
    """

    def __init__(
        self,
        store: Store,
        registry: RegistryClient,
        *,
        pools: Pools,
        secure_transport: bool = False,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        load_limits: LoadLimits | None = None,
        limits: Limits | None = None,
        mutual_tls: bool = False,
        token_auth: bool = False,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.store = store
        self.load_limits = load_limits or LoadLimits()
        self.registry = registry
        self.puller = Puller(store, registry)
        self.pusher = Pusher(store, registry)
        self.secure_transport = secure_transport
        self.limits = limits or Limits(max_response_bytes=max_response_bytes)
        self.max_response_bytes = self.limits.max_response_bytes
        self._setup = convert.ServerSetup(
            root=str(store.root),
            catalog=store.catalog_kind,
            tls=secure_transport,
            mutual_tls=mutual_tls,
            token_auth=token_auth,
            limits=self.limits,
            max_layer_size=store.max_layer_size,
            load=self.load_limits,
            registry=registry.options,
        )
        self._pools = pools
        #: where pulls, pushes and loads are counted (by default, beside the registry's requests)
        self.telemetry = telemetry if telemetry is not None else registry.transport.telemetry
        self._answers = RecentAnswers(store)
        #: the watchers of WatchEvents; the server closes it when it stops
        self.events = EventHub(store, pools)

    async def _unary(self, job: Callable[[], T]) -> T:
        return await self._pools.unary.run(job)

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

        page = await self._pools.unary.run(
            self.store.list_images,
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
        platform = _platform(request.platform)

        def inspect() -> pb.InspectResponse:  # on a worker: a large answer takes a while
            details = self.store.inspect(request.image, platform or None)
            return convert.inspect_response(
                details, include_raw=request.include_raw, max_bytes=self.max_response_bytes
            )

        return await self._answers.answer(
            "Inspect", request, lambda: self._pools.unary.run(inspect)
        )

    async def History(self, request: pb.HistoryRequest, context: Context) -> pb.HistoryResponse:
        platform = _platform(request.platform)

        def history() -> pb.HistoryResponse:
            rows = self.store.history(request.image, platform or None)
            return pb.HistoryResponse(entries=[convert.history_entry(row) for row in rows])

        return await self._answers.answer(
            "History", request, lambda: self._pools.unary.run(history)
        )

    async def Tag(self, request: pb.TagRequest, context: Context) -> pb.TagResponse:
        result = await self._pools.unary.run(self.store.tag, request.source, request.target)
        return pb.TagResponse(
            target=convert.name(result.target),
            image_ids=result.image_ids,
            displaced_image_ids=result.displaced,
        )

    async def Remove(self, request: pb.RemoveRequest, context: Context) -> pb.RemoveResponse:
        if not request.images:
            raise errors.ArgumentMissing("name at least one image to remove", field="images")
        results = await self._pools.unary.run(
            self.store.remove, list(request.images), force=request.force
        )
        return pb.RemoveResponse(
            results=[convert.remove_result(result, i) for i, result in enumerate(results)]
        )

    async def Prune(self, request: pb.PruneRequest, context: Context) -> pb.PruneResponse:
        filters = parse_prune_filters(request.filters)
        result = await self._pools.unary.run(
            self.store.prune, filters, all_images=request.all, dry_run=request.dry_run
        )
        return convert.prune_response(result, self.max_response_bytes)

    async def DiskUsage(
        self, request: pb.DiskUsageRequest, context: Context
    ) -> pb.DiskUsageResponse:
        usage = await self._pools.unary.run(
            self.store.disk_usage, page_size=request.page_size, page_token=request.page_token
        )
        return convert.disk_usage_response(usage)

    async def Check(
        self, request: pb.CheckRequest, context: Context
    ) -> AsyncIterator[pb.CheckResponse]:
        """Findings as they come; progress thinned to about one message per
        percent (the store reports each batch of reads). Leaving stops the check."""
        sent: CheckProgress | None = None
        async for event in self._pools.streams.stream(self.store.check_stream, STREAM_AHEAD):
            if isinstance(event, CheckProgress):
                if sent is not None and not _progressed(sent, event):
                    continue
                sent = event
            yield convert.check_response(event)

    async def WatchEvents(
        self, request: pb.WatchEventsRequest, context: Context
    ) -> AsyncIterator[pb.WatchEventsResponse]:
        """The journal after the request's cursor, ``caught_up``, then each change
        as it commits, until the call ends or the server stops."""
        filters = parse_event_filters(request.filters)
        async for response in self.events.watch(request.cursor, request.since_oldest, filters):
            yield response
        # the hub closed: the server is stopping; the caller resumes elsewhere or later
        raise errors.Unavailable(
            "the server is stopping: watch again with the cursor of the last event received"
        )

    async def GetServerInfo(
        self, request: pb.GetServerInfoRequest, context: Context
    ) -> pb.GetServerInfoResponse:
        totals = await self._pools.unary.run(self.store.totals)
        return convert.server_info(self._setup, totals)

    async def StatBlob(self, request: pb.StatBlobRequest, context: Context) -> pb.StatBlobResponse:
        digest = parse_digest(request.digest)
        stat = await self._pools.unary.run(self.store.stat_blob, digest, STAT_BLOB_IMAGES)
        return convert.stat_blob_response(stat)

    def _credentials(self, auth: pb.RegistryAuth, context: Context) -> Credentials | None:
        """Registry credentials from the request; refused where they could be sniffed."""
        credentials = convert.credentials(auth)
        check_credentials_transport(credentials, self.secure_transport, context.peer())
        return credentials or None

    async def Pull(
        self, request: pb.PullRequest, context: Context
    ) -> AsyncIterator[pb.PullResponse]:
        credentials = self._credentials(request.auth, context)
        platforms = [_platform(p, "platforms") for p in request.platforms]

        async def job(emit: Callable[[pb.PullResponse], None]) -> pb.PullResponse:
            def progress(event: ProgressEvent) -> None:
                count_pull(self.telemetry, event)
                emit(pb.PullResponse(progress=convert.progress(event)))

            with self.telemetry.in_progress.labels("pull").track_inprogress():
                result = await self.puller.pull(
                    request.image,
                    platforms,
                    credentials,
                    progress,
                    all_platforms=request.all_platforms,
                    all_tags=request.all_tags,
                )
            return convert.pull_result(result)

        async for response in with_events(job):
            yield response

    async def Push(
        self, request: pb.PushRequest, context: Context
    ) -> AsyncIterator[pb.PushResponse]:
        credentials = self._credentials(request.auth, context)
        platform = _platform(request.platform)

        async def job(emit: Callable[[pb.PushResponse], None]) -> pb.PushResponse:
            def progress(event: ProgressEvent) -> None:
                count_push(self.telemetry, event)
                emit(pb.PushResponse(progress=convert.progress(event)))

            with self.telemetry.in_progress.labels("push").track_inprogress():
                result = await self.pusher.push(request.image, credentials, platform, progress)
            return convert.push_result(result)

        async for response in with_events(job):
            yield response

    async def Login(self, request: pb.LoginRequest, context: Context) -> pb.LoginResponse:
        credentials = self._credentials(request.auth, context)
        if credentials is None:
            raise errors.ArgumentMissing(
                "give a username and a password (or a token) to check", field="auth"
            )
        domain = normalize_domain(request.registry or "docker.io")
        await self.registry.login(domain, credentials)
        return pb.LoginResponse(status="Login Succeeded")

    async def Save(
        self, request: pb.SaveRequest, context: Context
    ) -> AsyncIterator[pb.SaveResponse]:
        images = list(request.images)
        platform = _platform(request.platform)

        def responses() -> Generator[pb.SaveResponse, None, None]:
            return _wrapped(save(self.store, images, platform), pb.SaveResponse)

        async for response in self._pools.streams.stream(responses, STREAM_AHEAD):
            yield response

    async def ReadBlob(
        self, request: pb.ReadBlobRequest, context: Context
    ) -> AsyncIterator[pb.ReadBlobResponse]:
        digest = parse_digest(request.digest)
        if request.offset < 0 or request.limit < 0:
            raise errors.RangeInvalid(
                "offset and limit must not be negative",
                field="offset" if request.offset < 0 else "limit",
            )
        offset, limit = request.offset, request.limit or None

        def responses() -> Generator[pb.ReadBlobResponse, None, None]:
            return _at_offsets(self._read_blob(digest, offset, limit), offset)

        async for response in self._pools.streams.stream(responses, STREAM_AHEAD):
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
        progress flows back. If the client goes away, the loader's input ends in
        InputCancelledError, and its lease removes whatever it had stored before
        the call ends.

        Only the first message may be a header: a later one fails the call
        (INVALID_ARGUMENT about ``header``), and whatever was stored is removed."""
        first = await anext(aiter(request_iterator), None)
        header = first.header if first is not None and first.HasField("header") else None
        declared = header.declared_size if header is not None and header.declared_size > 0 else None
        # the feeder's failure reaches the loader only as "input cancelled": this says why
        misplaced: list[errors.MessageOrderInvalid] = []

        async def chunks() -> AsyncIterator[bytes]:
            if first is None:
                return
            if first.chunk:
                yield first.chunk
            async for message in request_iterator:
                if message.HasField("header"):
                    misplaced.append(
                        errors.MessageOrderInvalid(
                            "a LoadRequest header may only be the first message of the stream",
                            field="header",
                        )
                    )
                    raise misplaced[0]
                yield message.chunk

        def work(
            incoming: Iterator[bytes], emit: Callable[[pb.LoadResponse], None]
        ) -> pb.LoadResponse:
            def progress(event: LoadProgress) -> None:
                count_load(self.telemetry, event)
                emit(convert.load_progress(event))

            try:
                with self.telemetry.in_progress.labels("load").track_inprogress():
                    loaded = load(
                        self.store,
                        incoming,
                        declared_size=declared,
                        progress=progress,
                        limits=self.load_limits,
                    )
                return convert.load_result(loaded)
            except InputCancelledError:
                if misplaced:
                    raise misplaced[0] from None
                raise
            except errors.ImageStoreError as exc:
                # An expected refusal needs no traceback; without it, the loader's
                # frames and their megabyte buffers are freed now, not by a later GC.
                exc.__context__ = None
                raise exc.with_traceback(None) from None

        async for response in self._pools.loads.feed(chunks(), work, LOAD_QUEUE_CHUNKS):
            yield response
