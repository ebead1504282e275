"""Each RPC's request, built from a client method's arguments.

The blocking and the asyncio client call these alike, so an argument means
the same in both and is checked once (a malformed platform is refused here,
before anything is sent).
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Sequence
from typing import IO, TYPE_CHECKING, TypeAlias

from imagestore.client import convert
from imagestore.v1 import imagestore_pb2 as pb

if TYPE_CHECKING:
    from pathlib import Path

    from imagestore.client import models

#: bytes per Load chunk (the server takes messages of up to 8 MiB)
CHUNK = 1 << 20
# The aliases are strings: naming the classes would import them (the models, pathlib)
# when the client starts, for annotations only.
#: a platform as the methods take it: "os/arch[/variant]" or a Platform; "" or None: none
PlatformArg: TypeAlias = "str | models.Platform | None"
#: what Load reads an archive from
Source: TypeAlias = "str | Path | IO[bytes]"


def list_images(
    *, all: bool, filters: Sequence[str], page_size: int, page_token: str
) -> pb.ListImagesRequest:
    return pb.ListImagesRequest(
        all=all, filters=filters, page_size=page_size, page_token=page_token
    )


def inspect(image: str, *, platform: PlatformArg, include_raw: bool) -> pb.InspectRequest:
    return pb.InspectRequest(
        image=image, platform=convert.platform_message(platform), include_raw=include_raw
    )


def history(image: str, *, platform: PlatformArg) -> pb.HistoryRequest:
    return pb.HistoryRequest(image=image, platform=convert.platform_message(platform))


def tag(source: str, target: str) -> pb.TagRequest:
    return pb.TagRequest(source=source, target=target)


def remove(images: Sequence[str], *, force: bool, no_prune: bool) -> pb.RemoveRequest:
    return pb.RemoveRequest(images=images, force=force, no_prune=no_prune)


def prune(*, all: bool, filters: Sequence[str], dry_run: bool) -> pb.PruneRequest:
    return pb.PruneRequest(all=all, filters=filters, dry_run=dry_run)


def disk_usage(*, page_size: int, page_token: str) -> pb.DiskUsageRequest:
    return pb.DiskUsageRequest(page_size=page_size, page_token=page_token)


def check() -> pb.CheckRequest:
    return pb.CheckRequest()


def server_info() -> pb.GetServerInfoRequest:
    return pb.GetServerInfoRequest()


def stat_blob(digest: str) -> pb.StatBlobRequest:
    return pb.StatBlobRequest(digest=digest)


def pull(
    image: str,
    *,
    platforms: Sequence[str | models.Platform],
    all_platforms: bool,
    all_tags: bool,
    auth: models.RegistryAuth | None,
) -> pb.PullRequest:
    return pb.PullRequest(
        image=image,
        platforms=[_platform(p) for p in platforms],
        all_platforms=all_platforms,
        all_tags=all_tags,
        auth=convert.auth(auth),
    )


def push(image: str, *, platform: PlatformArg, auth: models.RegistryAuth | None) -> pb.PushRequest:
    return pb.PushRequest(
        image=image, platform=convert.platform_message(platform), auth=convert.auth(auth)
    )


def login(registry: str, auth: models.RegistryAuth) -> pb.LoginRequest:
    return pb.LoginRequest(registry=registry, auth=convert.auth(auth))


def save(images: Sequence[str], platform: PlatformArg) -> pb.SaveRequest:
    return pb.SaveRequest(images=images, platform=convert.platform_message(platform))


def read_blob(digest: str, *, offset: int, limit: int) -> pb.ReadBlobRequest:
    return pb.ReadBlobRequest(digest=digest, offset=offset, limit=limit)


def watch_events(
    cursor: int, *, since_oldest: bool, filters: Sequence[str]
) -> pb.WatchEventsRequest:
    return pb.WatchEventsRequest(cursor=cursor, since_oldest=since_oldest, filters=filters)


def _platform(value: str | models.Platform) -> pb.Platform:
    chosen = convert.platform_message(value)
    if chosen is None:
        from imagestore import errors  # the errors load when one is raised

        raise errors.PlatformInvalid(
            "an empty platform: want os[/arch[/variant]]", field="platforms"
        )
    return chosen


# ---- Load --------------------------------------------------------------------


def open_source(source: Source) -> tuple[IO[bytes], bool]:
    """The archive as a binary file, and whether the caller must close it (a
    path is opened here, so a missing file fails before anything is sent)."""
    if isinstance(source, str | os.PathLike):
        return open(source, "rb"), True  # closed by the request stream
    return source, False


def declared_size(handle: IO[bytes]) -> int:
    """The bytes left in a regular file from its position; 0 when not known
    (a pipe, a socket, a file object without a descriptor)."""
    try:
        status = os.fstat(handle.fileno())
        if not stat.S_ISREG(status.st_mode):
            return 0
        return max(status.st_size - handle.tell(), 0)
    except (OSError, AttributeError, ValueError):
        return 0


def load_header(declared: int) -> pb.LoadRequest:
    """The optional first message: the archive's size, so the server can refuse
    a load larger than its free disk up front."""
    return pb.LoadRequest(header=pb.LoadHeader(declared_size=declared))


def load_chunk(data: bytes) -> pb.LoadRequest:
    return pb.LoadRequest(chunk=data)


def load_requests(handle: IO[bytes], *, close: bool = False) -> Iterator[pb.LoadRequest]:
    """A header when the size is known, then the archive's chunks; closes the
    handle at its end when ``close`` (gRPC reads this on a thread of its own)."""
    try:
        if declared := declared_size(handle):
            yield load_header(declared)
        while data := handle.read(CHUNK):
            yield load_chunk(data)
    finally:
        if close:
            handle.close()


async def load_requests_async(
    handle: IO[bytes], *, close: bool = False
) -> AsyncIterator[pb.LoadRequest]:
    """:func:`load_requests` for the asyncio client: each read on a thread, so
    a slow pipe does not stall the event loop."""
    try:
        if declared := declared_size(handle):
            yield load_header(declared)
        while data := await asyncio.to_thread(handle.read, CHUNK):
            yield load_chunk(data)
    finally:
        if close:
            handle.close()


async def load_requests_from(chunks: AsyncIterable[bytes]) -> AsyncIterator[pb.LoadRequest]:
    """An archive that arrives as an async stream of bytes (no header: its size
    is not known), sent in chunks of at most CHUNK bytes."""
    async for data in chunks:
        for start in range(0, len(data), CHUNK):
            yield load_chunk(data[start : start + CHUNK])


# ---- deadlines -----------------------------------------------------------------


class Deadline:
    """One method's ``timeout`` spread over the RPCs it makes (the pages of a
    listing): each gets what is left."""

    def __init__(self, timeout: float | None) -> None:
        self._end = None if timeout is None else time.monotonic() + timeout

    def left(self) -> float | None:
        """Seconds left (never negative; 0 expires the next call at once), or
        None for no deadline."""
        return None if self._end is None else max(self._end - time.monotonic(), 0.0)
