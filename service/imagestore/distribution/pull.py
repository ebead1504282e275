"""The pull category of the OCI Distribution Spec v1.1, over the store.

- ``GET /v2/``: 200 ``{}``.
- ``GET``/``HEAD /v2/<name>/manifests/<tag or digest>``: exactly the stored
  bytes of what the name points at (a manifest or an index, never converted),
  re-hashed before they are sent, with ``Content-Type`` its media type,
  ``Docker-Content-Digest``, ``Content-Length`` and ``ETag``.
- ``GET``/``HEAD /v2/<name>/blobs/<digest>``: the blob, streamed through the
  store's verified read; ``Range: bytes=a-b``, ``a-`` and ``-n`` give 206 with
  ``Content-Range``, an unsatisfiable one 416.
- ``GET /v2/<name>/tags/list`` and ``GET /v2/_catalog``: pages of ``n`` (capped)
  after ``last``, with ``Link: <…>; rel="next"`` while there is more.
- ``GET /v2/<name>/referrers/<digest>``: an empty OCI index (the store keeps no
  artifacts yet).

A repository exists while it holds a name; one that holds none is 404
NAME_UNKNOWN. Blobs are served under any existing repository: the endpoint
grants access to the whole store or nothing (one token), so tying a blob to the
repositories that use it would protect nothing.

Every read holds a reading lease on its digest for its whole response: the
lease is taken first, then the blob's record is checked, then it is streamed
(docs/design.md §4), so a prune running meanwhile never removes it mid-body.
Blocking store calls run on the server's worker pools (imagestore/bridges.py):
one call on the unary pool, a blob stream a step at a time on the stream pool,
so a client that does not read holds no thread, and a write that waits longer
than ``--registry-send-timeout`` for the client cuts the connection, which
ends the lease.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import json
import re
from collections.abc import AsyncGenerator, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import quote, urlencode

from aiohttp import web

from imagestore import errors
from imagestore.bridges import WorkerPool
from imagestore.distribution import names
from imagestore.distribution.access import ABORTED, BODY_BYTES, SENDFILE_BYTES
from imagestore.distribution.errors import Code, RegistryError
from imagestore.distribution.limits import EndpointLimits
from imagestore.distribution.pullthrough import STALE_WARNING, Answer, PullThrough
from imagestore.distribution.taglists import TagList
from imagestore.oci import mediatypes as mt
from imagestore.oci.digests import parse_digest
from imagestore.oci.manifests import Descriptor
from imagestore.store.store import Store

if TYPE_CHECKING:
    from imagestore.registry.downloads import Download

#: blob chunks read ahead of the client: reading overlaps sending
STREAM_AHEAD = 1
#: a blob response's chunk: with one read ahead and one held back until the
#: hash is checked, a response holds about three of them (8 pulls of 3 layers
#: each stay within tens of MiB)
HTTP_CHUNK = 256 << 10
#: most a download's bytes are sent in one ``sendfile`` (each piece has --registry-send-timeout)
SENDFILE_PIECE = 4 << 20
#: Range: one ``bytes=`` range, ``a-b``, ``a-`` or ``-n`` (several are not served)
_RANGE = re.compile(r"bytes=(?P<first>[0-9]{0,19})-(?P<last>[0-9]{0,19})")
#: the manifest media types a client may accept; distribution reads only these
MANIFEST_TYPES = frozenset(mt.MANIFEST_ACCEPT)
EMPTY_INDEX = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}).encode()


@dataclass(frozen=True, slots=True)
class Span:
    """The bytes a response carries: ``length`` from ``offset``; ``partial`` for a 206."""

    offset: int
    length: int
    size: int
    partial: bool


@dataclass(frozen=True, slots=True)
class ByteRange:
    """A parsed ``Range``: ``first``-``last`` (``last`` None: to the end), or the
    last ``suffix`` bytes."""

    first: int | None
    last: int | None
    suffix: int | None = None


def parse_range(header: str | None) -> ByteRange | None:
    """One byte range, or None: no header, or one the server ignores (RFC 9110
    lets it: several ranges, another unit, a malformed or reversed one)."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or (not match["first"] and not match["last"]):
        return None
    if not match["first"]:
        return ByteRange(None, None, int(match["last"]))
    first, last = int(match["first"]), int(match["last"]) if match["last"] else None
    if last is not None and last < first:
        return None
    return ByteRange(first, last)


def span(wanted: ByteRange | None, size: int) -> Span:
    """What to send of a blob of ``size`` bytes; 416 RANGE_INVALID (with
    ``Content-Range: bytes */size``) when no byte of the range exists."""
    if wanted is None:
        return Span(0, size, size, False)
    if wanted.suffix is not None:
        first = max(0, size - wanted.suffix)
        satisfiable = wanted.suffix > 0 and size > 0
    else:
        first = wanted.first or 0
        satisfiable = first < size
    if not satisfiable:
        raise RegistryError(
            Code.RANGE_INVALID,
            f"range {_shown(wanted)} is outside the blob's {size} bytes",
            headers={"Content-Range": f"bytes */{size}"},
        )
    last = size - 1 if wanted.last is None else min(wanted.last, size - 1)
    return Span(first, last - first + 1, size, True)


def _shown(wanted: ByteRange) -> str:
    if wanted.suffix is not None:
        return f"bytes=-{wanted.suffix}"
    return f"bytes={wanted.first}-{'' if wanted.last is None else wanted.last}"


def accepted_types(headers: Iterable[str]) -> set[str]:
    """The manifest media types named by the ``Accept`` headers (parameters
    and quality values dropped, as distribution reads them)."""
    found = set()
    for header in headers:
        for item in header.split(","):
            media_type = item.split(";", 1)[0].strip().lower()
            if media_type in MANIFEST_TYPES:
                found.add(media_type)
    return found


def check_accepted(media_type: str, accepted: set[str], by_digest: bool) -> None:
    """Refuse a manifest whose type the client did not ask for, as distribution
    does. Distribution 2.8 (Debian's ``docker-registry``, tried by hand) answers
    404 MANIFEST_UNKNOWN ("OCI manifest found, but accept header does not
    support OCI manifests") for an OCI manifest or index whose type the
    ``Accept`` headers do not name, by tag or by digest, ``*/*`` included; a
    Docker manifest or list asked by digest it serves whatever they say; asked
    by tag it would rewrite it (to schema 1, which fails with 400 when it
    cannot, or to one platform's manifest of a list). The store never converts,
    so that case is 404 MANIFEST_UNKNOWN here."""
    if media_type in accepted:
        return
    if media_type in (mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST) and by_digest:
        return
    raise RegistryError(
        Code.MANIFEST_UNKNOWN,
        f"{media_type} found, but the Accept header does not include it",
        detail={"mediaType": media_type},
    )


def _held_back(chunks: Iterator[bytes]) -> Generator[bytes, None, None]:
    """The chunks of a verified read, each passed on once the next is read: the
    last one only after the hash matched (a corrupt blob raises first), so a
    client never receives a whole wrong body."""
    previous: bytes | None = None
    for chunk in chunks:
        if previous is not None:
            yield previous
        previous = chunk
    if previous is not None:
        yield previous


def _page_size(request: web.Request, limit: int) -> int:
    text = request.query.get("n")
    if text is None or text == "":
        return limit
    if not text.isdigit() or len(text) > 9:
        raise RegistryError(
            Code.PAGINATION_NUMBER_INVALID, f"n must be a number from 0 (got {text[:20]!r})"
        )
    return min(int(text), limit)


def _next_link(path: str, n: int, last: str) -> dict[str, str]:
    query = urlencode({"n": n, "last": last}, quote_via=quote)
    return {"Link": f'<{path}?{query}>; rel="next"'}


def _json(document: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(document).encode(), content_type="application/json", headers=headers
    )


class Pull:
    """The pull category's handlers over one store; blocking calls run on
    ``unary`` (one call) and ``streams`` (blob bodies, a step at a time); with
    ``through``, what the store lacks is pulled from upstream first
    (distribution/pullthrough.py)."""

    def __init__(
        self,
        store: Store,
        *,
        unary: WorkerPool,
        streams: WorkerPool,
        limits: EndpointLimits,
        through: PullThrough | None = None,
    ) -> None:
        self._store = store
        self._unary = unary
        self._streams = streams
        self._limits = limits
        self._through = through

    # ---- shared parts --------------------------------------------------------

    @staticmethod
    def _repository(request: web.Request) -> str:
        return names.repository(request.match_info["name"], request.query.get("ns"))

    def _unknown_in(self, repository: str, missing: RegistryError) -> RegistryError:
        """``missing``, or NAME_UNKNOWN when the repository holds nothing (blocking)."""
        if not self._store.has_repository(repository):
            return RegistryError(Code.NAME_UNKNOWN, f"repository {repository} is not known")
        return missing

    # ---- GET /v2/ ------------------------------------------------------------

    async def base(self, request: web.Request) -> web.StreamResponse:
        return _json({})

    # ---- manifests -----------------------------------------------------------

    async def manifest(self, request: web.Request) -> web.StreamResponse:
        repository = self._repository(request)
        reference = names.manifest_reference(request.match_info["reference"], Code.MANIFEST_UNKNOWN)
        by_digest = ":" in reference
        accepted = accepted_types(request.headers.getall("Accept", ()))
        answer = Answer()
        if self._through is not None:
            answer = await self._through.manifest(repository, reference, by_digest)
        if answer.early is not None:  # stored by a pull-through still downloading layers
            digest, media_type = answer.early.digest, answer.early.media_type
            body = await self._unary.run(self._read_body, digest, media_type, accepted, by_digest)
        else:
            target, body = await self._unary.run(
                self._read_manifest, repository, reference, accepted, by_digest
            )
            digest, media_type = target.digest, target.media_type
        headers = {
            "Docker-Content-Digest": digest,
            "ETag": f'"{digest}"',
            "Content-Type": media_type,
        }
        if self._through is not None:
            self._through.served(repository, digest)
        if answer.warning is not None:
            headers["Warning"] = answer.warning
        return web.Response(body=body, headers=headers)  # a HEAD: aiohttp sends no body

    def _read_manifest(
        self, repository: str, reference: str, accepted: set[str], by_digest: bool
    ) -> tuple[Descriptor, bytes]:
        target = self._store.repository_target(repository, reference)
        if target is None:
            shown = f"{repository}@{reference}" if by_digest else f"{repository}:{reference}"
            raise self._unknown_in(
                repository, RegistryError(Code.MANIFEST_UNKNOWN, f"manifest {shown} is not known")
            )
        return target, self._read_body(target.digest, target.media_type, accepted, by_digest)

    def _read_body(
        self, digest: str, media_type: str, accepted: set[str], by_digest: bool
    ) -> bytes:
        check_accepted(media_type, accepted, by_digest)
        with self._store.lease(reading=True) as lease:
            lease.add(digest)
            try:
                return b"".join(self._store.read_verified(digest))
            except errors.BlobNotFound:  # removed since it was resolved
                raise RegistryError(
                    Code.MANIFEST_UNKNOWN, f"manifest {digest} is not known"
                ) from None

    # ---- blobs ---------------------------------------------------------------

    async def blob(self, request: web.Request) -> web.StreamResponse:
        repository = self._repository(request)
        digest = parse_digest(request.match_info["digest"])
        wanted = parse_range(request.headers.get("Range"))
        head_only = request.method == "HEAD"
        pulling = False
        if self._through is not None:
            streaming = wanted is None and not head_only
            download = await self._through.blob(repository, digest, streaming=streaming)
            if download is not None:
                response = await self._send_download(request, download)
                if response is not None:
                    return response
            pulling = self._through.pulling(repository)
        make = functools.partial(self._blob_parts, repository, digest, wanted, head_only, pulling)
        parts = self._streams.stream(make, STREAM_AHEAD)
        try:
            first = await anext(parts)
            assert isinstance(first, Span)
            headers = {
                "Docker-Content-Digest": digest,
                "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream",
            }
            if first.partial:
                end = first.offset + first.length - 1
                headers["Content-Range"] = f"bytes {first.offset}-{end}/{first.size}"
            else:
                headers["ETag"] = f'"{digest}"'
            response = web.StreamResponse(status=206 if first.partial else 200, headers=headers)
            response.content_length = first.length
            await response.prepare(request)
            if not head_only:
                await self._send_body(request, response, parts)
            return response
        finally:
            await parts.aclose()  # the generator closes: its lease ends

    async def _send_body(
        self,
        request: web.Request,
        response: web.StreamResponse,
        parts: AsyncGenerator[Span | bytes, None],
    ) -> None:
        """Write the chunks (see :meth:`_cut_on_failure`)."""
        with self._cut_on_failure(request):
            async for chunk in parts:
                assert isinstance(chunk, bytes)
                async with asyncio.timeout(self._limits.send_timeout):
                    await response.write(chunk)
                request[BODY_BYTES] = request.get(BODY_BYTES, 0) + len(chunk)
            await response.write_eof()

    @contextlib.contextmanager
    def _cut_on_failure(self, request: web.Request) -> Iterator[None]:
        """A failure once the headers are out cuts the connection (the client
        sees a short body, never a complete wrong one)."""
        try:
            yield
        except TimeoutError:
            self._cut(request, "the client stopped reading (--registry-send-timeout)")
        except ConnectionError:
            self._cut(request, "the client went away")
        except errors.ImageStoreError as exc:
            self._cut(request, exc.message)

    async def _send_download(
        self, request: web.Request, download: Download
    ) -> web.StreamResponse | None:
        """A whole blob streamed from its download under way (registry/downloads.py),
        under a reading lease; None when the download ended before its file could
        be opened (the store answers then)."""
        lease = await self._unary.run(functools.partial(self._store.open_lease, reading=True))
        try:
            await self._unary.run(lease.add, download.digest)
            await download.wait_beyond(0)  # the file exists once a byte is written
            if download.finished or download.path is None:  # (pathless: never handed out)
                return None
            try:
                file = await self._streams.run(open, download.path, "rb")
            except FileNotFoundError:  # renamed at commit, or dropped, meanwhile
                await download.wait_finished()  # a renamed blob is recorded just after
                return None
            with file:
                headers = {
                    "Docker-Content-Digest": download.digest,
                    "Accept-Ranges": "bytes",
                    "Content-Type": "application/octet-stream",
                    "ETag": f'"{download.digest}"',
                }
                response = web.StreamResponse(headers=headers)
                response.content_length = download.size
                await response.prepare(request)
                with self._cut_on_failure(request):
                    await self._send_landed(request, download, file)
                    await response.write_eof()
                return response
        finally:
            await self._unary.run(self._store.end_lease, lease)

    async def _send_landed(self, request: web.Request, download: Download, file: BinaryIO) -> None:
        """Send the download's bytes as they land, with ``sendfile`` (they were
        hashed as they were written: no copy through Python); the last one only
        once the ingest is verified, so a client never receives the whole of a
        wrong blob."""
        loop = asyncio.get_running_loop()
        sent = 0
        while sent < download.size:
            if download.failed:
                raise errors.RegistryUnavailable(
                    f"the download of {download.digest} from upstream failed"
                )
            ready = download.size if download.verified else min(download.written, download.size - 1)
            if ready <= sent:
                await download.wait_beyond(download.written)
                continue
            if request.transport is None:
                raise ConnectionResetError("the client went away")
            length = min(ready - sent, SENDFILE_PIECE)
            async with asyncio.timeout(self._limits.send_timeout):
                await loop.sendfile(request.transport, file, sent, length)
            sent += length
            request[BODY_BYTES] = request.get(BODY_BYTES, 0) + length
            request[SENDFILE_BYTES] = request.get(SENDFILE_BYTES, 0) + length

    @staticmethod
    def _cut(request: web.Request, why: str) -> None:
        request[ABORTED] = why
        if request.transport is not None:
            request.transport.abort()

    def _blob_parts(
        self, repository: str, digest: str, wanted: ByteRange | None, head_only: bool, pulling: bool
    ) -> Generator[Span | bytes, None, None]:
        """The span to send, then the blob's chunks, under a reading lease held
        until the generator is closed (``pulling``: the repository may hold no
        name yet)."""
        with self._store.lease(reading=True) as lease:
            lease.add(digest)  # first: a prune from now on keeps the file
            if not pulling and not self._store.has_repository(repository):
                raise RegistryError(Code.NAME_UNKNOWN, f"repository {repository} is not known")
            record = self._store.stored_record(digest)
            if record is None:
                raise RegistryError(Code.BLOB_UNKNOWN, f"blob {digest} is not known")
            part = span(wanted, record.size)
            if head_only:
                yield part
                return
            length = None if not part.partial else part.length
            chunks = _held_back(
                self._store.read_verified(digest, part.offset, length, chunk_size=HTTP_CHUNK)
            )
            with contextlib.closing(chunks):
                # The read confirms the record and opens the file before the
                # headers go: from then on the lease keeps the file, even if a
                # prune deletes the record (docs/design.md §4); a record gone
                # already is a 404 here, not a body cut short.
                first = next(chunks, None)
                yield part
                if first is not None:
                    yield first
                yield from chunks

    # ---- tags and catalog ----------------------------------------------------

    async def tags(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["name"]
        repository = self._repository(request)
        n = _page_size(request, self._limits.max_page_size)
        last = request.query.get("last", "")
        # Beside the store's tags: what upstream lists (as a mirror lists it), and
        # what a pull-through answered before its pull names it.
        upstream: TagList | None = None
        early: list[str] = []
        if self._through is not None:
            upstream = await self._through.upstream_tags(repository)
            early = self._through.early_references(repository)
        listed = [] if upstream is None else upstream.tags  # sorted
        stale = upstream is not None and upstream.failed
        start = bisect.bisect_right(listed, last)
        early_tags = [reference for reference in early if ":" not in reference]  # no digests
        more = listed[start : start + n + 1] + [tag for tag in early_tags if tag > last]

        def page() -> list[str]:
            if not (early or listed) and not self._store.has_repository(repository):
                if stale:
                    raise errors.RegistryUnavailable(
                        f"upstream did not list the tags of {repository}, and the store"
                        " holds none of it"
                    )
                raise RegistryError(Code.NAME_UNKNOWN, f"repository {repository} is not known")
            found = self._store.repository_tags(repository, after=last, limit=n + 1)
            if not more:
                return found
            # code point order is the store's byte order for UTF-8 (tags are ASCII)
            return sorted({*found, *more})[: n + 1]

        found = await self._unary.run(page)
        headers = _next_link(f"/v2/{path}/tags/list", n, found[n - 1]) if len(found) > n else {}
        if stale:
            headers["Warning"] = STALE_WARNING
        return _json({"name": path, "tags": found[:n]}, headers)

    async def catalog(self, request: web.Request) -> web.StreamResponse:
        n = _page_size(request, self._limits.max_page_size)
        last = request.query.get("last", "")
        after = names.repository(last) if last else ""
        found = await self._unary.run(
            functools.partial(self._store.repositories, after=after, limit=n + 1)
        )
        paths = [p for p in map(names.path_of, found[:n]) if p is not None]
        more = len(found) > n and paths
        headers = _next_link("/v2/_catalog", n, paths[-1]) if more else {}
        return _json({"repositories": paths}, headers)

    # ---- referrers -----------------------------------------------------------

    async def referrers(self, request: web.Request) -> web.StreamResponse:
        repository = self._repository(request)
        digest = parse_digest(request.match_info["digest"])
        early = self._through is not None and self._through.early_manifest(repository, digest)

        def find() -> None:
            if self._store.repository_target(repository, digest) is None:
                missing = RegistryError(
                    Code.MANIFEST_UNKNOWN, f"manifest {repository}@{digest} is not known"
                )
                raise self._unknown_in(repository, missing)

        if not early:  # a manifest a pull-through answered before it names it has none either
            await self._unary.run(find)
        headers = {"Content-Type": mt.OCI_INDEX}
        if "artifactType" in request.query:
            headers["OCI-Filters-Applied"] = "artifactType"
        return web.Response(body=EMPTY_INDEX, headers=headers)
