"""ImageStoreClient: one method per RPC over a blocking gRPC channel.

Every failure comes back as the ``imagestore.errors`` exception the server
raised (matched by its ErrorInfo reason), so callers catch ``NotFound``, not
``grpc.RpcError``. Server streams are stream objects (``calls.py``): iterate
their items, ``result()`` for the final value, ``cancel()`` or leave the
``with`` block to end them early. Requests are built by ``requests.py`` and
answers converted by ``convert.py``, which the asyncio client shares.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Self, TypeVar

import grpc

from imagestore.client import convert, models, requests
from imagestore.client.requests import CHUNK, PlatformArg, Source
from imagestore.client.settings import DEFAULT_TARGET, Settings
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc

# The stream classes (calls, readers) and files are imported by the methods that
# use them: a command making one unary call starts without them.
if TYPE_CHECKING:
    from pathlib import Path

    from imagestore.client.calls import EventStream, ResultStream, Stream

__all__ = ["CHUNK", "DEFAULT_TARGET", "ImageStoreClient", "PlatformArg"]

T = TypeVar("T")


class ImageStoreClient:
    """A blocking connection to an imagestore server; use it as a context
    manager, or ``close()`` it.

    ``target`` is ``host:port`` or ``unix:///path`` (default: IMAGESTORE_HOST,
    else 127.0.0.1:50051). With ``tls`` (or any of the TLS files) the channel
    is TLS: ``ca_file`` to trust a private CA, ``cert_file``/``key_file`` for
    mutual TLS. ``token`` (or the first line of ``token_file``) is sent as a
    bearer token on every call. What is not given comes from the IMAGESTORE_*
    variables (``settings.Settings.resolve``). ``timeout`` (seconds) bounds each
    unary call unless the call passes its own; streams have no deadline unless
    the call passes a ``timeout``.

    The channel connects lazily: an unreachable server is ``errors.Unavailable``
    at the first call. One client may be shared by threads.
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
        self._channel: grpc.Channel = self.settings.channel(grpc)
        self._stub = pb_grpc.ImageStoreServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._metadata = self.settings.metadata()
        #: the default deadline of unary calls, in seconds (None: none)
        self.timeout = timeout

    @property
    def target(self) -> str:
        """The server this client talks to, as resolved."""
        return self.settings.target

    def close(self) -> None:
        """Close the channel; calls in progress are cancelled."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing --------------------------------------------------------------

    def _unary(self, method: Callable[..., T], request: Any, timeout: float | None) -> T:
        try:
            return method(
                request,
                timeout=self.timeout if timeout is None else timeout,
                metadata=self._metadata,
            )
        except grpc.RpcError as failure:
            raise convert.error(failure) from None

    def _open(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        """A server stream's call; its deadline is the call's ``timeout`` only."""
        return method(request, timeout=timeout, metadata=self._metadata)

    # ---- images ----------------------------------------------------------------

    def list_images(
        self,
        *,
        all: bool = False,
        filters: Sequence[str] = (),
        page_size: int = 0,
        timeout: float | None = None,
    ) -> list[models.Image]:
        """Every image, newest first, following the pages (``page_size`` rows a
        page; 0: the server's default). Dangling images only with ``all``.
        ``filters`` are docker's ``--filter`` strings ("dangling=true",
        "label=k=v", "reference=app*", "before=…", "since=…", "until=…").
        ``timeout`` bounds the whole walk. Raises FilterInvalid."""
        deadline = requests.Deadline(timeout)
        images: list[models.Image] = []
        token = ""
        while True:
            request = requests.list_images(
                all=all, filters=filters, page_size=page_size, page_token=token
            )
            page = self._unary(self._stub.ListImages, request, deadline.left())
            images += [convert.image(i) for i in page.images]
            token = page.next_page_token
            if not token:
                return images

    def inspect(
        self,
        image: str,
        *,
        platform: PlatformArg = None,
        include_raw: bool = False,
        timeout: float | None = None,
    ) -> models.ImageDetails:
        """One image (a name, an ID or a unique ID prefix), as ``docker image
        inspect`` shows it; ``platform`` ("os/arch[/variant]" or a Platform)
        picks one of a multi-platform name's images (default: the server's);
        ``include_raw`` adds the manifest and config bytes. Raises
        ImageNotFound, PlatformNotFound, ImageIdAmbiguous, PlatformInvalid."""
        request = requests.inspect(image, platform=platform, include_raw=include_raw)
        return convert.details(self._unary(self._stub.Inspect, request, timeout))

    def history(
        self, image: str, *, platform: PlatformArg = None, timeout: float | None = None
    ) -> list[models.HistoryEntry]:
        """The image's build history, newest first (``docker history``).
        Raises ImageNotFound, PlatformNotFound."""
        request = requests.history(image, platform=platform)
        response = self._unary(self._stub.History, request, timeout)
        return [convert.history_entry(e) for e in response.entries]

    def tag(self, source: str, target: str, *, timeout: float | None = None) -> models.TagResult:
        """Point the name ``target`` at what ``source`` names (the name moves if
        it named another image: see ``displaced_image_ids``). Raises
        ImageNotFound, ReferenceInvalid."""
        response = self._unary(self._stub.Tag, requests.tag(source, target), timeout)
        return convert.tag_result(response)

    def remove(
        self,
        images: Sequence[str],
        *,
        force: bool = False,
        no_prune: bool = False,
        timeout: float | None = None,
    ) -> list[models.RemoveResult]:
        """Each item applied on its own, like ``docker rmi a b``: one result per
        item, in order; a failed item's ``error`` is the exception it stands for
        (ImageNotFound, RemoveConflict without ``force``). The call itself raises
        only when the request is malformed."""
        request = requests.remove(images, force=force, no_prune=no_prune)
        response = self._unary(self._stub.Remove, request, timeout)
        return [convert.remove_result(r) for r in response.results]

    def prune(
        self,
        *,
        all: bool = False,
        filters: Sequence[str] = (),
        dry_run: bool = False,
        timeout: float | None = None,
    ) -> models.PruneResult:
        """Remove dangling images (with ``all``: every image passing
        ``filters``: "until=…", "label=…", "label!=…"), then unreferenced blobs;
        ``dry_run`` only says what would go. Raises PruneRunning, FilterInvalid."""
        request = requests.prune(all=all, filters=filters, dry_run=dry_run)
        return convert.prune_result(self._unary(self._stub.Prune, request, timeout))

    def disk_usage(self, *, page_size: int = 0, timeout: float | None = None) -> models.DiskUsage:
        """The store's usage with every image row (all pages walked; ``timeout``
        bounds the whole walk)."""
        rows: list[models.ImageUsage] = []
        page = None
        for page in self.disk_usage_pages(page_size=page_size, timeout=timeout):
            rows += page.images
        assert page is not None  # the walk yields at least one page
        from dataclasses import replace

        return replace(page, images=tuple(rows), next_page_token="")

    def disk_usage_pages(
        self, *, page_size: int = 0, timeout: float | None = None
    ) -> Iterator[models.DiskUsage]:
        """The store's usage a page of image rows at a time (``page_size`` rows;
        0: the server's default); the totals are the same on every page.
        ``timeout`` bounds the whole walk."""
        deadline = requests.Deadline(timeout)
        token = ""
        while True:
            request = requests.disk_usage(page_size=page_size, page_token=token)
            page = convert.disk_usage(self._unary(self._stub.DiskUsage, request, deadline.left()))
            yield page
            token = page.next_page_token
            if not token:
                return

    def check(
        self, *, timeout: float | None = None
    ) -> ResultStream[models.CheckUpdate, models.CheckReport]:
        """Re-verify every blob and the catalog. Iterating yields CheckProgress,
        and each CheckProblem and UnrecordedBlob as the server confirms it;
        ``result()`` is the CheckReport (the summary's counts and every finding).
        Cancelling stops the server's work. Raises CheckRunning (another check
        runs; ``retry_after`` says when to try again)."""
        from imagestore.client import readers
        from imagestore.client.calls import ResultStream

        call = self._open(self._stub.Check, requests.check(), timeout)
        return ResultStream(call, readers.Check())

    def check_report(self, *, timeout: float | None = None) -> models.CheckReport:
        """A whole :meth:`check`: ``check().result()``."""
        with self.check(timeout=timeout) as call:
            return call.result()

    def server_info(self, *, timeout: float | None = None) -> models.ServerInfo:
        """The server's versions, gzip backend, catalog, root, TLS and auth mode,
        limits, and how many images and blobs it holds (``docker info``)."""
        request = requests.server_info()
        return convert.server_info(self._unary(self._stub.GetServerInfo, request, timeout))

    def stat_blob(self, digest: str, *, timeout: float | None = None) -> models.BlobStat:
        """A stored blob's size, media type, damage and the images using it.
        Raises BlobNotFound, DigestInvalid."""
        response = self._unary(self._stub.StatBlob, requests.stat_blob(digest), timeout)
        return convert.blob_stat(response)

    # ---- registries ------------------------------------------------------------

    def pull(
        self,
        image: str,
        *,
        platforms: Sequence[str | models.Platform] = (),
        all_platforms: bool = False,
        all_tags: bool = False,
        auth: models.RegistryAuth | None = None,
        timeout: float | None = None,
    ) -> ResultStream[models.Progress, models.PullResult]:
        """Pull from a registry: iterating yields Progress, ``result()`` is the
        PullResult. ``platforms`` ("os/arch[/variant]" or Platform) picks
        children of an index (default: the server's own); ``all_platforms``
        stores them all; ``all_tags`` pulls every tag of the repository
        (``docker pull --all-tags``); ``auth`` the registry credentials.
        Cancelling leaves nothing behind. Raises ManifestUnknown,
        RegistryUnauthorized, RegistryUnavailable, PlatformNotFound…"""
        from imagestore.client import readers
        from imagestore.client.calls import ResultStream

        request = requests.pull(
            image,
            platforms=platforms,
            all_platforms=all_platforms,
            all_tags=all_tags,
            auth=auth,
        )
        call = self._open(self._stub.Pull, request, timeout)
        return ResultStream(call, readers.Transfer("pull", convert.pull_result))

    def push(
        self,
        image: str,
        *,
        platform: PlatformArg = None,
        auth: models.RegistryAuth | None = None,
        timeout: float | None = None,
    ) -> ResultStream[models.Progress, models.PushResult]:
        """Push to the name's registry: iterating yields Progress, ``result()``
        is the PushResult. ``platform`` pushes one platform of an index with
        absent children. Raises ImageNotFound, IndexIncomplete,
        RegistryUnauthorized, RegistryUnavailable…"""
        from imagestore.client import readers
        from imagestore.client.calls import ResultStream

        request = requests.push(image, platform=platform, auth=auth)
        call = self._open(self._stub.Push, request, timeout)
        return ResultStream(call, readers.Transfer("push", convert.push_result))

    def login(
        self, registry: str, auth: models.RegistryAuth, *, timeout: float | None = None
    ) -> str:
        """Have the server check credentials against a registry ("" = Docker Hub);
        returns "Login Succeeded". Stores nothing. Raises RegistryUnauthorized,
        CredentialsInsecure."""
        request = requests.login(registry, auth)
        return str(self._unary(self._stub.Login, request, timeout).status)

    # ---- archives and blobs ----------------------------------------------------

    def load(
        self, source: Source, *, timeout: float | None = None
    ) -> ResultStream[models.Progress, models.LoadResult]:
        """Send a ``docker save`` archive or an OCI layout tar, from a path or a
        binary file object (a regular file's size is sent first): iterating
        yields a Progress per archive member, ``result()`` is the LoadResult.
        Cancelling loads nothing. Raises MalformedContent, SizeLimitExceeded,
        DiskFull…; OSError when the path cannot be opened."""
        from imagestore.client import readers
        from imagestore.client.calls import ResultStream

        handle, owned = requests.open_source(source)
        try:
            call = self._open(self._stub.Load, requests.load_requests(handle, close=owned), timeout)
        except BaseException:
            if owned:
                handle.close()
            raise
        return ResultStream(call, readers.Transfer("load", convert.load_result))

    def save(
        self, images: Sequence[str], platform: PlatformArg = None, *, timeout: float | None = None
    ) -> Stream[bytes]:
        """The archive (docker-archive and OCI layout in one tar) in chunks;
        ``platform`` saves one platform of a multi-platform name. Raises
        ImageNotFound, IndexIncomplete, BlobCorrupt (mid-stream)."""
        from imagestore.client import readers
        from imagestore.client.calls import Stream

        call = self._open(self._stub.Save, requests.save(images, platform), timeout)
        return Stream(call, readers.chunks("save"))

    def save_to(
        self,
        images: Sequence[str],
        path: str | Path,
        platform: PlatformArg = None,
        *,
        timeout: float | None = None,
    ) -> int:
        """Write the archive to ``path``, whole or not at all; returns its size."""
        from imagestore.client.files import PartialFile

        with PartialFile(path) as out, self.save(images, platform, timeout=timeout) as chunks:
            for chunk in chunks:
                out.write(chunk)
            return out.commit()

    def read_blob(
        self, digest: str, *, offset: int = 0, limit: int = 0, timeout: float | None = None
    ) -> Stream[bytes]:
        """A stored blob's bytes from ``offset`` (at most ``limit``; 0: to the
        end), in chunks. Raises BlobNotFound, OutOfRange (an offset past the
        end; at the end, nothing comes), BlobCorrupt (a whole read, mid-stream)."""
        from imagestore.client import readers
        from imagestore.client.calls import Stream

        request = requests.read_blob(digest, offset=offset, limit=limit)
        call = self._open(self._stub.ReadBlob, request, timeout)
        return Stream(call, readers.chunks("read"))

    def read_blob_chunks(
        self, digest: str, *, offset: int = 0, limit: int = 0, timeout: float | None = None
    ) -> Stream[models.BlobChunk]:
        """As :meth:`read_blob`, each chunk with its offset in the blob."""
        from imagestore.client import readers
        from imagestore.client.calls import Stream

        request = requests.read_blob(digest, offset=offset, limit=limit)
        call = self._open(self._stub.ReadBlob, request, timeout)
        return Stream(call, readers.blob_chunks())

    # ---- events ----------------------------------------------------------------

    def watch_events(
        self,
        cursor: int = 0,
        *,
        since_oldest: bool = False,
        filters: Sequence[str] = (),
        timeout: float | None = None,
        on_caught_up: Callable[[int], object] | None = None,
    ) -> EventStream:
        """The store's changes as Event models, in commit order, until the call
        ends. ``cursor``: continue after that event (0: from now on, or with
        ``since_oldest`` every event the journal keeps). ``filters`` as
        ``docker events --filter``: "event=tag", "image=…", "reference=…",
        "label=k[=v]", "type=image". Once the replay is done the stream's
        ``caught_up`` is set and ``on_caught_up(cursor)`` called; resume from
        the stream's ``cursor`` to lose nothing. Raises CursorExpired (its
        ``metadata["oldest"]`` is the oldest cursor kept), CursorInvalid,
        FilterInvalid."""
        from imagestore.client import readers
        from imagestore.client.calls import EventStream

        request = requests.watch_events(cursor, since_oldest=since_oldest, filters=filters)
        call = self._open(self._stub.WatchEvents, request, timeout)
        return EventStream(call, readers.Events(cursor, on_caught_up))
