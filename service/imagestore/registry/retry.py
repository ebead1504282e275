"""What a failed try means: worth another (Retryable) or final, and how long to wait."""

from __future__ import annotations

import os
import socket

import aiohttp

from imagestore import errors

#: Docker Hub's registry host: a name that does not resolve there hints at a mirror
DOCKER_HUB_HOST = "registry-1.docker.io"
#: the longest ``Retry-After`` honoured (a registry asking for more is asked sooner)
MAX_RETRY_AFTER = 60.0


class Retryable(Exception):  # noqa: N818 - a signal, not an error the caller sees
    """A failure worth another try; ``final`` is raised when tries run out."""

    def __init__(self, final: errors.ImageStoreError, retry_after: float | None = None) -> None:
        super().__init__(final.message)
        self.final = final
        self.retry_after = retry_after


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form), capped."""
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER) if value else None
    except ValueError:
        return None


def connection_failure(exc: BaseException, what: str) -> Retryable:
    """A broken connection or a silent registry: worth another try."""
    if isinstance(exc, TimeoutError):
        return Retryable(errors.RegistryUnavailable(f"{what}: the registry stopped answering"))
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = exc.os_error.errno
        # asyncio's "Connect call failed (…)" hides the reason the errno gives
        reason = os.strerror(errno).lower() if errno else exc.os_error.strerror or str(exc)
        detail = f"cannot connect to {exc.host}:{exc.port}: {reason}"
        metadata = {"host": str(exc.host)[:253]}
        return Retryable(errors.RegistryUnavailable(f"{what}: {detail}", metadata=metadata))
    detail = str(exc) or type(exc).__name__
    return Retryable(errors.RegistryUnavailable(f"{what}: {detail}"))


def unresolved(host: str, failure: socket.gaierror, what: str) -> errors.RegistryUnavailable:
    """A registry name that does not resolve: final, not retried (a typo, or no
    DNS here; Docker Hub unreachable this way may be reached through a mirror)."""
    reason = failure.strerror or str(failure)
    detail = reason if "does not resolve" in reason else f"{host} does not resolve ({reason})"
    hint = (
        "check the name, or use --registry-mirror" if host == DOCKER_HUB_HOST else "check the name"
    )
    return errors.RegistryUnavailable(f"{what}: {detail}; {hint}", metadata={"host": host[:253]})
