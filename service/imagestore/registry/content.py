"""What a repository holds, over HTTP: manifests and blobs, read and written.

Every answer is checked against what was asked: a manifest by digest must hash
to it, ``Docker-Content-Digest`` must match the body, sizes are bounded. Bodies
read whole are read under the transport's speed floor, and each fetch, all tries
included, under its blob deadline.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import aiohttp.payload
from yarl import URL

from imagestore import errors, jsonparse
from imagestore.hashing import sha256_digest
from imagestore.oci import mediatypes as mt
from imagestore.oci.manifests import MAX_DOCUMENT_SIZE
from imagestore.registry.repository import Repository
from imagestore.registry.responses import fail_for, read_limited
from imagestore.registry.retry import Retryable, connection_failure
from imagestore.registry.transport import OnRetry, handed_back

log = logging.getLogger("imagestore.registry")

MANIFEST_ACCEPT = ", ".join(mt.MANIFEST_ACCEPT)


@dataclass(frozen=True, slots=True)
class RemoteDocument:
    """A manifest or index as fetched: its exact bytes, type and digest."""

    data: bytes
    media_type: str
    digest: str


def _media_type(response: aiohttp.ClientResponse) -> str:
    return response.headers.get("Content-Type", "").split(";", 1)[0].strip()


async def get_manifest(
    repo: Repository,
    reference: str,
    on_retry: OnRetry | None = None,
    *,
    size: int | None = None,
    limit: int = MAX_DOCUMENT_SIZE,
) -> RemoteDocument:
    """GET a manifest or index by tag or digest (all four media types accepted).

    ``size`` is the size a descriptor gave it: a body of any other length is
    refused as DATA_LOSS. More than ``limit`` bytes (at most 4 MiB) are refused
    as SIZE_LIMIT_EXCEEDED."""
    what = f"manifest {repo.path}:{reference}" if ":" not in reference else f"manifest {reference}"
    limit = min(limit, MAX_DOCUMENT_SIZE)
    if size is not None and size > limit:
        raise errors.SizeLimitExceeded(
            f"{what} is {size} bytes; the limit is {limit}",
            metadata={"size": str(size), "limit": str(limit)},
        )

    async def attempt() -> RemoteDocument:
        response = await repo.request(
            "GET",
            repo.url(f"manifests/{reference}"),
            headers={"Accept": MANIFEST_ACCEPT},
            what=what,
        )
        async with response:
            if response.status != 200:
                error = await fail_for(response, what)
                if isinstance(error, errors.NotFound):
                    raise errors.ManifestUnknown(
                        f"manifest for {repo.domain}/{repo.path}:{reference} not found:"
                        " manifest unknown",
                        metadata={
                            "repository": f"{repo.domain}/{repo.path}",
                            "reference": reference,
                        },
                    )
                raise error
            try:
                data = await read_limited(
                    response,
                    limit if size is None else size,
                    "manifest",
                    repo.transport.speed_floor,
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise connection_failure(exc, what) from None
            except errors.SizeLimitExceeded:
                if size is None:
                    raise
                raise _not_its_size(what, size) from None
            media_type = _media_type(response)
            declared = response.headers.get("Docker-Content-Digest")
        if size is not None and len(data) != size:
            raise _not_its_size(what, size)
        digest = sha256_digest(data)
        if reference.startswith("sha256:") and digest != reference:
            raise errors.DigestMismatch(
                f"manifest {reference} from the registry hashes to {digest}",
                metadata={"expected": reference, "actual": digest},
            )
        if declared and declared != digest:
            raise errors.DigestMismatch(
                f"the registry says manifest {what} is {declared[:100]}, but it hashes to {digest}",
                metadata={"declared": declared[:100], "actual": digest},
            )
        return RemoteDocument(data, media_type, digest)

    async with repo.transport.deadline(what):
        return await repo.transport.with_retries(attempt, on_retry)


def _not_its_size(what: str, size: int) -> errors.DigestMismatch:
    return errors.DigestMismatch(
        f"{what} from the registry is not the {size} bytes its descriptor gives",
        metadata={"size": str(size)},
    )


async def get_small_blob(
    repo: Repository, digest: str, size: int, on_retry: OnRetry | None = None
) -> bytes:
    """A config (≤ 4 MiB), verified against its digest and size."""
    if size > MAX_DOCUMENT_SIZE:
        raise errors.SizeLimitExceeded(
            f"config {digest} is {size} bytes; the limit is {MAX_DOCUMENT_SIZE}",
            metadata={"digest": digest, "size": str(size)},
        )
    what = f"blob {digest}"

    async def attempt() -> bytes:
        response = await open_blob(repo, digest)
        async with response:
            try:
                return await read_limited(response, size, what, repo.transport.speed_floor)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise connection_failure(exc, what) from None

    async with repo.transport.deadline(what):
        data = await repo.transport.with_retries(attempt, on_retry)
    actual = sha256_digest(data)
    if actual != digest or len(data) != size:
        raise errors.DigestMismatch(
            f"blob {digest} from the registry hashes to {actual} ({len(data)} bytes)",
            metadata={"expected": digest, "actual": actual},
        )
    return data


async def open_blob(repo: Repository, digest: str, offset: int = 0) -> aiohttp.ClientResponse:
    """Start a blob download at ``offset``; the caller reads and releases it.

    Returns 200 or 206 answers only; a 200 to a ranged request means the
    registry ignored the range (the caller skips ``offset`` bytes)."""
    what = f"blob {digest}"
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    response = await repo.request("GET", repo.url(f"blobs/{digest}"), headers=headers, what=what)
    if response.status == 206 and offset:
        content_range = response.headers.get("Content-Range", "")
        if not content_range.startswith(f"bytes {offset}-"):
            response.release()
            raise Retryable(
                errors.RegistryResponseInvalid(f"{what}: the registry answered the wrong range")
            )
        return response
    if response.status == 200:
        return response
    async with response:
        raise await fail_for(response, what)


async def blob_exists(repo: Repository, digest: str) -> bool:
    what = f"blob {digest}"

    async def attempt() -> bool:
        response = await repo.request("HEAD", repo.url(f"blobs/{digest}"), what=what)
        async with response:
            if response.status == 200:
                return True
            if response.status == 404:
                return False
            raise await fail_for(response, what)

    return await repo.transport.with_retries(attempt, None)


async def mount_blob(repo: Repository, digest: str, source_path: str) -> URL | None:
    """Cross-repository mount. None when mounted; else the upload session the
    registry opened instead (202), to upload into or cancel. The token asks for
    pull on the source for this request only (mounts run concurrently)."""
    url = repo.url("blobs/uploads/").with_query({"mount": digest, "from": source_path})
    what = f"mount of {digest} from {source_path}"
    response = await repo.request(
        "POST",
        url,
        headers={"Content-Length": "0"},
        scope=f"repository:{source_path}:pull",
        what=what,
    )
    async with response:
        if response.status == 201:
            return None
        if response.status == 202 and "Location" in response.headers:
            return _upload_location(response, what)
        raise await fail_for(response, what)


def _upload_location(response: aiohttp.ClientResponse, what: str) -> URL:
    """The upload session a 202 names, against the request's URL."""
    location = response.headers["Location"]
    target = handed_back(response.url, location)
    if target is None:
        raise errors.RegistryResponseInvalid(
            f"{what}: an upload location that cannot be used: {location[:200]!r}"
        )
    return target


async def cancel_upload(repo: Repository, location: URL) -> None:
    """DELETE an upload session we will not use (best effort: an abandoned one
    expires on the registry anyway)."""
    what = f"cancel of upload {location.path[-64:]}"
    try:
        response = await repo.request("DELETE", location, what=what)
    except (errors.ImageStoreError, Retryable) as exc:
        log.info("%s failed: %s", what, exc)
        return
    async with response:
        if response.status not in (202, 204, 404):
            log.info("%s: the registry answered %s", what, response.status)


async def start_upload(repo: Repository) -> URL:
    what = f"upload to {repo.path}"
    response = await repo.request(
        "POST", repo.url("blobs/uploads/"), headers={"Content-Length": "0"}, what=what
    )
    async with response:
        if response.status == 202 and "Location" in response.headers:
            return _upload_location(response, what)
        raise await fail_for(response, what)


async def upload_blob(
    repo: Repository,
    location: URL,
    digest: str,
    size: int,
    body: Callable[[], aiohttp.payload.Payload],
    verify: Callable[[bool], None],
) -> None:
    """Send the whole blob in the one ``PUT ?digest=`` that closes the session
    (the spec's monolithic upload after a POST; registry 2.8 has no single-POST
    upload): two requests a blob, the body streamed once, never buffered.

    ``verify(taken)`` raises if what ``body`` read was not the blob. The body
    settles its check before its last bytes and stops short when it fails, so
    the registry never has the whole of a wrong blob. ``verify`` runs when the
    request breaks or is refused (False: the store's error, if any, is the
    cause, not a connection failure to retry) and when the registry took the
    blob (True: the body must then have been read whole and checked)."""
    what = f"upload of {digest}"
    try:
        response = await repo.request(
            "PUT",
            location.update_query({"digest": digest}),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            body=body,
            what=what,
        )
    except (Retryable, errors.ImageStoreError):
        verify(False)
        raise
    async with response:
        verify(response.status in (201, 204))
        if response.status not in (201, 204):
            error = await fail_for(response, what)
            if response.status == 400:
                raise errors.DigestMismatch(
                    error.message, metadata={**error.metadata, "digest": digest}
                )
            raise error


async def put_manifest(repo: Repository, reference: str, data: bytes, media_type: str) -> str:
    """PUT a manifest or index by tag or digest; returns the digest the registry computed."""
    what = f"manifest {repo.path}:{reference}"
    digest = sha256_digest(data)

    async def attempt() -> str:
        response = await repo.request(
            "PUT",
            repo.url(f"manifests/{reference}"),
            headers={"Content-Type": media_type},
            body=lambda: data,
            what=what,
        )
        async with response:
            if response.status not in (200, 201):
                raise await fail_for(response, what)
            declared = response.headers.get("Docker-Content-Digest")
        if declared and declared != digest:
            raise errors.DigestMismatch(
                f"the registry stored {what} as {declared[:100]}, not {digest}",
                metadata={"declared": declared[:100], "actual": digest},
            )
        return digest

    return await repo.transport.with_retries(attempt, None)


#: tags asked for per page of a repository's tag list (a registry may send fewer)
TAGS_PAGE_SIZE = 1000
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_NEXT_LINK = re.compile(r'<([^>]*)>\s*;[^,]*\brel="?next"?', re.IGNORECASE)


async def list_tags(repo: Repository, *, limit: int, on_retry: OnRetry | None = None) -> list[str]:
    """Every tag of the repository (``GET tags/list``), in the registry's order,
    following its ``Link: <…>; rel="next"`` pages.

    More than ``limit`` bytes of tag lists in all are refused as
    SIZE_LIMIT_EXCEEDED; a page that is not a tag list, names an invalid tag,
    links to another origin or adds no new tag (a registry paging forever) as
    DATA_LOSS (RegistryResponseInvalid)."""
    what = f"tag list of {repo.domain}/{repo.path}"
    url: URL | None = repo.url("tags/list").with_query({"n": str(TAGS_PAGE_SIZE)})
    tags: dict[str, None] = {}
    left = limit
    while url is not None:
        data, link = await _tag_list_page(repo, url, left, what, on_retry)
        left -= len(data)
        before = len(tags)
        tags.update((tag, None) for tag in _tag_page(data, what))
        url = _next_page(repo, url, link, what)
        if url is not None and len(tags) == before:
            raise errors.RegistryResponseInvalid(f"{what}: a page without new tags links on")
    return list(tags)


async def _tag_list_page(
    repo: Repository, url: URL, limit: int, what: str, on_retry: OnRetry | None
) -> tuple[bytes, str]:
    """One page of a tag list (at most ``limit`` bytes) and its ``Link`` header."""

    async def attempt() -> tuple[bytes, str]:
        response = await repo.request("GET", url, headers={"Accept": "application/json"}, what=what)
        async with response:
            if response.status != 200:
                raise await fail_for(response, what)
            try:
                data = await read_limited(response, limit, what, repo.transport.speed_floor)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise connection_failure(exc, what) from None
            return data, response.headers.get("Link", "")

    async with repo.transport.deadline(what):
        return await repo.transport.with_retries(attempt, on_retry)


def _tag_page(data: bytes, what: str) -> list[str]:
    """The tags of one page: ``{"name": …, "tags": [...]}`` (``tags`` may be null)."""
    try:
        document = jsonparse.loads(data)
    except ValueError:
        raise errors.RegistryResponseInvalid(f"{what}: not JSON") from None
    tags = document.get("tags") if isinstance(document, dict) else None
    tags = [] if tags is None and isinstance(document, dict) else tags
    if not isinstance(tags, list):
        raise errors.RegistryResponseInvalid(f"{what}: no list of tags")
    for tag in tags:
        if not isinstance(tag, str) or not _TAG.fullmatch(tag):
            raise errors.RegistryResponseInvalid(
                f"{what}: invalid tag {str(tag)[:130]!r}", metadata={"tag": str(tag)[:130]}
            )
    return tags


def _next_page(repo: Repository, current: URL, link: str, what: str) -> URL | None:
    """The next page a ``Link`` header names, on the repository's own origin; None
    on the last page."""
    match = _NEXT_LINK.search(link)
    if match is None:
        return None
    target = handed_back(current, match.group(1))
    if target is None:
        raise errors.RegistryResponseInvalid(
            f"{what}: the next page's address is invalid: {match.group(1)[:200]!r}"
        )
    if target.origin() != repo.base_url.origin():
        raise errors.RegistryResponseInvalid(f"{what}: the next page is on another origin")
    return target
