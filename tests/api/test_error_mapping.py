"""Every row of the error table (docs/design.md §7): domain exception → status code and
ErrorInfo, through the real interceptor on an in-process aio server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from imagestore import errors
from imagestore.api.interceptors import ErrorMapping

Code = grpc.StatusCode
ROWS = [
    (errors.InvalidArgument("bad reference"), Code.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    (errors.MalformedContent("bad archive"), Code.INVALID_ARGUMENT, "MALFORMED_CONTENT"),
    (errors.NotFound("No such image: x:latest"), Code.NOT_FOUND, "NOT_FOUND"),
    (errors.FailedPrecondition("must be forced"), Code.FAILED_PRECONDITION, "FAILED_PRECONDITION"),
    (errors.UnsupportedContent("schema 1"), Code.FAILED_PRECONDITION, "UNSUPPORTED_CONTENT"),
    (errors.Aborted("a prune operation is already running"), Code.ABORTED, "ABORTED"),
    (errors.PermissionDenied("registry refused"), Code.PERMISSION_DENIED, "PERMISSION_DENIED"),
    (errors.Unauthenticated("no token"), Code.UNAUTHENTICATED, "UNAUTHENTICATED"),
    (errors.ResourceExhausted("disk full"), Code.RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED"),
    (errors.SizeLimitExceeded("gzip bomb"), Code.RESOURCE_EXHAUSTED, "SIZE_LIMIT_EXCEEDED"),
    (errors.DigestMismatch("wrong digest"), Code.DATA_LOSS, "DIGEST_MISMATCH"),
    (errors.TruncatedCompressedData("cut"), Code.DATA_LOSS, "TRUNCATED_COMPRESSED_DATA"),
    (errors.Unavailable("registry unreachable"), Code.UNAVAILABLE, "UNAVAILABLE"),
    (RuntimeError("secret detail of a bug"), Code.INTERNAL, "INTERNAL"),
    # An error that says when to retry also carries a google.rpc.RetryInfo.
    (errors.Aborted("a check is already running", retry_after=5), Code.ABORTED, "ABORTED"),
    (
        errors.SizeLimitExceeded("too many streams", retry_after=0.25),
        Code.RESOURCE_EXHAUSTED,
        "SIZE_LIMIT_EXCEEDED",
    ),
]


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    """An aio server whose methods raise the exception named in the request."""
    loop = asyncio.new_event_loop()
    ready: list[str] = []
    stopped = asyncio.Event()

    async def raise_unary(request: bytes, context: Any) -> bytes:
        raise ROWS[int(request)][0]

    async def raise_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield b"first"
        raise ROWS[int(request)][0]

    handler = grpc.method_handlers_generic_handler(
        "test.Errors",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(raise_unary),
            "Stream": grpc.unary_stream_rpc_method_handler(raise_stream),
        },
    )

    async def main() -> None:
        server = grpc.aio.server(interceptors=[ErrorMapping()])
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        ready.append(f"127.0.0.1:{port}")
        await stopped.wait()
        await server.stop(None)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    while not ready:
        threading.Event().wait(0.01)
    yield ready[0]
    loop.call_soon_threadsafe(stopped.set)
    thread.join(10)


def _details(error: grpc.RpcError) -> tuple[status_pb2.Status, error_details_pb2.ErrorInfo]:
    trailers: dict[str, Any] = dict(error.trailing_metadata() or ())  # type: ignore[arg-type]
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return status, info


@pytest.mark.parametrize(("index", "row"), list(enumerate(ROWS)), ids=[r[2] for r in ROWS])
@pytest.mark.parametrize("method", ["Unary", "Stream"])
def test_each_domain_error_maps_to_its_code_with_error_info(
    address: str, index: int, row: tuple[Exception, grpc.StatusCode, str], method: str
) -> None:
    exception, code, reason = row
    request = str(index).encode()
    with grpc.insecure_channel(address) as channel:
        if method == "Unary":
            unary: Any = channel.unary_unary("/test.Errors/Unary")
            with pytest.raises(grpc.RpcError) as failure:
                unary(request, timeout=10)
        else:
            stream: Any = channel.unary_stream("/test.Errors/Stream")
            with pytest.raises(grpc.RpcError) as failure:
                list(stream(request, timeout=10))  # one message, then the error
    error = failure.value
    assert error.code() == code
    status, info = _details(error)
    assert status.code == code.value[0]
    assert (info.reason, info.domain) == (reason, "imagestore")
    if code == grpc.StatusCode.INTERNAL:
        assert error.details() == "internal error"  # the bug's details stay in the log
    else:
        assert error.details() == str(exception)


@pytest.mark.parametrize(("index", "row"), list(enumerate(ROWS)), ids=[r[2] for r in ROWS])
@pytest.mark.parametrize("method", ["Unary", "Stream"])
def test_a_retry_delay_travels_as_retry_info_after_the_error_info(
    address: str, index: int, row: tuple[Exception, grpc.StatusCode, str], method: str
) -> None:
    exception = row[0]
    wanted = getattr(exception, "retry_after", None)
    with grpc.insecure_channel(address) as channel:
        unary: Any = channel.unary_unary("/test.Errors/Unary")
        stream: Any = channel.unary_stream("/test.Errors/Stream")
        request = str(index).encode()
        with pytest.raises(grpc.RpcError) as failure:
            unary(request, timeout=10) if method == "Unary" else list(stream(request, timeout=10))
    status, info = _details(failure.value)  # the ErrorInfo stays the first detail
    assert info.reason == row[2]
    retries = []
    for detail in status.details[1:]:
        retry = error_details_pb2.RetryInfo()
        assert detail.Unpack(retry), detail.type_url
        retries.append(retry.retry_delay.ToNanoseconds() / 1e9)
    assert retries == ([] if wanted is None else [wanted])


def test_a_class_may_give_a_default_retry_delay_and_an_instance_overrides_it() -> None:
    class Busy(errors.ResourceExhausted):
        reason = "BUSY"
        retry_after = 2.0

    assert Busy("busy").retry_after == 2.0
    assert Busy("busy", retry_after=0.5).retry_after == 0.5
    assert errors.ResourceExhausted("disk full").retry_after is None
    with pytest.raises(ValueError, match="negative"):
        errors.Aborted("no", retry_after=-1)
