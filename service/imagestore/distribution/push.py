"""The push category of the OCI Distribution Spec v1.1 (``--registry-allow-push``),
and manifest and tag deletion (``--registry-allow-delete``), over the store.

- ``POST /v2/<name>/blobs/uploads/``: a new upload session (202, ``Location``,
  ``Docker-Upload-UUID``, ``Range``); with ``?digest=`` the body is the whole
  blob (201); with ``?mount=<digest>[&from=<repository>]`` a stored blob is
  mounted (201), an absent one opens a session instead (202).
- ``PATCH <location>``: a chunk, streamed; with ``Content-Range: a-b`` it must
  start where the session is (else 416 RANGE_INVALID with the session's
  ``Range``); without one it is appended.
- ``PUT <location>?digest=<digest>``: an optional last chunk, then every byte
  is verified against the digest and the blob stored (201); a wrong digest is
  400 DIGEST_INVALID and stores nothing.
- ``GET <location>``: 204 with the ``Range`` received (resuming an upload);
  ``DELETE <location>``: the session is cancelled (204).
- ``PUT /v2/<name>/manifests/<tag or digest>``: a manifest or index of at most
  4 MiB (the store's document limit), parsed by the store's parsers; every blob
  it references (config and layers; an index's manifests) must be stored
  (else 400 MANIFEST_BLOB_UNKNOWN); a digest reference must be the body's
  digest. It becomes visible through the store's commit (docs/design.md §4,
  "Making an image visible": diff_ids checked against the config), named
  ``<repository>:<tag>`` and ``<repository>@<digest>`` as a pull by tag names
  what it stores, with LOAD events in the journal (an image stored from bytes
  a client sent; PUSH means the store sent one away). 201 with ``Location``
  and ``Docker-Content-Digest``.
- ``DELETE /v2/<name>/manifests/<tag>``: the tag is removed;
  ``DELETE …/manifests/<digest>``: every name of the repository pointing at
  it; either as the store's remove (Docker's rules: removing a repository's
  last tag of an image also removes its digest names there, and an image left
  without names is deleted). 202.

Sessions and the blobs they keep: uploads.py.
"""

from __future__ import annotations

import re
from contextlib import AbstractAsyncContextManager
from urllib.parse import quote, urlencode

from aiohttp import web

from imagestore import errors, hashing
from imagestore.bridges import WorkerPool
from imagestore.distribution import names
from imagestore.distribution.errors import Code, RegistryError
from imagestore.distribution.uploads import Session, Uploads, refused_content
from imagestore.oci.digests import parse_digest
from imagestore.oci.manifests import MAX_DOCUMENT_SIZE, Descriptor, Index, parse_document
from imagestore.oci.references import parse_reference
from imagestore.store.models import EventKind
from imagestore.store.store import Store

#: bytes of a request body gathered before one write to the ingest (one
#: thread crossing per MiB, not per network read)
WRITE_BATCH = 1 << 20
#: ``Content-Range: a-b`` (the spec's form; ``bytes a-b/total`` is read too)
CONTENT_RANGE = re.compile(
    r"(?:bytes[ =])?(?P<first>[0-9]{1,19})-(?P<last>[0-9]{1,19})(?:/(?:[0-9]{1,19}|\*))?"
)
#: tags of a repository read per page when a digest's names are looked for
TAG_PAGE = 1000


def _media_type(request: web.Request) -> str | None:
    """The Content-Type without its parameters (None: not given)."""
    header = request.headers.get("Content-Type", "")
    media_type = header.split(";", 1)[0].strip().lower()
    return media_type or None


async def _read_document(request: web.Request) -> bytes:
    """A manifest's body, at most the store's document limit (413 beyond)."""
    too_large = RegistryError(
        Code.SIZE_INVALID,
        f"a manifest may be at most {MAX_DOCUMENT_SIZE} bytes",
        status=413,
    )
    if request.content_length is not None and request.content_length > MAX_DOCUMENT_SIZE:
        raise too_large
    body = bytearray()
    async for chunk in request.content.iter_chunked(WRITE_BATCH):
        body += chunk
        if len(body) > MAX_DOCUMENT_SIZE:
            raise too_large
    return bytes(body)


class Push:
    """The push category's handlers over one store and its upload sessions;
    blocking calls run on ``unary``."""

    def __init__(self, store: Store, uploads: Uploads, *, unary: WorkerPool) -> None:
        self._store = store
        self._uploads = uploads
        self._unary = unary

    # ---- shared parts --------------------------------------------------------

    @staticmethod
    def _repository(request: web.Request) -> str:
        return names.repository(request.match_info["name"], request.query.get("ns"))

    @staticmethod
    def _path(request: web.Request, tail: str) -> str:
        """A path under the request's repository path (its ``ns=`` kept)."""
        path = f"/v2/{request.match_info['name']}/{tail}"
        ns = request.query.get("ns")
        return f"{path}?{urlencode({'ns': ns}, quote_via=quote)}" if ns else path

    def _session_headers(self, request: web.Request, session_id: str, size: int) -> dict[str, str]:
        return {
            "Location": self._path(request, f"blobs/uploads/{session_id}"),
            "Docker-Upload-UUID": session_id,
            "Range": f"0-{max(size - 1, 0)}",  # as the spec's clients read it; 0-0: empty
        }

    def _blob_created(self, request: web.Request, digest: str) -> web.Response:
        headers = {
            "Location": self._path(request, f"blobs/{digest}"),
            "Docker-Content-Digest": digest,
        }
        return web.Response(status=201, headers=headers)

    def _using(self, request: web.Request) -> AbstractAsyncContextManager[Session]:
        """The request's session, held for it (uploads.py)."""
        return self._uploads.using(request.match_info["session"], self._repository(request))

    def _check_range(self, request: web.Request, session: Session) -> int | None:
        """The length a ``Content-Range`` announces (None: none given); 416
        unless it starts where the session is and agrees with Content-Length."""
        header = request.headers.get("Content-Range")
        if header is None:
            return None
        match = CONTENT_RANGE.fullmatch(header.strip())
        first, last = (int(match["first"]), int(match["last"])) if match else (-1, -1)
        length = last - first + 1
        declared = request.content_length
        if match is None or first != session.size or length < 1 or declared not in (None, length):
            raise RegistryError(
                Code.RANGE_INVALID,
                f"Content-Range {header[:60]!r} does not continue the upload, which holds"
                f" {session.size} bytes (a chunk must start there, its length that of the body)",
                headers=self._session_headers(request, session.id, session.size),
            )
        return length

    async def _receive(self, request: web.Request, session: Session) -> int:
        """Stream the request's body into the session; the bytes received."""
        received = 0
        batch = bytearray()
        async for chunk in request.content.iter_chunked(WRITE_BATCH):
            batch += chunk
            if len(batch) >= WRITE_BATCH:
                await self._uploads.write(session, batch)
                received += len(batch)
                batch = bytearray()
        if batch:
            await self._uploads.write(session, batch)
            received += len(batch)
        return received

    async def _receive_chunk(self, request: web.Request, session: Session) -> None:
        """A chunk (PATCH, or a PUT's last one), checked against its Content-Range."""
        announced = self._check_range(request, session)
        received = await self._receive(request, session)
        if announced is not None and received != announced:
            raise RegistryError(
                Code.RANGE_INVALID,
                f"the chunk held {received} bytes, its Content-Range announced {announced}",
                headers=self._session_headers(request, session.id, session.size),
            )

    # ---- blob uploads --------------------------------------------------------

    async def start_upload(self, request: web.Request) -> web.StreamResponse:
        repository = self._repository(request)
        mount = request.query.get("mount")
        if mount is not None:
            digest = parse_digest(mount)
            if await self._uploads.mount(digest):
                return self._blob_created(request, digest)
            # not stored: the spec's fallback, a session to upload it into
        opened = await self._uploads.open(repository)
        if "digest" not in request.query:
            return web.Response(status=202, headers=self._session_headers(request, opened.id, 0))
        # monolithic: the body is the whole blob
        async with self._uploads.using(opened.id, repository) as session:
            try:
                digest = parse_digest(request.query["digest"])
                await self._receive(request, session)
            except BaseException:
                await self._uploads.cancel(session)
                raise
            await self._commit(session, digest)
        return self._blob_created(request, digest)

    async def upload_status(self, request: web.Request) -> web.StreamResponse:
        session_id = request.match_info["session"]
        size = await self._uploads.size(session_id, self._repository(request))
        return web.Response(status=204, headers=self._session_headers(request, session_id, size))

    async def upload_chunk(self, request: web.Request) -> web.StreamResponse:
        async with self._using(request) as session:
            await self._receive_chunk(request, session)
        headers = self._session_headers(request, session.id, session.size)
        return web.Response(status=202, headers=headers)

    async def finish_upload(self, request: web.Request) -> web.StreamResponse:
        async with self._using(request) as session:
            if "digest" not in request.query:  # the session stays as it is
                raise RegistryError(Code.DIGEST_INVALID, "the digest parameter is missing")
            digest = parse_digest(request.query["digest"])
            await self._receive_chunk(request, session)
            await self._commit(session, digest)
        return self._blob_created(request, digest)

    async def cancel_upload(self, request: web.Request) -> web.StreamResponse:
        async with self._using(request) as session:
            await self._uploads.cancel(session)
        return web.Response(status=204)

    async def _commit(self, session: Session, digest: str) -> None:
        try:
            await self._uploads.commit(session, digest)
        except errors.DigestMismatch as exc:
            raise RegistryError(
                Code.DIGEST_INVALID, exc.message, detail=dict(exc.metadata)
            ) from None
        except (errors.DataLoss, errors.SizeLimitExceeded) as exc:
            raise refused_content(exc) from None

    # ---- manifests -----------------------------------------------------------

    async def put_manifest(self, request: web.Request) -> web.StreamResponse:
        repository = self._repository(request)
        reference = names.manifest_reference(request.match_info["reference"], Code.MANIFEST_INVALID)
        body = await _read_document(request)
        media_type = _media_type(request)
        digest, referenced = await self._unary.run(
            self._commit_manifest, repository, reference, media_type, body
        )
        await self._uploads.release(referenced)
        headers = {
            "Location": self._path(request, f"manifests/{digest}"),
            "Docker-Content-Digest": digest,
        }
        return web.Response(status=201, headers=headers)

    def _commit_manifest(
        self, repository: str, reference: str, media_type: str | None, body: bytes
    ) -> tuple[str, list[str]]:
        """Store and commit a manifest or index; its digest and what it references."""
        digest = hashing.sha256_digest(body)
        if reference.startswith("sha256:") and reference != digest:
            raise RegistryError(
                Code.DIGEST_INVALID,
                f"the manifest hashes to {digest}, not {reference}",
                detail={"expected": reference, "actual": digest},
            )
        try:
            document = parse_document(body, media_type)
        except (errors.MalformedContent, errors.UnsupportedContent) as exc:
            raise RegistryError(Code.MANIFEST_INVALID, exc.message) from None
        if isinstance(document, Index):
            referenced = [child.digest for child in document.manifests]
        else:
            referenced = [document.config.digest, *(layer.digest for layer in document.layers)]
        references = [parse_reference(f"{repository}@{digest}")]
        if not reference.startswith("sha256:"):
            references.insert(0, parse_reference(f"{repository}:{reference}"))
        with self._store.lease() as lease:
            lease.add(digest, *referenced)  # first: what is found stored stays
            for blob in dict.fromkeys(referenced):
                if not self._store.stored(blob):
                    raise RegistryError(
                        Code.MANIFEST_BLOB_UNKNOWN,
                        f"the manifest references {blob}, which is not stored here",
                        detail={"digest": blob},
                    )
            self._store.put_blob(lease, body, document.media_type, digest)
            target = Descriptor(document.media_type, digest, len(body))
            try:
                self._store.commit_target(lease, target, references, event=EventKind.LOAD)
            except errors.BlobNotFound as exc:
                raise RegistryError(
                    Code.MANIFEST_BLOB_UNKNOWN, exc.message, detail=dict(exc.metadata)
                ) from None
            except (errors.DataLoss, errors.MalformedContent, errors.UnsupportedContent) as exc:
                raise RegistryError(Code.MANIFEST_INVALID, exc.message) from None
        return digest, referenced

    # ---- deleting ------------------------------------------------------------

    async def delete_manifest(self, request: web.Request) -> web.StreamResponse:
        repository = self._repository(request)
        reference = names.manifest_reference(request.match_info["reference"], Code.MANIFEST_UNKNOWN)
        await self._unary.run(self._delete, repository, reference)
        return web.Response(status=202)

    def _delete(self, repository: str, reference: str) -> None:
        shown = f"{repository}@{reference}" if ":" in reference else f"{repository}:{reference}"
        items = self._names_of(repository, reference)
        if not items:
            reached = self._store.repository_target(repository, reference)
            if reached is not None:  # only through an index the repository names
                raise RegistryError(
                    Code.UNSUPPORTED,
                    f"manifest {shown} is listed by an index: delete the index instead",
                )
            raise RegistryError(Code.MANIFEST_UNKNOWN, f"manifest {shown} is not known")
        results = self._store.remove(items)
        # one failing is fine: a digest name goes with the repository's last
        # tag of its image (Docker's rule), before its own turn comes
        first_error = results[0].error
        if first_error is not None and all(r.error is not None for r in results):
            raise first_error

    def _names_of(self, repository: str, reference: str) -> list[str]:
        """The names of ``repository`` that denote ``reference``: the tag, or
        every tag and the digest name pointing at the digest. (A name moved
        between this look and the remove is removed as it then is: the
        store's remove takes names, not targets.)"""
        if not reference.startswith("sha256:"):
            tagged = f"{repository}:{reference}"
            return [tagged] if self._points_at(tagged) is not None else []
        found = []
        after = ""
        while True:
            tags = self._store.repository_tags(repository, after=after, limit=TAG_PAGE)
            named = [f"{repository}:{tag}" for tag in tags]
            found += [name for name in named if self._points_at(name) == reference]
            if len(tags) < TAG_PAGE:
                break
            after = tags[-1]
        if self._points_at(f"{repository}@{reference}") == reference:
            found.append(f"{repository}@{reference}")
        return found

    def _points_at(self, name: str) -> str | None:
        """The target a name points at (None: no such name)."""
        try:
            resolved = self._store.resolve(name)
        except errors.NotFound:
            return None
        return resolved.name.target if resolved.name is not None else None
