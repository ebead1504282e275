"""AsyncImageStoreClient: ImageStoreClient's methods over a grpc.aio channel.

The same arguments, models and errors as the blocking client, from the same
request builders (``requests.py``) and conversions (``convert.py``); each
method's documentation is the blocking one's. Unary methods are coroutines;
streaming methods return their stream object at once (``aio_calls.py``):
``async for`` its items, ``await call.result()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Self, TypeVar

import grpc
import grpc.aio

from imagestore.client import convert, models, readers, requests
from imagestore.client.aio_calls import AsyncEventStream, AsyncResultStream, AsyncStream
from imagestore.client.connection import ImageStoreClient
from imagestore.client.files import PartialFile
from imagestore.client.requests import PlatformArg, Source
from imagestore.client.settings import Settings
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _documented_as(blocking: Callable[..., Any]) -> Callable[[F], F]:
    """Give a method the documentation of its blocking twin: written once."""

    def apply(method: F) -> F:
        method.__doc__ = blocking.__doc__
        return method

    return apply


class AsyncImageStoreClient:
    """An asyncio connection to an imagestore server; ``async with`` it, or
    ``await close()``. Create it inside the event loop that uses it.

    Takes the arguments of :class:`ImageStoreClient` (target, TLS, token and
    their IMAGESTORE_* defaults, ``timeout`` for unary calls). Cancelling the
    task that awaits a call cancels the call on the server. One client serves
    any number of concurrent tasks over one channel.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        tls: bool | None = None,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        token: str | None = None,
        token_file: str | Path | None = None,
        timeout: float | None = None,
    ) -> None:
        self.settings = Settings.resolve(
            target,
            tls=tls,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            token=token,
            token_file=token_file,
        )
        self._channel: grpc.aio.Channel = self.settings.channel(grpc.aio)
        self._stub = pb_grpc.ImageStoreServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._metadata = self.settings.metadata()
        #: the default deadline of unary calls, in seconds (None: none)
        self.timeout = timeout

    @property
    def target(self) -> str:
        """The server this client talks to, as resolved."""
        return self.settings.target

    async def close(self) -> None:
        """Close the channel; calls in progress are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- plumbing --------------------------------------------------------------

    async def _unary(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        try:
            return await method(
                request,
                timeout=self.timeout if timeout is None else timeout,
                metadata=self._metadata,
            )
        except grpc.RpcError as failure:
            raise convert.error(failure) from None

    def _open(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        return method(request, timeout=timeout, metadata=self._metadata)

    # ---- images ----------------------------------------------------------------

    @_documented_as(ImageStoreClient.list_images)
    async def list_images(
        self,
        *,
        all: bool = False,
        filters: Sequence[str] = (),
        page_size: int = 0,
        timeout: float | None = None,
    ) -> list[models.Image]:
        deadline = requests.Deadline(timeout)
        images: list[models.Image] = []
        token = ""
        while True:
            request = requests.list_images(
                all=all, filters=filters, page_size=page_size, page_token=token
            )
            page = await self._unary(self._stub.ListImages, request, deadline.left())
            images += [convert.image(i) for i in page.images]
            token = page.next_page_token
            if not token:
                return images

    @_documented_as(ImageStoreClient.inspect)
    async def inspect(
        self,
        image: str,
        *,
        platform: PlatformArg = None,
        include_raw: bool = False,
        timeout: float | None = None,
    ) -> models.ImageDetails:
        request = requests.inspect(image, platform=platform, include_raw=include_raw)
        return convert.details(await self._unary(self._stub.Inspect, request, timeout))

    @_documented_as(ImageStoreClient.history)
    async def history(
        self, image: str, *, platform: PlatformArg = None, timeout: float | None = None
    ) -> list[models.HistoryEntry]:
        request = requests.history(image, platform=platform)
        response = await self._unary(self._stub.History, request, timeout)
        return [convert.history_entry(e) for e in response.entries]

    @_documented_as(ImageStoreClient.tag)
    async def tag(
        self, source: str, target: str, *, timeout: float | None = None
    ) -> models.TagResult:
        response = await self._unary(self._stub.Tag, requests.tag(source, target), timeout)
        return convert.tag_result(response)

    @_documented_as(ImageStoreClient.remove)
    async def remove(
        self,
        images: Sequence[str],
        *,
        force: bool = False,
        no_prune: bool = False,
        timeout: float | None = None,
    ) -> list[models.RemoveResult]:
        request = requests.remove(images, force=force, no_prune=no_prune)
        response = await self._unary(self._stub.Remove, request, timeout)
        return [convert.remove_result(r) for r in response.results]

    @_documented_as(ImageStoreClient.prune)
    async def prune(
        self,
        *,
        all: bool = False,
        filters: Sequence[str] = (),
        dry_run: bool = False,
        timeout: float | None = None,
    ) -> models.PruneResult:
        request = requests.prune(all=all, filters=filters, dry_run=dry_run)
        return convert.prune_result(await self._unary(self._stub.Prune, request, timeout))

    @_documented_as(ImageStoreClient.disk_usage)
    async def disk_usage(
        self, *, page_size: int = 0, timeout: float | None = None
    ) -> models.DiskUsage:
        rows: list[models.ImageUsage] = []
        page = None
        async for page in self.disk_usage_pages(page_size=page_size, timeout=timeout):
            rows += page.images
        assert page is not None  # the walk yields at least one page
        return replace(page, images=tuple(rows), next_page_token="")

    @_documented_as(ImageStoreClient.disk_usage_pages)
    async def disk_usage_pages(
        self, *, page_size: int = 0, timeout: float | None = None
    ) -> AsyncIterator[models.DiskUsage]:
        deadline = requests.Deadline(timeout)
        token = ""
        while True:
            request = requests.disk_usage(page_size=page_size, page_token=token)
            answer = await self._unary(self._stub.DiskUsage, request, deadline.left())
            page = convert.disk_usage(answer)
            yield page
            token = page.next_page_token
            if not token:
                return

    @_documented_as(ImageStoreClient.check)
    def check(
        self, *, timeout: float | None = None
    ) -> AsyncResultStream[models.CheckUpdate, models.CheckReport]:
        call = self._open(self._stub.Check, requests.check(), timeout)
        return AsyncResultStream(call, readers.Check())

    @_documented_as(ImageStoreClient.check_report)
    async def check_report(self, *, timeout: float | None = None) -> models.CheckReport:
        async with self.check(timeout=timeout) as call:
            return await call.result()

    @_documented_as(ImageStoreClient.server_info)
    async def server_info(self, *, timeout: float | None = None) -> models.ServerInfo:
        answer = await self._unary(self._stub.GetServerInfo, requests.server_info(), timeout)
        return convert.server_info(answer)

    @_documented_as(ImageStoreClient.stat_blob)
    async def stat_blob(self, digest: str, *, timeout: float | None = None) -> models.BlobStat:
        response = await self._unary(self._stub.StatBlob, requests.stat_blob(digest), timeout)
        return convert.blob_stat(response)

    # ---- registries ------------------------------------------------------------

    @_documented_as(ImageStoreClient.pull)
    def pull(
        self,
        image: str,
        *,
        platforms: Sequence[str | models.Platform] = (),
        all_platforms: bool = False,
        all_tags: bool = False,
        auth: models.RegistryAuth | None = None,
        timeout: float | None = None,
    ) -> AsyncResultStream[models.Progress, models.PullResult]:
        request = requests.pull(
            image,
            platforms=platforms,
            all_platforms=all_platforms,
            all_tags=all_tags,
            auth=auth,
        )
        call = self._open(self._stub.Pull, request, timeout)
        return AsyncResultStream(call, readers.Transfer("pull", convert.pull_result))

    @_documented_as(ImageStoreClient.push)
    def push(
        self,
        image: str,
        *,
        platform: PlatformArg = None,
        auth: models.RegistryAuth | None = None,
        timeout: float | None = None,
    ) -> AsyncResultStream[models.Progress, models.PushResult]:
        request = requests.push(image, platform=platform, auth=auth)
        call = self._open(self._stub.Push, request, timeout)
        return AsyncResultStream(call, readers.Transfer("push", convert.push_result))

    @_documented_as(ImageStoreClient.login)
    async def login(
        self, registry: str, auth: models.RegistryAuth, *, timeout: float | None = None
    ) -> str:
        response = await self._unary(self._stub.Login, requests.login(registry, auth), timeout)
        return str(response.status)

    # ---- archives and blobs ----------------------------------------------------

    def load(
        self, source: Source | AsyncIterable[bytes], *, timeout: float | None = None
    ) -> AsyncResultStream[models.Progress, models.LoadResult]:
        """As :meth:`ImageStoreClient.load`; ``source`` may also be an async
        iterable of the archive's bytes (sent as it yields them). Iterating
        yields a Progress per archive member, ``await result()`` is the
        LoadResult. Cancelling loads nothing. Raises MalformedContent,
        SizeLimitExceeded, DiskFull…; OSError when the path cannot be opened."""
        if isinstance(source, AsyncIterable):
            sent = requests.load_requests_from(source)
        else:
            handle, owned = requests.open_source(source)
            sent = requests.load_requests_async(handle, close=owned)
        call = self._open(self._stub.Load, sent, timeout)
        return AsyncResultStream(call, readers.Transfer("load", convert.load_result))

    @_documented_as(ImageStoreClient.save)
    def save(
        self, images: Sequence[str], platform: PlatformArg = None, *, timeout: float | None = None
    ) -> AsyncStream[bytes]:
        call = self._open(self._stub.Save, requests.save(images, platform), timeout)
        return AsyncStream(call, readers.chunks("save"))

    @_documented_as(ImageStoreClient.save_to)
    async def save_to(
        self,
        images: Sequence[str],
        path: str | Path,
        platform: PlatformArg = None,
        *,
        timeout: float | None = None,
    ) -> int:
        with PartialFile(path) as out:
            async with self.save(images, platform, timeout=timeout) as chunks:
                async for chunk in chunks:
                    await asyncio.to_thread(out.write, chunk)
            return out.commit()

    @_documented_as(ImageStoreClient.read_blob)
    def read_blob(
        self, digest: str, *, offset: int = 0, limit: int = 0, timeout: float | None = None
    ) -> AsyncStream[bytes]:
        request = requests.read_blob(digest, offset=offset, limit=limit)
        call = self._open(self._stub.ReadBlob, request, timeout)
        return AsyncStream(call, readers.chunks("read"))

    @_documented_as(ImageStoreClient.read_blob_chunks)
    def read_blob_chunks(
        self, digest: str, *, offset: int = 0, limit: int = 0, timeout: float | None = None
    ) -> AsyncStream[models.BlobChunk]:
        request = requests.read_blob(digest, offset=offset, limit=limit)
        call = self._open(self._stub.ReadBlob, request, timeout)
        return AsyncStream(call, readers.blob_chunks())

    # ---- events ----------------------------------------------------------------

    @_documented_as(ImageStoreClient.watch_events)
    def watch_events(
        self,
        cursor: int = 0,
        *,
        since_oldest: bool = False,
        filters: Sequence[str] = (),
        timeout: float | None = None,
        on_caught_up: Callable[[int], object] | None = None,
    ) -> AsyncEventStream:
        request = requests.watch_events(cursor, since_oldest=since_oldest, filters=filters)
        call = self._open(self._stub.WatchEvents, request, timeout)
        return AsyncEventStream(call, readers.Events(cursor, on_caught_up))
