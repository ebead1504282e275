"""Domain exceptions: the one error taxonomy, at the bottom of every layer.

Each class belongs to one category that the API layer maps to one gRPC status
code (docs/design.md §7), and sends one ErrorInfo ``reason``: a :class:`Reason`,
whose names are those of the API's ``ErrorReason`` enum (this module may not
import the generated code, so a test keeps the two equal). A raise site picks
the class of its situation (``ImageNotFound``, ``ReferenceInvalid``...); the
category classes themselves (``NotFound``...) carry a generic reason, the
fallback for a situation no specific reason fits.

``metadata`` carries the reason's details (ErrorInfo metadata); ``field``
names the request field an INVALID_ARGUMENT is about (google.rpc.BadRequest);
``resource`` what a NOT_FOUND is about (google.rpc.ResourceInfo); and
``retry_after`` when the same call may succeed (google.rpc.RetryInfo). Domain
code raises these and nothing else crosses a layer boundary; the messages are
safe to show to callers (they never hold credentials).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar


class Reason(StrEnum):
    """Every ErrorInfo reason the server sends: the names of the proto's
    ``imagestore.v1.ErrorReason`` (its comments say when each is sent, with
    which code and metadata). A reason names one situation and one code."""

    # Fallbacks, one per code: sent only when no specific reason fits.
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    DATA_LOSS = "DATA_LOSS"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"
    # INVALID_ARGUMENT
    REFERENCE_INVALID = "REFERENCE_INVALID"
    DIGEST_INVALID = "DIGEST_INVALID"
    PLATFORM_INVALID = "PLATFORM_INVALID"
    FILTER_INVALID = "FILTER_INVALID"
    PAGE_TOKEN_INVALID = "PAGE_TOKEN_INVALID"
    PAGE_SIZE_INVALID = "PAGE_SIZE_INVALID"
    RANGE_INVALID = "RANGE_INVALID"
    IMAGE_ID_AMBIGUOUS = "IMAGE_ID_AMBIGUOUS"
    ARGUMENT_MISSING = "ARGUMENT_MISSING"
    MALFORMED_CONTENT = "MALFORMED_CONTENT"
    OPTION_INVALID = "OPTION_INVALID"
    MESSAGE_ORDER_INVALID = "MESSAGE_ORDER_INVALID"
    CURSOR_INVALID = "CURSOR_INVALID"
    # NOT_FOUND
    IMAGE_NOT_FOUND = "IMAGE_NOT_FOUND"
    BLOB_NOT_FOUND = "BLOB_NOT_FOUND"
    PLATFORM_NOT_FOUND = "PLATFORM_NOT_FOUND"
    MANIFEST_UNKNOWN = "MANIFEST_UNKNOWN"
    REGISTRY_NOT_FOUND = "REGISTRY_NOT_FOUND"
    # FAILED_PRECONDITION
    REMOVE_CONFLICT = "REMOVE_CONFLICT"
    INDEX_INCOMPLETE = "INDEX_INCOMPLETE"
    UNSUPPORTED_CONTENT = "UNSUPPORTED_CONTENT"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    CREDENTIALS_INSECURE = "CREDENTIALS_INSECURE"
    CREDENTIAL_HELPER_FAILED = "CREDENTIAL_HELPER_FAILED"
    REGISTRY_REFUSED = "REGISTRY_REFUSED"
    REGISTRY_CERTS_INVALID = "REGISTRY_CERTS_INVALID"
    STORE_IN_USE = "STORE_IN_USE"
    STORE_ROOT_UNSAFE = "STORE_ROOT_UNSAFE"
    CATALOG_TOO_NEW = "CATALOG_TOO_NEW"
    LISTENER_INSECURE = "LISTENER_INSECURE"
    BLOB_DIR_MISMATCH = "BLOB_DIR_MISMATCH"
    # ABORTED
    PRUNE_RUNNING = "PRUNE_RUNNING"
    CHECK_RUNNING = "CHECK_RUNNING"
    # PERMISSION_DENIED
    REGISTRY_UNAUTHORIZED = "REGISTRY_UNAUTHORIZED"
    ADDRESS_REFUSED = "ADDRESS_REFUSED"
    TOKEN_REDIRECT_REFUSED = "TOKEN_REDIRECT_REFUSED"
    # UNAUTHENTICATED
    BEARER_TOKEN_INVALID = "BEARER_TOKEN_INVALID"
    # RESOURCE_EXHAUSTED
    SIZE_LIMIT_EXCEEDED = "SIZE_LIMIT_EXCEEDED"
    TOO_MANY_CONCURRENT_CALLS = "TOO_MANY_CONCURRENT_CALLS"
    DISK_FULL = "DISK_FULL"
    REGISTRY_RATE_LIMITED = "REGISTRY_RATE_LIMITED"
    REGISTRY_PAYLOAD_TOO_LARGE = "REGISTRY_PAYLOAD_TOO_LARGE"
    # DATA_LOSS
    DIGEST_MISMATCH = "DIGEST_MISMATCH"
    DIFF_ID_MISMATCH = "DIFF_ID_MISMATCH"
    BLOB_CORRUPT = "BLOB_CORRUPT"
    CATALOG_CORRUPT = "CATALOG_CORRUPT"
    REGISTRY_RESPONSE_INVALID = "REGISTRY_RESPONSE_INVALID"
    CORRUPT_COMPRESSED_DATA = "CORRUPT_COMPRESSED_DATA"
    TRUNCATED_COMPRESSED_DATA = "TRUNCATED_COMPRESSED_DATA"
    TRAILING_DATA = "TRAILING_DATA"
    UNSUPPORTED_COMPRESSION = "UNSUPPORTED_COMPRESSION"
    # OUT_OF_RANGE (a read past the end is the code's first situation: its reason
    # is specific)
    OUT_OF_RANGE = "OUT_OF_RANGE"
    CURSOR_EXPIRED = "CURSOR_EXPIRED"
    # UNAVAILABLE
    REGISTRY_UNAVAILABLE = "REGISTRY_UNAVAILABLE"
    REGISTRY_CERTIFICATE_UNTRUSTED = "REGISTRY_CERTIFICATE_UNTRUSTED"
    CREDENTIAL_HELPER_TIMEOUT = "CREDENTIAL_HELPER_TIMEOUT"
    IO_ERROR = "IO_ERROR"
    LISTEN_FAILED = "LISTEN_FAILED"
    CATALOG_UNAVAILABLE = "CATALOG_UNAVAILABLE"
    LEASE_EXPIRED = "LEASE_EXPIRED"


@dataclass(frozen=True)
class Resource:
    """What a NOT_FOUND is about (sent as a google.rpc.ResourceInfo)."""

    #: e.g. "image", "blob", "manifest", "platform"
    type: str
    #: the name or digest asked for
    name: str
    #: what holds it: the repository of a manifest, the image of a platform
    owner: str = ""


class ImageStoreError(Exception):
    """Base of all domain errors."""

    #: the ErrorInfo reason; an instance may hold one this module does not know
    #: (the client keeps a newer server's reason as the string it received)
    reason: str = Reason.INTERNAL
    #: the gRPC status code name of the category (the API maps it; the client reads it)
    status = "INTERNAL"
    #: seconds after which the same call may succeed (sent as a google.rpc.RetryInfo
    #: beside the ErrorInfo); None says nothing. A class may set a default.
    retry_after: float | None = None
    #: the request field an INVALID_ARGUMENT is about (google.rpc.BadRequest); the
    #: raise site, the servicer (:func:`about_field`) or a class default names it
    field: str | None = None
    #: ResourceInfo of a NOT_FOUND: its type, and the metadata keys of its name
    #: and owner
    resource_type: ClassVar[str] = ""
    resource_key: ClassVar[str] = ""
    owner_key: ClassVar[str] = ""
    #: the metadata key holding the offending input: the API finds the request
    #: field that holds it when no field was named
    subject_key: ClassVar[str] = ""
    #: the server's ID of the failed call (its ``x-request-id`` response header,
    #: on each of its log lines): quote it when reporting the failure
    request_id: str | None = None

    def __init__(
        self,
        message: str,
        *,
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        field: str | None = None,
        resource: Resource | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})
        if retry_after is not None:
            if retry_after < 0:
                raise ValueError("retry_after must not be negative")
            self.retry_after = retry_after
        if field is not None:
            self.field = field
        self._resource = resource

    @property
    def resource(self) -> Resource | None:
        """What the error is about, when its class says (or it was given)."""
        if self._resource is not None or not self.resource_type:
            return self._resource
        name = self.metadata.get(self.resource_key, "")
        owner = self.metadata.get(self.owner_key, "") if self.owner_key else ""
        return Resource(self.resource_type, name, owner)

    @property
    def subject(self) -> str:
        """The offending input as the metadata holds it ("" when not known)."""
        return self.metadata.get(self.subject_key, "") if self.subject_key else ""


# ---- categories (one per status code; their reason is the fallback) ----------


class InvalidArgument(ImageStoreError):
    """The caller sent something malformed (reference, digest, filter, archive...)."""

    reason = Reason.INVALID_ARGUMENT
    status = "INVALID_ARGUMENT"


class NotFound(ImageStoreError):
    """An image, name, blob or remote manifest does not exist."""

    reason = Reason.NOT_FOUND
    status = "NOT_FOUND"


class FailedPrecondition(ImageStoreError):
    """The request is valid but the current state refuses it."""

    reason = Reason.FAILED_PRECONDITION
    status = "FAILED_PRECONDITION"


class Aborted(ImageStoreError):
    """A concurrent operation conflicts (e.g. another prune is running)."""

    reason = Reason.ABORTED
    status = "ABORTED"


class PermissionDenied(ImageStoreError):
    """A registry refused the credentials."""

    reason = Reason.PERMISSION_DENIED
    status = "PERMISSION_DENIED"


class Unauthenticated(ImageStoreError):
    """The caller has no valid credentials for this service."""

    reason = Reason.UNAUTHENTICATED
    status = "UNAUTHENTICATED"


class ResourceExhausted(ImageStoreError):
    """A size limit, a rate limit or the disk ran out."""

    reason = Reason.RESOURCE_EXHAUSTED
    status = "RESOURCE_EXHAUSTED"


class DataLoss(ImageStoreError):
    """Content does not match its digest or is not what it claims to be."""

    reason = Reason.DATA_LOSS
    status = "DATA_LOSS"


class OutOfRange(ImageStoreError):
    """A read past the end of what there is (a blob offset beyond its size)."""

    reason = Reason.OUT_OF_RANGE
    status = "OUT_OF_RANGE"


class Unavailable(ImageStoreError):
    """A dependency is unreachable, or the server is shutting down."""

    reason = Reason.UNAVAILABLE
    status = "UNAVAILABLE"


class DeadlineExceeded(ImageStoreError):
    """The caller's deadline passed (raised on the client side: gRPC ends the
    call itself, so there is no ErrorInfo and no reason)."""

    reason = ""
    status = "DEADLINE_EXCEEDED"


class Cancelled(ImageStoreError):
    """The call was cancelled (raised on the client side; no reason, as above)."""

    reason = ""
    status = "CANCELLED"


class Internal(ImageStoreError):
    """A bug on the other side; its details were logged there, not sent."""

    reason = Reason.INTERNAL


# ---- requests (INVALID_ARGUMENT) --------------------------------------------


class ReferenceInvalid(InvalidArgument):
    """An image reference that does not parse, or a digest reference naming
    other content (metadata ``reference``)."""

    reason = Reason.REFERENCE_INVALID
    subject_key = "reference"


class DigestInvalid(InvalidArgument):
    """A digest that is not ``sha256:<64 hex>`` (metadata ``digest``)."""

    reason = Reason.DIGEST_INVALID
    subject_key = "digest"


class PlatformInvalid(InvalidArgument):
    """A platform that is not ``os[/arch[/variant]]`` (metadata ``platform``)."""

    reason = Reason.PLATFORM_INVALID
    subject_key = "platform"


class FilterInvalid(InvalidArgument):
    """A filter docker would refuse, or too many of them (metadata ``filter``)."""

    reason = Reason.FILTER_INVALID
    field = "filters"


class PageTokenInvalid(InvalidArgument):
    """A page token this server did not hand out."""

    reason = Reason.PAGE_TOKEN_INVALID
    field = "page_token"


class PageSizeInvalid(InvalidArgument):
    """A negative page size."""

    reason = Reason.PAGE_SIZE_INVALID
    field = "page_size"


class CursorInvalid(InvalidArgument):
    """A WatchEvents cursor this store never handed out (past its last event)."""

    reason = Reason.CURSOR_INVALID


class CursorExpired(OutOfRange):
    """A WatchEvents cursor older than the events journal keeps."""

    reason = Reason.CURSOR_EXPIRED


class RangeInvalid(InvalidArgument):
    """A negative offset or limit of a read."""

    reason = Reason.RANGE_INVALID


class ImageIdAmbiguous(InvalidArgument):
    """An image ID prefix matching several images (metadata ``prefix``)."""

    reason = Reason.IMAGE_ID_AMBIGUOUS
    subject_key = "prefix"


class ArgumentMissing(InvalidArgument):
    """A request without something it must have (its ``field`` says what)."""

    reason = Reason.ARGUMENT_MISSING


class MessageOrderInvalid(InvalidArgument):
    """A client stream's messages out of their order (a Load header after a chunk)."""

    reason = Reason.MESSAGE_ORDER_INVALID


class MalformedContent(InvalidArgument):
    """A manifest, index, config or archive that does not parse or validate.

    Content from a client is INVALID_ARGUMENT; the registry layer re-raises
    these as RegistryResponseInvalid, since there the content is not what the
    registry claims.
    """

    reason = Reason.MALFORMED_CONTENT


class OptionInvalid(InvalidArgument):
    """A server option's value that cannot be used (at start only)."""

    reason = Reason.OPTION_INVALID


# ---- not found (NOT_FOUND) ---------------------------------------------------


class ImageNotFound(NotFound):
    """No image by that name, ID or prefix (metadata ``image``)."""

    reason = Reason.IMAGE_NOT_FOUND
    resource_type = "image"
    resource_key = "image"


class BlobNotFound(NotFound):
    """A blob the store does not hold (metadata ``digest``)."""

    reason = Reason.BLOB_NOT_FOUND
    resource_type = "blob"
    resource_key = "digest"


class PlatformNotFound(NotFound):
    """An image or index without the platform asked for (metadata ``platform``)."""

    reason = Reason.PLATFORM_NOT_FOUND
    resource_type = "platform"
    resource_key = "platform"
    owner_key = "image"


class ManifestUnknown(NotFound):
    """A registry has no manifest by that tag or digest (metadata ``repository``,
    ``reference``)."""

    reason = Reason.MANIFEST_UNKNOWN
    resource_type = "manifest"
    resource_key = "reference"
    owner_key = "repository"


class RegistryNotFound(NotFound):
    """A registry answered 404 to anything but a manifest (a blob, an upload)."""

    reason = Reason.REGISTRY_NOT_FOUND
    resource_type = "registry blob"
    resource_key = "digest"


# ---- state (FAILED_PRECONDITION) ---------------------------------------------


class RemoveConflict(FailedPrecondition):
    """Docker's conflict: removing this image must be forced (metadata ``image``)."""

    reason = Reason.REMOVE_CONFLICT


class IndexIncomplete(FailedPrecondition):
    """A push or save of a whole index some of whose platforms are not stored."""

    reason = Reason.INDEX_INCOMPLETE


class UnsupportedContent(FailedPrecondition):
    """Well-formed content this store refuses: nested indexes, an index whose
    uncompressed layers would change its digest."""

    reason = Reason.UNSUPPORTED_CONTENT


class UnsupportedMediaType(UnsupportedContent):
    """A media type this store refuses: schema 1, foreign or zstd layers, artifacts
    (metadata ``mediaType``)."""

    reason = Reason.UNSUPPORTED_MEDIA_TYPE


class CredentialsInsecure(FailedPrecondition):
    """Registry credentials sent over a connection that could be sniffed."""

    reason = Reason.CREDENTIALS_INSECURE


class CredentialHelperFailed(FailedPrecondition):
    """A credential helper is missing, failed, or gave no credentials."""

    reason = Reason.CREDENTIAL_HELPER_FAILED


class RegistryRefused(FailedPrecondition):
    """A registry's 4xx that no other reason covers (metadata ``status``)."""

    reason = Reason.REGISTRY_REFUSED


class RegistryCertsInvalid(FailedPrecondition):
    """A certs.d directory whose client certificate has no key."""

    reason = Reason.REGISTRY_CERTS_INVALID


class StoreInUse(FailedPrecondition):
    """Another process holds the store root's lock (at start)."""

    reason = Reason.STORE_IN_USE


class StoreRootUnsafe(FailedPrecondition):
    """A store root others may enter that cannot be made private (at start)."""

    reason = Reason.STORE_ROOT_UNSAFE


class CatalogTooNew(FailedPrecondition):
    """A catalog written by a newer imagestore (at start)."""

    reason = Reason.CATALOG_TOO_NEW


class BlobDirMismatch(FailedPrecondition):
    """A blob directory that is not the catalog's (at start)."""

    reason = Reason.BLOB_DIR_MISMATCH


class ListenerInsecure(FailedPrecondition):
    """A listener other machines can reach, without TLS (at start)."""

    reason = Reason.LISTENER_INSECURE


# ---- concurrency (ABORTED) ---------------------------------------------------


class PruneRunning(Aborted):
    """Another prune is running."""

    reason = Reason.PRUNE_RUNNING


class CheckRunning(Aborted):
    """Another Check is running (the raise site says when to retry)."""

    reason = Reason.CHECK_RUNNING


# ---- refusals (PERMISSION_DENIED, UNAUTHENTICATED) -----------------------------


class RegistryUnauthorized(PermissionDenied):
    """A registry or its token service refused the credentials (or wants some)."""

    reason = Reason.REGISTRY_UNAUTHORIZED


class AddressRefused(PermissionDenied):
    """A registry pointed imagestore at an address more internal than its own
    (or, in test mode, anywhere but loopback)."""

    reason = Reason.ADDRESS_REFUSED


class TokenRedirectRefused(PermissionDenied):
    """A token service redirected a request that carries a refresh token."""

    reason = Reason.TOKEN_REDIRECT_REFUSED


class BearerTokenInvalid(Unauthenticated):
    """A call without a bearer token this server accepts."""

    reason = Reason.BEARER_TOKEN_INVALID


# ---- limits (RESOURCE_EXHAUSTED) ---------------------------------------------


class SizeLimitExceeded(ResourceExhausted):
    """Content grew past a configured limit (e.g. a gzip bomb)."""

    reason = Reason.SIZE_LIMIT_EXCEEDED


class ServerBusy(ResourceExhausted):
    """Too many calls in flight: try again shortly (the status carries a RetryInfo)."""

    reason = Reason.TOO_MANY_CONCURRENT_CALLS
    retry_after: float | None = 1.0


class DiskFull(ResourceExhausted):
    """The store's disk is full, or has less room than a Load declares."""

    reason = Reason.DISK_FULL


class RegistryRateLimited(ResourceExhausted):
    """A registry kept answering 429 (RetryInfo: its Retry-After, else 5 s)."""

    reason = Reason.REGISTRY_RATE_LIMITED
    retry_after: float | None = 5.0


class RegistryPayloadTooLarge(ResourceExhausted):
    """A registry answered 413: it takes nothing that large."""

    reason = Reason.REGISTRY_PAYLOAD_TOO_LARGE


# ---- content (DATA_LOSS) -----------------------------------------------------


class CorruptCompressedData(DataLoss):
    """Compressed bytes that do not decode: bad header, bad deflate data, bad CRC."""

    reason = Reason.CORRUPT_COMPRESSED_DATA


class TruncatedCompressedData(CorruptCompressedData):
    """The compressed stream ended inside a gzip member."""

    reason = Reason.TRUNCATED_COMPRESSED_DATA


class TrailingData(CorruptCompressedData):
    """Bytes after the last gzip member that are not another member."""

    reason = Reason.TRAILING_DATA


class UnsupportedCompression(CorruptCompressedData):
    """A compression this build cannot decode (e.g. zstd)."""

    reason = Reason.UNSUPPORTED_COMPRESSION


class DigestMismatch(DataLoss):
    """Bytes that do not hash to the digest (or size) they were given as."""

    reason = Reason.DIGEST_MISMATCH


class DiffIdMismatch(DigestMismatch):
    """A layer whose uncompressed tar does not hash to the config's diff_id."""

    reason = Reason.DIFF_ID_MISMATCH


class BlobCorrupt(DataLoss):
    """A stored blob that no longer hashes to its name (now marked for repair)."""

    reason = Reason.BLOB_CORRUPT


class CatalogCorrupt(DataLoss):
    """A catalog SQLite cannot open or read."""

    reason = Reason.CATALOG_CORRUPT


class RegistryResponseInvalid(DataLoss):
    """A registry or token service answered something unusable: a document
    that does not parse, no token, a redirect nowhere or to plain HTTP."""

    reason = Reason.REGISTRY_RESPONSE_INVALID


# ---- dependencies (UNAVAILABLE) ------------------------------------------------


class RegistryUnavailable(Unavailable):
    """A registry unreachable, failing (5xx), silent or too slow, after its
    retries (RetryInfo: its Retry-After, else 5 s)."""

    reason = Reason.REGISTRY_UNAVAILABLE
    retry_after: float | None = 5.0


class RegistryCertificateUntrusted(Unavailable):
    """A registry's TLS certificate that no configured CA vouches for."""

    reason = Reason.REGISTRY_CERTIFICATE_UNTRUSTED


class CredentialHelperTimeout(Unavailable):
    """A credential helper that did not answer in time."""

    reason = Reason.CREDENTIAL_HELPER_TIMEOUT


class IoError(Unavailable):
    """The store's disk failed a read or a write (not a full disk)."""

    reason = Reason.IO_ERROR


class ListenFailed(Unavailable):
    """A listener that cannot bind (at start)."""

    reason = Reason.LISTEN_FAILED


class CatalogUnavailable(Unavailable):
    """A catalog database that cannot be reached, or whose connection was lost
    (RetryInfo: 1 s)."""

    reason = Reason.CATALOG_UNAVAILABLE
    retry_after: float | None = 1.0


class LeaseExpired(Unavailable):
    """An operation's lease expired while its replica went unheard for longer
    than the replica timeout: nothing was committed (RetryInfo: 1 s)."""

    reason = Reason.LEASE_EXPIRED
    retry_after: float | None = 1.0


# ---- helpers -------------------------------------------------------------------


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


@contextmanager
def about_field(field: str) -> Iterator[None]:
    """An INVALID_ARGUMENT raised inside that names no request field is about
    ``field`` (for a handler that knows which field it passed on)."""
    try:
        yield
    except InvalidArgument as exc:
        if exc.field is None:
            exc.field = field
        raise


def retry_later(error: ImageStoreError, seconds: float | None) -> ImageStoreError:
    """``error``, or a copy of it saying to retry after ``seconds`` (a registry's
    Retry-After) when they are given."""
    if seconds is None:
        return error
    later = copy.copy(error)
    later.retry_after = max(seconds, 0.0)
    return later
