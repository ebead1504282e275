"""ImageStoreClient: one method per RPC over a gRPC channel, synchronous.

Every failure comes back as the ``imagestore.errors`` exception the server
raised (matched by its ErrorInfo reason), so callers catch ``NotFound``, not
``grpc.RpcError``. Streams are iterators; leaving one early (or Ctrl-C while
reading it) cancels the call on the server.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Self, TypeVar

import grpc

from imagestore.client import convert, models
from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc

DEFAULT_TARGET = "127.0.0.1:50051"
CHUNK = 1 << 20
MAX_MESSAGE = 16 << 20
T = TypeVar("T")


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
        self, image: str, *, platform: str = "", include_raw: bool = False
    ) -> models.ImageDetails:
        request = pb.InspectRequest(image=image, platform=platform, include_raw=include_raw)
        return convert.details(self._unary(self._stub.Inspect, request))

    def history(self, image: str, *, platform: str = "") -> list[models.HistoryEntry]:
        response = self._unary(
            self._stub.History, pb.HistoryRequest(image=image, platform=platform)
        )
        return [convert.history_entry(e) for e in response.entries]

    def tag(self, source: str, target: str) -> models.TagResult:
        response = self._unary(self._stub.Tag, pb.TagRequest(source=source, target=target))
        return models.TagResult(
            response.target, tuple(response.image_ids), tuple(response.displaced_image_ids)
        )

    def remove(
        self, images: Sequence[str], *, force: bool = False, no_prune: bool = False
    ) -> list[models.RemoveEvent]:
        request = pb.RemoveRequest(images=images, force=force, no_prune=no_prune)
        return [convert.remove_event(e) for e in self._unary(self._stub.Remove, request).events]

    def prune(
        self, *, all: bool = False, filters: Sequence[str] = (), dry_run: bool = False
    ) -> models.PruneResult:
        request = pb.PruneRequest(all=all, filters=filters, dry_run=dry_run)
        return convert.prune_result(self._unary(self._stub.Prune, request))

    def disk_usage(self) -> models.DiskUsage:
        return convert.disk_usage(self._unary(self._stub.DiskUsage, pb.DiskUsageRequest()))

    def check(self) -> models.CheckReport:
        return convert.check_report(self._unary(self._stub.Check, pb.CheckRequest()))

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
        platforms: Sequence[str] = (),
        auth: models.RegistryAuth | None = None,
    ) -> Iterator[models.Progress | models.PullResult]:
        """Progress lines, then the result as the last item."""
        request = pb.PullRequest(image=image, platforms=platforms, auth=convert.auth(auth))
        call = self._stub.Pull(request, metadata=self._metadata)
        for message in self._stream(call):
            if message.HasField("progress"):
                yield convert.progress(message.progress)
            else:
                yield models.PullResult(message.digest, tuple(message.image_ids), message.status)

    def push(
        self, image: str, *, platform: str = "", auth: models.RegistryAuth | None = None
    ) -> Iterator[models.Progress | models.PushResult]:
        """Progress lines, then the result as the last item."""
        request = pb.PushRequest(image=image, platform=platform, auth=convert.auth(auth))
        call = self._stub.Push(request, metadata=self._metadata)
        for message in self._stream(call):
            if message.HasField("progress"):
                yield convert.progress(message.progress)
            else:
                yield models.PushResult(message.tag, message.digest, message.size)

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
                if message.HasField("progress"):
                    yield convert.progress(message.progress)
                else:
                    yield convert.loaded(message)
        finally:
            if handle is not source:
                handle.close()

    def save(self, images: Sequence[str], platform: str = "") -> Iterator[bytes]:
        """The archive (docker-archive and OCI layout in one tar), in chunks;
        ``platform`` saves one platform of a multi-platform name."""
        request = pb.SaveRequest(images=images, platform=platform)
        call = self._stub.Save(request, metadata=self._metadata)
        for message in self._stream(call):
            yield message.chunk

    def save_to(self, images: Sequence[str], path: str | Path, platform: str = "") -> int:
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


def _load_requests(handle: IO[bytes]) -> Iterable[pb.LoadRequest]:
    try:
        declared = os.fstat(handle.fileno()).st_size
    except (OSError, AttributeError, ValueError):
        declared = 0
    first = True
    while chunk := handle.read(CHUNK):
        yield pb.LoadRequest(chunk=chunk, declared_size=declared if first else 0)
        first = False
    if first:
        yield pb.LoadRequest(declared_size=declared)
