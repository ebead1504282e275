"""Server interceptors: access log + metrics, bearer-token auth, and the one
place where domain errors become gRPC statuses with a google.rpc.ErrorInfo.

Order (outermost first): AccessLog, TokenAuth, ErrorMapping — so refused
calls are logged too, and handlers only ever raise domain exceptions.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from imagestore import errors
from imagestore.api.metrics import Metrics

log = logging.getLogger("imagestore.rpc")

DOMAIN = "imagestore"
HEALTH_PREFIX = "/grpc.health.v1.Health/"


def status_code(exc: errors.ImageStoreError) -> grpc.StatusCode:
    """The category's code (each error class names it in ``status``)."""
    return grpc.StatusCode[exc.status]


def rich_status(
    code: grpc.StatusCode,
    message: str,
    reason: str,
    metadata: dict[str, str],
    retry_after: float | None = None,
) -> bytes:
    """A serialized google.rpc.Status carrying an ErrorInfo, then a RetryInfo
    when ``retry_after`` (seconds) says when the call may succeed."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata))
    details = [info]
    if retry_after is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(round(retry_after * 1e9))
        details.append(any_pb2.Any())
        details[-1].Pack(retry)
    status = status_pb2.Status(code=code.value[0], message=message, details=details)
    return bytes(status.SerializeToString())


async def abort(
    context: grpc.aio.ServicerContext[Any, Any],
    code: grpc.StatusCode,
    message: str,
    reason: str,
    metadata: dict[str, str] | None = None,
    retry_after: float | None = None,
) -> None:
    details = rich_status(code, message, reason, metadata or {}, retry_after)
    await context.abort(code, message, trailing_metadata=(("grpc-status-details-bin", details),))


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
    """Domain exceptions → status codes + ErrorInfo; anything else → INTERNAL
    (details logged, never sent)."""

    async def intercept_service(
        self,
        continuation: Continuation,
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method

        async def handle(exc: Exception, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            if isinstance(exc, errors.ImageStoreError):
                await abort(
                    context,
                    status_code(exc),
                    exc.message,
                    exc.reason,
                    exc.metadata,
                    exc.retry_after,
                )
            log.exception("internal error in %s", method)
            await abort(context, grpc.StatusCode.INTERNAL, "internal error", "INTERNAL")

        def unary(behavior: Behavior) -> Behavior:
            async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                try:
                    return await behavior(request, context)
                except (grpc.aio.AbortError, grpc.RpcError):
                    raise
                except Exception as exc:
                    await handle(exc, context)

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
                    await handle(exc, context)

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
            await abort(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or invalid bearer token",
                errors.Unauthenticated.reason,
            )

        async def refuse_stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            await refuse(request, context)
            yield None  # pragma: no cover - refuse() always raises

        return wrap_handler(handler, lambda _: refuse, lambda _: refuse_stream)


class AccessLog(grpc.aio.ServerInterceptor):
    """One log line and the metrics per RPC: method, code, duration, bytes."""

    def __init__(self, metrics: Metrics | None) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Continuation,
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        metrics = self._metrics

        def done(
            context: grpc.aio.ServicerContext[Any, Any],
            start: float,
            sent: int,
            received: int,
            failed: BaseException | None,
        ) -> None:
            code = context.code() if failed is not None else None
            if isinstance(failed, Exception) and code is None:
                code = grpc.StatusCode.UNKNOWN
            name = "OK" if code is None else getattr(code, "name", str(code))
            if failed is not None and not isinstance(failed, Exception):
                name = "CANCELLED"
            seconds = time.perf_counter() - start
            log.info(
                "rpc method=%s code=%s duration_ms=%.1f bytes_in=%d bytes_out=%d",
                method,
                name,
                seconds * 1000,
                received,
                sent,
            )
            if metrics is not None:
                metrics.observe(method, name, seconds, received, sent)

        def size(message: Any) -> int:
            return int(message.ByteSize()) if hasattr(message, "ByteSize") else 0

        def unary(behavior: Behavior) -> Behavior:
            async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                start, received = time.perf_counter(), 0
                counted = _CountingIterator(request) if hasattr(request, "__aiter__") else None
                try:
                    response = await behavior(counted or request, context)
                except BaseException as exc:
                    done(context, start, 0, counted.bytes if counted else size(request), exc)
                    raise
                received = counted.bytes if counted else size(request)
                done(context, start, size(response), received, None)
                return response

            return wrapper

        def stream(behavior: Behavior) -> Behavior:
            async def wrapper(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                start, sent = time.perf_counter(), 0
                counted = _CountingIterator(request) if hasattr(request, "__aiter__") else None
                failed: BaseException | None = None
                try:
                    async for response in behavior(counted or request, context):
                        sent += size(response)
                        yield response
                except BaseException as exc:
                    failed = exc
                    raise
                finally:
                    done(context, start, sent, counted.bytes if counted else size(request), failed)

            return wrapper

        return wrap_handler(handler, unary, stream)


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
