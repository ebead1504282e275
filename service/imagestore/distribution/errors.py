"""The OCI Distribution Spec's errors: codes, HTTP statuses and the JSON body.

A refusal is a :class:`RegistryError`; the app's error middleware writes it as
``{"errors": [{"code", "message", "detail"}]}`` with its status and headers. A
store error (``imagestore.errors``) is turned into one by :func:`from_store`,
by its class, then by its category: the codes a client acts on come from the
spec, and what the spec has no code for (a corrupt blob, an unreachable
catalog) is ``UNKNOWN`` or ``UNAVAILABLE`` with distribution's statuses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import Enum
from typing import Any

from imagestore import errors

#: sent beside a 429 and a 503: seconds before trying again
DEFAULT_RETRY_AFTER = 1


class Code(Enum):
    """An error code (the member's name) and its HTTP status."""

    BLOB_UNKNOWN = ("blob unknown to registry", 404)
    BLOB_UPLOAD_INVALID = ("blob upload invalid", 400)
    BLOB_UPLOAD_UNKNOWN = ("blob upload unknown to registry", 404)
    MANIFEST_UNKNOWN = ("manifest unknown", 404)
    NAME_UNKNOWN = ("repository name not known to registry", 404)
    NAME_INVALID = ("invalid repository name", 400)
    DIGEST_INVALID = ("provided digest did not match uploaded content", 400)
    MANIFEST_INVALID = ("manifest invalid", 400)
    MANIFEST_BLOB_UNKNOWN = ("manifest references a blob unknown to registry", 400)
    #: too large for the endpoint's bounds too, with 413 (``RegistryError(status=)``)
    SIZE_INVALID = ("provided length did not match content length", 400)
    #: distribution's code for a 416 (of its upload ranges); blob reads use it too
    RANGE_INVALID = ("invalid content range", 416)
    PAGINATION_NUMBER_INVALID = ("invalid number of results requested", 400)
    UNAUTHORIZED = ("authentication required", 401)
    DENIED = ("requested access to the resource is denied", 403)
    UNSUPPORTED = ("the operation is unsupported", 405)
    TOOMANYREQUESTS = ("too many requests", 429)
    UNKNOWN = ("unknown error", 500)
    UNAVAILABLE = ("service unavailable", 503)

    @property
    def status(self) -> int:
        return self.value[1]


class RegistryError(Exception):
    """A refusal in the spec's words: code, message, optional detail and headers."""

    def __init__(
        self,
        code: Code,
        message: str,
        *,
        detail: Any = None,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = dict(headers or {})
        self._status = status

    @property
    def status(self) -> int:
        """The code's status, unless this refusal names another (413 for SIZE_INVALID)."""
        return self._status or self.code.status

    def body(self) -> bytes:
        entry: dict[str, Any] = {"code": self.code.name, "message": self.message}
        if self.detail is not None:
            entry["detail"] = self.detail
        return json.dumps({"errors": [entry]}).encode()


def too_many_requests(message: str, retry_after: float | None) -> RegistryError:
    seconds = max(1, round(retry_after)) if retry_after else DEFAULT_RETRY_AFTER
    return RegistryError(Code.TOOMANYREQUESTS, message, headers={"Retry-After": str(seconds)})


#: store errors with a code of their own, most specific first
_BY_CLASS: tuple[tuple[type[errors.ImageStoreError], Code], ...] = (
    (errors.BlobNotFound, Code.BLOB_UNKNOWN),
    (errors.ManifestUnknown, Code.MANIFEST_UNKNOWN),
    (errors.DigestInvalid, Code.DIGEST_INVALID),
    (errors.ReferenceInvalid, Code.NAME_INVALID),
    (errors.RangeInvalid, Code.RANGE_INVALID),
    (errors.OutOfRange, Code.RANGE_INVALID),
    (errors.MalformedContent, Code.MANIFEST_INVALID),
)
#: the rest, by category (the gRPC code's name)
_BY_STATUS = {
    "NOT_FOUND": Code.NAME_UNKNOWN,
    "INVALID_ARGUMENT": Code.NAME_INVALID,
    "UNAUTHENTICATED": Code.UNAUTHORIZED,
    "PERMISSION_DENIED": Code.DENIED,
    "UNAVAILABLE": Code.UNAVAILABLE,
    "FAILED_PRECONDITION": Code.UNSUPPORTED,
}


def from_store(exc: errors.ImageStoreError) -> RegistryError:
    """The registry error a store error becomes (its message kept)."""
    detail = dict(exc.metadata) or None
    if exc.status == "RESOURCE_EXHAUSTED":
        return too_many_requests(exc.message, exc.retry_after)
    for kind, code in _BY_CLASS:
        if isinstance(exc, kind):
            return RegistryError(code, exc.message, detail=detail)
    code = _BY_STATUS.get(exc.status, Code.UNKNOWN)
    headers = {"Retry-After": str(DEFAULT_RETRY_AFTER)} if code is Code.UNAVAILABLE else None
    return RegistryError(code, exc.message, detail=detail, headers=headers)
