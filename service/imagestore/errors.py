"""Domain exceptions: the one error taxonomy, at the bottom of every layer.

Each class belongs to one category that the API layer maps to one gRPC status
code (docs/design.md §7). ``reason`` is the machine-readable ErrorInfo reason and
``metadata`` carries its details. Domain code raises these and nothing else
crosses a layer boundary; the messages are safe to show to callers (they never
hold credentials).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager


class ImageStoreError(Exception):
    """Base of all domain errors."""

    reason = "IMAGESTORE_ERROR"
    #: the gRPC status code name of the category (the API maps it; the client reads it)
    status = "INTERNAL"
    #: seconds after which the same call may succeed (sent as a google.rpc.RetryInfo
    #: beside the ErrorInfo); None says nothing. A class may set a default.
    retry_after: float | None = None

    def __init__(
        self,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})
        if retry_after is not None:
            if retry_after < 0:
                raise ValueError("retry_after must not be negative")
            self.retry_after = retry_after


# ---- categories (one per status code) --------------------------------------


class InvalidArgument(ImageStoreError):
    """The caller sent something malformed (reference, digest, filter, archive...)."""

    reason = "INVALID_ARGUMENT"
    status = "INVALID_ARGUMENT"


class NotFound(ImageStoreError):
    """An image, name, blob or remote manifest does not exist."""

    reason = "NOT_FOUND"
    status = "NOT_FOUND"


class FailedPrecondition(ImageStoreError):
    """The request is valid but the current state refuses it."""

    reason = "FAILED_PRECONDITION"
    status = "FAILED_PRECONDITION"


class Aborted(ImageStoreError):
    """A concurrent operation conflicts (e.g. another prune is running)."""

    reason = "ABORTED"
    status = "ABORTED"


class PermissionDenied(ImageStoreError):
    """A registry refused the credentials."""

    reason = "PERMISSION_DENIED"
    status = "PERMISSION_DENIED"


class Unauthenticated(ImageStoreError):
    """The caller has no valid credentials for this service."""

    reason = "UNAUTHENTICATED"
    status = "UNAUTHENTICATED"


class ResourceExhausted(ImageStoreError):
    """A size limit, a rate limit or the disk ran out."""

    reason = "RESOURCE_EXHAUSTED"
    status = "RESOURCE_EXHAUSTED"


class AddressRefused(PermissionDenied):
    """A registry pointed imagestore at an address more internal than its own
    (or, in test mode, anywhere but loopback)."""

    reason = "ADDRESS_REFUSED"


class ServerBusy(ResourceExhausted):
    """Too many calls in flight: try again shortly (the status carries a RetryInfo)."""

    reason = "TOO_MANY_CONCURRENT_CALLS"
    retry_after: float | None = 1.0


class DataLoss(ImageStoreError):
    """Content does not match its digest or is not what it claims to be."""

    reason = "DATA_LOSS"
    status = "DATA_LOSS"


class OutOfRange(ImageStoreError):
    """A read past the end of what there is (a blob offset beyond its size)."""

    reason = "OUT_OF_RANGE"
    status = "OUT_OF_RANGE"


class Unavailable(ImageStoreError):
    """A dependency is unreachable, or the server is shutting down."""

    reason = "UNAVAILABLE"
    status = "UNAVAILABLE"


class DeadlineExceeded(ImageStoreError):
    """The caller's deadline passed (raised on the client side)."""

    reason = "DEADLINE_EXCEEDED"
    status = "DEADLINE_EXCEEDED"


class Cancelled(ImageStoreError):
    """The call was cancelled (raised on the client side)."""

    reason = "CANCELLED"
    status = "CANCELLED"


class Internal(ImageStoreError):
    """A bug on the other side; its details were logged there, not sent."""

    reason = "INTERNAL"


# ---- compressed content (raised by imagestore.hashing) ---------------------


class CorruptCompressedData(DataLoss):
    """Compressed bytes that do not decode: bad header, bad deflate data, bad CRC."""

    reason = "CORRUPT_COMPRESSED_DATA"


class TruncatedCompressedData(CorruptCompressedData):
    """The compressed stream ended inside a gzip member."""

    reason = "TRUNCATED_COMPRESSED_DATA"


class TrailingData(CorruptCompressedData):
    """Bytes after the last gzip member that are not another member."""

    reason = "TRAILING_DATA"


class UnsupportedCompression(CorruptCompressedData):
    """A compression this build cannot decode (e.g. zstd)."""

    reason = "UNSUPPORTED_COMPRESSION"


class SizeLimitExceeded(ResourceExhausted):
    """Content grew past a configured limit (e.g. a gzip bomb)."""

    reason = "SIZE_LIMIT_EXCEEDED"


# ---- image content ---------------------------------------------------------


class MalformedContent(InvalidArgument):
    """A manifest, index, config or archive that does not parse or validate.

    Content from a client is INVALID_ARGUMENT; the registry layer re-raises
    these as DataLoss, since there the content is not what the registry claims.
    """

    reason = "MALFORMED_CONTENT"


class UnsupportedContent(FailedPrecondition):
    """Well-formed content this store refuses: schema 1, foreign layers, artifacts."""

    reason = "UNSUPPORTED_CONTENT"


class DigestMismatch(DataLoss):
    """Bytes that do not hash to the digest (or size) they were given as."""

    reason = "DIGEST_MISMATCH"


@contextmanager
def concerning(digest: str, kind: str = "blob") -> Iterator[None]:
    """Errors raised inside name the blob they concern (a ``kind``: layer, config,
    manifest): ``digest`` in the message and as ErrorInfo metadata ``digest``. A
    decoder error such as "unexpected data after gzip member 1" names no layer."""
    try:
        yield
    except ImageStoreError as exc:
        raise naming(exc, digest, kind) from None


def naming(error: ImageStoreError, digest: str, kind: str = "blob") -> ImageStoreError:
    """``error``, or a copy of it that names ``digest`` (one that names a digest of
    its own in its metadata is left alone)."""
    if "digest" in error.metadata:
        return error
    named = copy.copy(error)
    named.metadata = {**error.metadata, "digest": digest}
    if digest not in error.message:
        named.message = f"{kind} {digest}: {error.message}"
        named.args = (named.message,)
    return named
