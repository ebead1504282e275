"""What a failed try means: worth another (Retryable) or final, and how long to wait."""

from __future__ import annotations

import aiohttp

from imagestore import errors

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
        reason = exc.os_error.strerror or str(exc.os_error)
        detail = f"cannot connect to {exc.host}:{exc.port}: {reason}"
        metadata = {"host": str(exc.host)[:253]}
        return Retryable(errors.RegistryUnavailable(f"{what}: {detail}", metadata=metadata))
    detail = str(exc) or type(exc).__name__
    return Retryable(errors.RegistryUnavailable(f"{what}: {detail}"))
