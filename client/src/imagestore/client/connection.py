"""ImageStoreClient: one method per RPC over a gRPC channel, synchronous.

Every failure comes back as the ``imagestore.errors`` exception the server
raised (matched by its ErrorInfo reason), so callers catch ``NotFound``, not
``grpc.RpcError``. Streams are iterators; leaving one early (or Ctrl-C while
reading it) cancels the call on the server.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, Self, TypeVar

import grpc

from imagestore import errors
from imagestore.client import convert, models
from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc

DEFAULT_TARGET = "127.0.0.1:50051"
CHUNK = 1 << 20
MAX_MESSAGE = 16 << 20
T = TypeVar("T")
#: a platform as the methods take it: "os/arch[/variant]" or a Platform; "" or None: none
PlatformArg = str | models.Platform | None


class ImageStoreClient:
    """A connection to an imagestore server.

    ``target`` is ``host:port`` or ``unix:///path``. With ``tls`` (or any of
    the TLS files) the channel is TLS: ``ca_file`` to trust a private CA,
    ``cert_file``/``key_file`` for mutual TLS. ``token`` is sent as a bearer
    token on every call. ``timeout`` (seconds) bounds each unary call.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        tls: bool = False,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        token: str | None = None,
        timeout: float | None = None,
    ) -> None:
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
        ]
        if tls or ca_file or cert_file or key_file:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(ca_file),
                private_key=_read(key_file),
                certificate_chain=_read(cert_file),
            )
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._stub = pb_grpc.ImageStoreServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing --------------------------------------------------------------

    def _unary(self, method: Callable[..., T], request: Any) -> T:
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as failure:
            raise convert.error(failure) from None

    def _stream(self, call: Any) -> Iterator[Any]:
        """Messages of a server stream; closing the iterator cancels the call."""
        try:
            yield from call
        except grpc.RpcError as failure:
            raise convert.error(failure) from None
        finally:
            call.cancel()

    # ---- images ----------------------------------------------------------------

    def list_images(
        self, *, all: bool = False, filters: Sequence[str] = (), page_size: int = 0
    ) -> list[models.Image]:
        """Every image (newest first), following pages; ``filters`` as docker's
        ``--filter`` strings ("dangling=true", "label=k=v", "reference=app*")."""
        images: list[models.Image] = []
        token = ""
        while True:
            request = pb.ListImagesRequest(
                all=all, filters=filters, page_size=page_size, page_token=token
            )
            page = self._unary(self._stub.ListImages, request)
            images += [convert.image(i) for i in page.images]
            token = page.next_page_token
            if not token:
                return images

    def inspect(
        self, image: str, *, platform: PlatformArg = None, include_raw: bool = False
    ) -> models.ImageDetails:
        """One image; ``platform`` picks one of a multi-platform name's images
        (default: the server's own)."""
        request = pb.InspectRequest(
            image=image, platform=convert.platform_message(platform), include_raw=include_raw
        )
        return convert.details(self._unary(self._stub.Inspect, request))

    def history(self, image: str, *, platform: PlatformArg = None) -> list[models.HistoryEntry]:
        """The image's config history, newest first."""
        request = pb.HistoryRequest(image=image, platform=convert.platform_message(platform))
        response = self._unary(self._stub.History, request)
        return [convert.history_entry(e) for e in response.entries]

    def tag(self, source: str, target: str) -> models.TagResult:
        """Point the name ``target`` at what ``source`` names."""
        response = self._unary(self._stub.Tag, pb.TagRequest(source=source, target=target))
        return convert.tag_result(response)

    def remove(
        self, images: Sequence[str], *, force: bool = False, no_prune: bool = False
    ) -> list[models.RemoveResult]:
        """Each item applied on its own, like ``docker rmi a b``: one result per
        item, in order; a failed item's ``error`` is the exception it stands for
        (the call raises only when the request itself is malformed)."""
        request = pb.RemoveRequest(images=images, force=force, no_prune=no_prune)
        response = self._unary(self._stub.Remove, request)
        return [convert.remove_result(r) for r in response.results]

    def prune(
        self, *, all: bool = False, filters: Sequence[str] = (), dry_run: bool = False
    ) -> models.PruneResult:
        request = pb.PruneRequest(all=all, filters=filters, dry_run=dry_run)
        return convert.prune_result(self._unary(self._stub.Prune, request))

    def disk_usage(self, *, page_size: int = 0) -> models.DiskUsage:
        """The store's usage with every image row (all pages walked)."""
        rows: list[models.ImageUsage] = []
        page = None
        for page in self.disk_usage_pages(page_size=page_size):
            rows += page.images
        assert page is not None  # the walk yields at least one page
        return replace(page, images=tuple(rows), next_page_token="")

    def disk_usage_pages(self, *, page_size: int = 0) -> Iterator[models.DiskUsage]:
        """The store's usage a page of image rows at a time (``page_size`` rows;
        0: the server's default); the totals are the same on every page."""
        token = ""
        while True:
            request = pb.DiskUsageRequest(page_size=page_size, page_token=token)
            page = convert.disk_usage(self._unary(self._stub.DiskUsage, request))
            yield page
            token = page.next_page_token
            if not token:
                return

    def check(self) -> Iterator[models.CheckEvent]:
        """Re-verify every blob and the catalog: CheckProgress messages, each
        CheckProblem and UnrecordedBlob as the server confirms it, then the
        CheckSummary last. Closing the iterator early stops the server's work."""
        call = self._stub.Check(pb.CheckRequest(), metadata=self._metadata)
        for message in self._stream(call):
            event = convert.check_event(message)
            if event is not None:
                yield event

    def check_report(self) -> models.CheckReport:
        """A whole :meth:`check` collected: the findings and the summary's counts."""
        problems: list[models.CheckProblem] = []
        unrecorded: list[str] = []
        for event in self.check():
            if isinstance(event, models.CheckProblem):
                problems.append(event)
            elif isinstance(event, models.UnrecordedBlob):
                unrecorded.append(event.digest)
            elif isinstance(event, models.CheckSummary):
                return models.CheckReport(
                    event.ok,
                    tuple(problems),
                    event.blobs_checked,
                    event.images_checked,
                    tuple(unrecorded),
                )
        raise errors.Unavailable("the check ended without a summary")

    def server_info(self) -> models.ServerInfo:
        """The server's versions, gzip backend, catalog, root, TLS and auth mode,
        limits, and how many images and blobs it holds (``docker info``)."""
        response = self._unary(self._stub.GetServerInfo, pb.GetServerInfoRequest())
        return convert.server_info(response)

    def stat_blob(self, digest: str) -> models.BlobStat:
        """A stored blob's size, media type, damage and the images using it;
        NotFound when the server holds no such blob."""
        response = self._unary(self._stub.StatBlob, pb.StatBlobRequest(digest=digest))
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
    ) -> Iterator[models.Progress | models.PullResult]:
        """Progress, then the result as the last item. ``platforms`` ("os/arch
        [/variant]" or Platform) picks children of an index (default: the
        server's own); ``all_platforms`` stores them all; ``all_tags`` pulls
        every tag of the repository (``docker pull --all-tags``)."""
        request = pb.PullRequest(
            image=image,
            platforms=[_platform(p) for p in platforms],
            all_platforms=all_platforms,
            all_tags=all_tags,
            auth=convert.auth(auth),
        )
        call = self._stub.Pull(request, metadata=self._metadata)
        for message in self._stream(call):
            kind = message.WhichOneof("response")
            if kind == "progress":
                yield convert.progress(message.progress)
            elif kind == "result":
                yield convert.pull_result(message.result)

    def push(
        self,
        image: str,
        *,
        platform: PlatformArg = None,
        auth: models.RegistryAuth | None = None,
    ) -> Iterator[models.Progress | models.PushResult]:
        """Progress, then the result as the last item; ``platform`` pushes one
        platform of an index with absent children."""
        request = pb.PushRequest(
            image=image, platform=convert.platform_message(platform), auth=convert.auth(auth)
        )
        call = self._stub.Push(request, metadata=self._metadata)
        for message in self._stream(call):
            kind = message.WhichOneof("response")
            if kind == "progress":
                yield convert.progress(message.progress)
            elif kind == "result":
                yield convert.push_result(message.result)

    def login(self, registry: str, auth: models.RegistryAuth) -> str:
        """Have the server check credentials against a registry ("" = Docker Hub);
        returns "Login Succeeded" or raises PermissionDenied. Stores nothing."""
        request = pb.LoginRequest(registry=registry, auth=convert.auth(auth))
        return str(self._unary(self._stub.Login, request).status)

    # ---- archives and blobs ----------------------------------------------------

    def load(self, source: str | Path | IO[bytes]) -> Iterator[models.Progress | models.LoadResult]:
        """Send a ``docker save`` archive or an OCI layout tar, from a path or a
        binary file object; progress lines, then the result as the last item."""
        handle = open(source, "rb") if isinstance(source, str | Path) else source  # noqa: SIM115
        try:
            call = self._stub.Load(_load_requests(handle), metadata=self._metadata)
            for message in self._stream(call):
                kind = message.WhichOneof("response")
                if kind == "progress":
                    yield convert.progress(message.progress)
                elif kind == "result":
                    yield convert.load_result(message.result)
        finally:
            if handle is not source:
                handle.close()

    def save(self, images: Sequence[str], platform: PlatformArg = None) -> Iterator[bytes]:
        """The archive (docker-archive and OCI layout in one tar), in chunks;
        ``platform`` saves one platform of a multi-platform name."""
        request = pb.SaveRequest(images=images, platform=convert.platform_message(platform))
        call = self._stub.Save(request, metadata=self._metadata)
        for message in self._stream(call):
            yield message.chunk

    def save_to(self, images: Sequence[str], path: str | Path, platform: PlatformArg = None) -> int:
        """Write the archive to ``path`` (whole or not at all); returns its size."""
        target = Path(path)
        fd, partial = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
        written = 0
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)  # as a plain open() would create it
            with os.fdopen(fd, "wb") as out:
                for chunk in self.save(images, platform):
                    out.write(chunk)
                    written += len(chunk)
            os.replace(partial, target)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
        return written

    def read_blob(self, digest: str, *, offset: int = 0, limit: int = 0) -> Iterator[bytes]:
        """A stored blob's bytes from ``offset`` (at most ``limit``; 0: to the end).
        An offset past the end raises OutOfRange; at the end, nothing comes."""
        for chunk in self.read_blob_chunks(digest, offset=offset, limit=limit):
            yield chunk.data

    def read_blob_chunks(
        self, digest: str, *, offset: int = 0, limit: int = 0
    ) -> Iterator[models.BlobChunk]:
        """As :meth:`read_blob`, each chunk with its offset in the blob."""
        request = pb.ReadBlobRequest(digest=digest, offset=offset, limit=limit)
        for message in self._stream(self._stub.ReadBlob(request, metadata=self._metadata)):
            yield models.BlobChunk(message.offset, message.chunk)


def _read(path: str | Path | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


def _platform(value: str | models.Platform) -> pb.Platform:
    chosen = convert.platform_message(value)
    if chosen is None:
        raise errors.PlatformInvalid(
            "an empty platform: want os[/arch[/variant]]", field="platforms"
        )
    return chosen


def _declared_size(handle: IO[bytes]) -> int:
    """The bytes left in a regular file from its position; 0 when not known
    (a pipe, a socket, a file object without a descriptor)."""
    try:
        status = os.fstat(handle.fileno())
        if not stat.S_ISREG(status.st_mode):
            return 0
        return max(status.st_size - handle.tell(), 0)
    except (OSError, AttributeError, ValueError):
        return 0


def _load_requests(handle: IO[bytes]) -> Iterable[pb.LoadRequest]:
    """A header when the size is known (so the server can refuse a load larger
    than its free disk up front), then the archive's chunks."""
    declared = _declared_size(handle)
    if declared:
        yield pb.LoadRequest(header=pb.LoadHeader(declared_size=declared))
    while chunk := handle.read(CHUNK):
        yield pb.LoadRequest(chunk=chunk)
