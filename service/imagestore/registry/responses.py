"""Reading a registry's answers: bodies under a cap, and the domain error for a failed one.

A body is never read without a limit: a registry could send gigabytes where a
page of JSON is due. Error bodies and the ping's are only glanced at: read
whole when short and quick (so the connection can be reused), else dropped
with their connection.
"""

from __future__ import annotations

import asyncio

import aiohttp

from imagestore import errors, jsonparse
from imagestore.registry.retry import Retryable, retry_after
from imagestore.registry.timing import SpeedFloor

#: an error body is read up to this (its first message is all we show)
MAX_ERROR_BODY = 64 << 10
#: bodies we only glance at (errors, the ping) must arrive within this
GLANCE_TIMEOUT = 10.0

_NO_FLOOR = SpeedFloor(0, 0)
#: what docker says for a refusal that comes without an OCI error body
_DOCKER_WORDS = {
    401: "unauthorized: authentication required",
    403: "denied: requested access to the resource is denied",
}


def registry_error(status: int, body: bytes, what: str) -> errors.ImageStoreError:
    """The domain error for a registry's non-success answer."""
    detail = _error_detail(body) or _DOCKER_WORDS.get(status, f"HTTP {status}")
    message = f"{what}: {detail}"
    metadata = {"status": str(status)}
    if status in (401, 403):
        return errors.RegistryUnauthorized(message, metadata=metadata)
    if status == 404:
        return errors.RegistryNotFound(message, metadata=metadata)
    if status == 413:
        return errors.RegistryPayloadTooLarge(message, metadata=metadata)
    if status == 429:
        return errors.RegistryRateLimited(message, metadata=metadata)
    if status >= 500:
        return errors.RegistryUnavailable(message, metadata=metadata)
    return errors.RegistryRefused(message, metadata=metadata)


def _error_detail(body: bytes) -> str:
    """``code: message`` from an OCI error body, or the body's first line."""
    try:
        document = jsonparse.loads(body)
        first = document["errors"][0]
        code, message = str(first.get("code", "")), str(first.get("message", ""))
        return f"{code.lower().replace('_', ' ')}: {message}".strip(": ")[:500]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        text = body.decode("utf-8", errors="replace").strip().splitlines()
        return text[0][:200] if text else ""


async def read_limited(
    response: aiohttp.ClientResponse, limit: int, what: str, floor: SpeedFloor | None = None
) -> bytes:
    """The whole body, refusing more than ``limit`` bytes (checked while reading);
    with a ``floor``, a body arriving slower than it fails the try (Retryable)."""
    declared = response.content_length
    if declared is not None and declared > limit:
        raise errors.SizeLimitExceeded(
            f"{what} is {declared} bytes; the limit is {limit}",
            metadata={"size": str(declared), "limit": str(limit)},
        )
    parts: list[bytes] = []
    total = 0
    async with (floor or _NO_FLOOR).meter(what) as meter:
        async for chunk in response.content.iter_chunked(1 << 16):
            total += len(chunk)
            if total > limit:
                raise errors.SizeLimitExceeded(
                    f"{what} is larger than the limit of {limit} bytes",
                    metadata={"limit": str(limit)},
                )
            parts.append(chunk)
            meter.count(len(chunk))
    return b"".join(parts)


async def glance(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """A short body read whole (so the connection can be reused), or None when it
    is longer than ``limit``, slower than GLANCE_TIMEOUT or broken: then nothing
    more is read, and releasing the answer closes its connection."""
    try:
        async with asyncio.timeout(GLANCE_TIMEOUT):
            return await read_limited(response, limit, "body")
    except (errors.SizeLimitExceeded, aiohttp.ClientError, TimeoutError):
        return None


async def fail_for(response: aiohttp.ClientResponse, what: str) -> errors.ImageStoreError:
    """The error for a failed answer, from its body; 5xx and 429 are raised as Retryable."""
    body = await glance(response, MAX_ERROR_BODY) or b""
    error = registry_error(response.status, body, what)
    if response.status == 429 or response.status >= 500:
        raise Retryable(error, retry_after(response.headers.get("Retry-After")))
    return error
