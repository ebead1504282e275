"""gRPC failures → the domain errors of :mod:`imagestore.errors`: by the
ErrorInfo reason the server sent, else by status code, with what the other
details (RetryInfo, BadRequest, ResourceInfo) say.

Imported when a call has failed: a call that succeeds loads neither the error
classes nor google.rpc's error details."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from imagestore import errors


def _classes(base: type[errors.ImageStoreError]) -> list[type[errors.ImageStoreError]]:
    found = [base]
    for sub in base.__subclasses__():
        found += _classes(sub)
    return found


#: the class of each reason (each names one; the base class and the reasonless
#: client-side classes are left out)
_BY_REASON = {cls.reason: cls for cls in _classes(errors.ImageStoreError)[1:] if cls.reason}
#: the category classes, by status code (for a reason this client does not know)
_BY_STATUS = {cls.status: cls for cls in errors.ImageStoreError.__subclasses__()}


#: grpc's status codes by number (google.rpc.Status carries the number)
_CODES = {code.value[0]: code for code in grpc.StatusCode}
#: the trailer a failed call's google.rpc.Status travels in (gRPC's richer error model)
_STATUS_DETAILS_KEY = "grpc-status-details-bin"
#: the header the server names each call by (also on its log lines)
REQUEST_ID_KEY = "x-request-id"


def error(failure: grpc.RpcError) -> errors.ImageStoreError:
    """The domain exception a failed call stands for: by its ErrorInfo reason
    when the server sent one, else by status code. It holds what the server
    sent: ``reason`` (as sent; "" without an ErrorInfo), ``metadata``,
    ``retry_after`` (RetryInfo), ``field`` (BadRequest), ``resource``
    (ResourceInfo) and ``request_id`` (the call's ``x-request-id`` header)."""
    call: Any = failure
    status = _rich_status(call.trailing_metadata() or ())
    exception = _exception(
        call.code(), call.details(), status.details if status is not None else ()
    )
    headers = call.initial_metadata() if hasattr(call, "initial_metadata") else None
    exception.request_id = _request_id(headers or ())
    return exception


def _request_id(headers: Any) -> str | None:
    for key, value in headers:
        if key == REQUEST_ID_KEY and isinstance(value, str):
            return value
    return None


def _rich_status(trailers: Any) -> status_pb2.Status | None:
    """The google.rpc.Status a failed call carries in its trailers, if any (what
    grpcio-status's ``from_call`` reads, without depending on it)."""
    for key, value in trailers:
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None  # not ours to trust: the code and message still say enough
    return None


def status_error(status: status_pb2.Status) -> errors.ImageStoreError:
    """The domain exception a ``google.rpc.Status`` stands for (one item's error
    in a result, as Remove returns them), mapped as :func:`error` maps a call's."""
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    return _exception(code, status.message, status.details)


def _exception(
    code: grpc.StatusCode, details: str | None, found: Iterable[AnyMessage]
) -> errors.ImageStoreError:
    message = details or code.name.lower().replace("_", " ")
    reason, metadata = "", {}
    retry_after: float | None = None
    field: str | None = None
    resource: errors.Resource | None = None
    for detail in found:
        info = error_details_pb2.ErrorInfo()
        retry = error_details_pb2.RetryInfo()
        bad = error_details_pb2.BadRequest()
        about = error_details_pb2.ResourceInfo()
        if detail.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Unpack(retry):
            retry_after = retry.retry_delay.ToNanoseconds() / 1e9
        elif detail.Unpack(bad) and bad.field_violations:
            field = bad.field_violations[0].field
        elif detail.Unpack(about):
            resource = errors.Resource(about.resource_type, about.resource_name, about.owner)
    cls = _BY_REASON.get(reason) or _BY_STATUS.get(code.name) or errors.Internal
    if cls.status != code.name:  # a reason of another category: trust the code
        cls = _BY_STATUS.get(code.name, errors.Internal)
    exception = cls(message, metadata=metadata, resource=resource)
    exception.status = code.name
    if reason != cls.reason:  # one this client does not know, or none: as sent
        exception.reason = reason
    # as sent, not the class defaults
    exception.retry_after = retry_after
    exception.field = field
    return exception
