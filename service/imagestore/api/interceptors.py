"""Server interceptors: access log + metrics, bearer-token auth, and the one
place where domain errors become gRPC statuses with their detail messages
(google.rpc ErrorInfo, RetryInfo, BadRequest, ResourceInfo: docs/design.md §7).

Order (outermost first): AccessLog, TokenAuth, ErrorMapping — so refused
calls are logged too, and handlers only ever raise domain exceptions.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from imagestore import errors
from imagestore.api.metrics import Metrics
from imagestore.logs import REQUEST_ID

log = logging.getLogger("imagestore.rpc")

#: ErrorInfo.domain: the reasons are the names of imagestore.v1.ErrorReason
DOMAIN = "imagestore"
HEALTH_PREFIX = "/grpc.health.v1.Health/"
#: a metadata value this long may be a cut copy of the request's (raise sites
#: cut what they echo): a field starting with it holds it
CUT_SUBJECT = 64


def status_code(exc: errors.ImageStoreError) -> grpc.StatusCode:
    """The category's code (each error class names it in ``status``)."""
    return grpc.StatusCode[exc.status]


def _packed(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def rich_status(exc: errors.ImageStoreError, field: str | None = None) -> bytes:
    """:func:`status_message` serialized (a call's ``grpc-status-details-bin``)."""
    return bytes(status_message(exc, field).SerializeToString())


def status_message(exc: errors.ImageStoreError, field: str | None = None) -> status_pb2.Status:
    """The google.rpc.Status for ``exc``: its ErrorInfo first (reason,
    domain, metadata), then a RetryInfo when it says when to retry, a BadRequest
    naming ``field`` (an INVALID_ARGUMENT's request field, when known), and a
    ResourceInfo when it is about a resource (a NOT_FOUND's)."""
    code = status_code(exc)
    info = error_details_pb2.ErrorInfo(
        reason=exc.reason or errors.Reason.INTERNAL, domain=DOMAIN, metadata=exc.metadata
    )
    details = [_packed(info)]
    if exc.retry_after is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(round(exc.retry_after * 1e9))
        details.append(_packed(retry))
    if field:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=field, description=exc.message, reason=info.reason
        )
        details.append(_packed(error_details_pb2.BadRequest(field_violations=[violation])))
    resource = exc.resource
    if resource is not None:
        details.append(
            _packed(
                error_details_pb2.ResourceInfo(
                    resource_type=resource.type,
                    resource_name=resource.name,
                    owner=resource.owner,
                    description=exc.message,
                )
            )
        )
    return status_pb2.Status(code=code.value[0], message=exc.message, details=details)


async def abort(
    context: grpc.aio.ServicerContext[Any, Any],
    exc: errors.ImageStoreError,
    field: str | None = None,
) -> None:
    """End the call with ``exc``'s code, message and detail messages."""
    details = rich_status(exc, field)
    await context.abort(
        status_code(exc), exc.message, trailing_metadata=(("grpc-status-details-bin", details),)
    )


def request_field(request: Message, subject: str) -> str | None:
    """The path of the request field holding ``subject`` (the offending input an
    error echoes): ``image``, ``images[1]``, ``auth.username``. A field equal to
    it first, else one containing it (a digest inside a reference); None when
    none does."""
    return _field_path(request, subject, _equal) or _field_path(request, subject, _contains)


def _field_path(
    request: Message, subject: str, holds: Callable[[str, str], bool], prefix: str = ""
) -> str | None:
    for descriptor, value in request.ListFields():
        path = prefix + descriptor.name
        repeated = descriptor.is_repeated
        if descriptor.type == FieldDescriptor.TYPE_STRING:
            for position, item in enumerate(value if repeated else [value]):
                if holds(item, subject):
                    return f"{path}[{position}]" if repeated else path
        elif descriptor.type == FieldDescriptor.TYPE_MESSAGE and not repeated:
            found = _field_path(value, subject, holds, path + ".")
            if found is not None:
                return found
    return None


def _equal(value: str, subject: str) -> bool:
    value = value.strip()
    return value == subject or (len(subject) >= CUT_SUBJECT and value.startswith(subject))


def _contains(value: str, subject: str) -> bool:
    return subject in value


def _streamed_field(handler: Handler) -> str | None:
    """The bytes field of a streamed request (Load's ``chunk``): what content
    errors of such a call are about."""
    message_class = getattr(handler.request_deserializer, "__self__", None)
    descriptor = getattr(message_class, "DESCRIPTOR", None)
    for field in getattr(descriptor, "fields", ()):
        if field.type == FieldDescriptor.TYPE_BYTES:
            return str(field.name)
    return None


def offending_field(exc: errors.ImageStoreError, request: Any, streamed: str | None) -> str | None:
    """The request field an INVALID_ARGUMENT is about: the one the error names,
    else the one holding its subject, else (a streamed request) the stream's
    bytes field; None for other codes or when nothing says."""
    if exc.status != "INVALID_ARGUMENT":
        return None
    if exc.field:
        return exc.field
    if isinstance(request, Message):
        return request_field(request, exc.subject) if exc.subject else None
    return streamed


Behavior = Callable[..., Any]
if TYPE_CHECKING:  # generic only in the type stubs
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]


def wrap_handler(
    handler: Handler,
    wrap_unary: Callable[[Behavior], Behavior],
    wrap_stream: Callable[[Behavior], Behavior],
) -> Handler:
    """The same handler with its behavior wrapped (unary or streaming response)."""
    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(wrap_unary(handler.unary_unary), **kwargs)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(wrap_unary(handler.stream_unary), **kwargs)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(wrap_stream(handler.unary_stream), **kwargs)
    assert handler.stream_stream is not None
    return grpc.stream_stream_rpc_method_handler(wrap_stream(handler.stream_stream), **kwargs)


class ErrorMapping(grpc.aio.ServerInterceptor):
    """Domain exceptions → status codes + detail messages (:func:`rich_status`);
    anything else → INTERNAL (details logged, never sent)."""

    async def intercept_service(
        self,
        continuation: Continuation,
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        streamed = _streamed_field(handler) if handler.request_streaming else None

        async def handle(
            exc: Exception, request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> None:
            if isinstance(exc, errors.ImageStoreError):
                await abort(context, exc, offending_field(exc, request, streamed))
            log.exception("internal error in %s", method)
            await abort(context, errors.Internal("internal error"))

        def unary(behavior: Behavior) -> Behavior:
            async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                try:
                    return await behavior(request, context)
                except (grpc.aio.AbortError, grpc.RpcError):
                    raise
                except Exception as exc:
                    await handle(exc, request, context)

            return wrapper

        def stream(behavior: Behavior) -> Behavior:
            async def wrapper(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                try:
                    async for response in behavior(request, context):
                        yield response
                except (grpc.aio.AbortError, grpc.RpcError):
                    raise
                except Exception as exc:
                    await handle(exc, request, context)

            return wrapper

        return wrap_handler(handler, unary, stream)


class TokenAuth(grpc.aio.ServerInterceptor):
    """``authorization: Bearer <token>`` on every call except health probes."""

    def __init__(self, tokens: set[str]) -> None:
        self._tokens = {token.encode() for token in tokens}

    def _allowed(self, details: grpc.HandlerCallDetails) -> bool:
        if details.method.startswith(HEALTH_PREFIX):
            return True
        for key, value in details.invocation_metadata or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                offered = value[len("Bearer ") :].encode()
                return any(hmac.compare_digest(offered, token) for token in self._tokens)
        return False

    async def intercept_service(
        self,
        continuation: Continuation,
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        if handler is None or self._allowed(details):
            return handler

        async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await abort(context, errors.BearerTokenInvalid("missing or invalid bearer token"))

        async def refuse_stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            await refuse(request, context)
            yield None  # pragma: no cover - refuse() always raises

        return wrap_handler(handler, lambda _: refuse, lambda _: refuse_stream)


class AccessLog(grpc.aio.ServerInterceptor):
    """One log line and the metrics per RPC: request ID, peer, method, the
    image it names, code, duration, bytes.

    Every call gets a request ID (the client's ``x-request-id`` when it is
    short and printable, else a new one), sent back first thing in the
    response's initial metadata, so that failed calls have it too, and set
    in :data:`~imagestore.logs.REQUEST_ID` for every record of the call."""

    def __init__(self, metrics: Metrics | None) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Continuation,
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        # Interceptors and handler run in the call's own task: the variable
        # is the call's alone, and the inner interceptors' records carry it.
        request_id = accepted_request_id(details.invocation_metadata) or new_request_id()
        REQUEST_ID.set(request_id)
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        metrics = self._metrics

        def done(
            context: grpc.aio.ServicerContext[Any, Any],
            request: Any,
            peer: str,
            start: float,
            deadline: float | None,
            sent: int,
            received: int,
            failed: BaseException | None,
        ) -> None:
            code = context.code() if failed is not None else None
            if isinstance(failed, Exception) and code is None:
                code = grpc.StatusCode.UNKNOWN
            name = "OK" if code is None else getattr(code, "name", str(code))
            if failed is not None and not isinstance(failed, Exception):
                # grpc cancels the handler both when the client cancels and when
                # the deadline passes: the clock tells which the client saw
                expired = deadline is not None and time.perf_counter() >= deadline
                name = "DEADLINE_EXCEEDED" if expired else "CANCELLED"
            seconds = time.perf_counter() - start
            entry: dict[str, Any] = {
                "method": method,
                "code": name,
                "duration_ms": round(seconds * 1000, 1),
                "bytes_in": received,
                "bytes_out": sent,
            }
            entry.update(request_subjects(request))
            entry["peer"] = peer
            entry["request_id"] = request_id
            log.info("rpc", extra=entry)
            if metrics is not None:
                metrics.observe(method, name, seconds, received, sent)

        def size(message: Any) -> int:
            return int(message.ByteSize()) if hasattr(message, "ByteSize") else 0

        async def announce(context: grpc.aio.ServicerContext[Any, Any]) -> None:
            await context.send_initial_metadata(((REQUEST_ID_KEY, request_id),))

        def unary(behavior: Behavior) -> Behavior:
            async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                # the peer asked up front, as stream() below must
                start, peer = time.perf_counter(), context.peer()
                deadline = _deadline(context, start)
                counted = _CountingIterator(request) if hasattr(request, "__aiter__") else None
                try:
                    await announce(context)
                    response = await behavior(counted or request, context)
                except BaseException as exc:
                    received = counted.bytes if counted else size(request)
                    done(context, request, peer, start, deadline, 0, received, exc)
                    raise
                received = counted.bytes if counted else size(request)
                done(context, request, peer, start, deadline, size(response), received, None)
                return response

            return wrapper

        def stream(behavior: Behavior) -> Behavior:
            async def wrapper(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                # asked now: the finally below may run after grpc has released the call
                start, sent, peer = time.perf_counter(), 0, context.peer()
                deadline = _deadline(context, start)
                counted = _CountingIterator(request) if hasattr(request, "__aiter__") else None
                failed: BaseException | None = None
                try:
                    await announce(context)
                    async for response in behavior(counted or request, context):
                        sent += size(response)
                        yield response
                except BaseException as exc:
                    failed = exc
                    raise
                finally:
                    received = counted.bytes if counted else size(request)
                    done(context, request, peer, start, deadline, sent, received, failed)

            return wrapper

        return wrap_handler(handler, unary, stream)


def _deadline(context: grpc.aio.ServicerContext[Any, Any], now: float) -> float | None:
    """When the call's deadline passes on perf_counter's clock, less a little:
    the client gives up at its own deadline, which the server learns of a
    moment before its copy of the deadline passes. None without one."""
    remaining = context.time_remaining()
    if remaining is None or remaining > DEADLINE_NONE:
        return None
    return now + remaining - DEADLINE_SLACK


#: time_remaining() beyond this (about 3 years) means the call has no deadline
DEADLINE_NONE = 1e8
#: how early a cancellation may come and still count as the deadline's (the
#: deadline travels as a timeout, so the server's copy ends a little later)
DEADLINE_SLACK = 0.1
#: the metadata key of a call's request ID, both ways
REQUEST_ID_KEY = "x-request-id"
#: the longest request ID accepted from a client
MAX_REQUEST_ID = 64
#: the request fields that name what a call is about, and the access log's
#: key for each (Tag's ``source`` is its image, Remove's and Save's list too)
SUBJECT_FIELDS = {
    "image": "image",
    "images": "image",
    "source": "image",
    "target": "target",
    "registry": "registry",
    "digest": "digest",
}
#: the longest subject value logged; longer ones are cut
MAX_SUBJECT = 128


def accepted_request_id(metadata: Any) -> str | None:
    """The client's ``x-request-id`` when it is 1 to 64 visible ASCII
    characters; None when absent or unfit (the server then makes one)."""
    for key, value in metadata or ():
        if key == REQUEST_ID_KEY and isinstance(value, str):
            fits = 0 < len(value) <= MAX_REQUEST_ID and all("!" <= c <= "~" for c in value)
            return value if fits else None
    return None


def new_request_id() -> str:
    """16 random hex digits."""
    return secrets.token_hex(8)


def request_subjects(request: Any) -> dict[str, str]:
    """What a unary request names, by access-log key: ``{"image": "redis"}``,
    ``{"image": "a,b"}`` for a list, ``{"image": "x", "target": "y"}`` for a
    Tag; long values cut. Empty for a request stream or a request naming
    nothing (ListImages)."""
    if not isinstance(request, Message):
        return {}
    found: dict[str, str] = {}
    for descriptor, value in request.ListFields():
        key = SUBJECT_FIELDS.get(descriptor.name)
        if key is None or descriptor.type != FieldDescriptor.TYPE_STRING or key in found:
            continue
        text = ",".join(value) if descriptor.is_repeated else str(value)
        found[key] = text if len(text) <= MAX_SUBJECT else text[: MAX_SUBJECT - 1] + "…"
    return found


class _CountingIterator:
    """Counts the bytes of a request stream as the handler reads it."""

    def __init__(self, source: Any) -> None:
        self._source = source.__aiter__()
        self.bytes = 0

    def __aiter__(self) -> _CountingIterator:
        return self

    async def __anext__(self) -> Any:
        message = await self._source.__anext__()
        self.bytes += int(message.ByteSize())
        return message
