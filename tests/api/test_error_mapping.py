"""The error mapping (docs/design.md §7): domain exception → status code, ErrorInfo and
the other detail messages, through the real interceptor on an in-process aio server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import message as protobuf_message
from google.rpc import error_details_pb2, status_pb2

from imagestore import errors
from imagestore.api.interceptors import ErrorMapping
from imagestore.client import convert
from imagestore.v1 import imagestore_pb2 as pb

Code = grpc.StatusCode


def _newer(exception: errors.ImageStoreError, reason: str) -> errors.ImageStoreError:
    """``exception`` with a reason this client does not know (a newer server's)."""
    exception.reason = reason
    return exception


ROWS = [
    # The fallback of each category (sent where no specific reason fits).
    (errors.InvalidArgument("bad request"), Code.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
    (errors.NotFound("gone"), Code.NOT_FOUND, "NOT_FOUND"),
    (errors.FailedPrecondition("must be forced"), Code.FAILED_PRECONDITION, "FAILED_PRECONDITION"),
    (errors.Aborted("conflict"), Code.ABORTED, "ABORTED"),
    (errors.PermissionDenied("registry refused"), Code.PERMISSION_DENIED, "PERMISSION_DENIED"),
    (errors.Unauthenticated("no token"), Code.UNAUTHENTICATED, "UNAUTHENTICATED"),
    (errors.ResourceExhausted("disk full"), Code.RESOURCE_EXHAUSTED, "RESOURCE_EXHAUSTED"),
    (errors.DataLoss("lost"), Code.DATA_LOSS, "DATA_LOSS"),
    (errors.Unavailable("down"), Code.UNAVAILABLE, "UNAVAILABLE"),
    (errors.Internal("a bug"), Code.INTERNAL, "INTERNAL"),
    (RuntimeError("secret detail of a bug"), Code.INTERNAL, "INTERNAL"),
    # Specific reasons, one per situation.
    (errors.MalformedContent("bad archive"), Code.INVALID_ARGUMENT, "MALFORMED_CONTENT"),
    (
        errors.ImageNotFound("No such image: x:latest", metadata={"image": "x"}),
        Code.NOT_FOUND,
        "IMAGE_NOT_FOUND",
    ),
    (errors.UnsupportedContent("nested"), Code.FAILED_PRECONDITION, "UNSUPPORTED_CONTENT"),
    (errors.PruneRunning("a prune operation is running"), Code.ABORTED, "PRUNE_RUNNING"),
    (errors.BearerTokenInvalid("no token"), Code.UNAUTHENTICATED, "BEARER_TOKEN_INVALID"),
    (errors.SizeLimitExceeded("gzip bomb"), Code.RESOURCE_EXHAUSTED, "SIZE_LIMIT_EXCEEDED"),
    (errors.DigestMismatch("wrong digest"), Code.DATA_LOSS, "DIGEST_MISMATCH"),
    (errors.DiffIdMismatch("wrong diff_id"), Code.DATA_LOSS, "DIFF_ID_MISMATCH"),
    (errors.TruncatedCompressedData("cut"), Code.DATA_LOSS, "TRUNCATED_COMPRESSED_DATA"),
    (errors.OutOfRange("past the end"), Code.OUT_OF_RANGE, "OUT_OF_RANGE"),
    (errors.RegistryUnavailable("registry down"), Code.UNAVAILABLE, "REGISTRY_UNAVAILABLE"),
    # An error that says when to retry also carries a google.rpc.RetryInfo.
    (
        errors.CheckRunning("a check is already running", retry_after=5),
        Code.ABORTED,
        "CHECK_RUNNING",
    ),
    (
        errors.SizeLimitExceeded("too many streams", retry_after=0.25),
        Code.RESOURCE_EXHAUSTED,
        "SIZE_LIMIT_EXCEEDED",
    ),
    (errors.ServerBusy("busy"), Code.RESOURCE_EXHAUSTED, "TOO_MANY_CONCURRENT_CALLS"),
    (
        _newer(errors.NotFound("gone", metadata={"k": "v"}), "SOMETHING_NEW"),
        Code.NOT_FOUND,
        "SOMETHING_NEW",
    ),
]


#: the error the typed methods raise, by the request they get (field inference)
def _typed_error(request: protobuf_message.Message) -> errors.ImageStoreError:
    if isinstance(request, pb.TagRequest):  # the target is the bad one
        return errors.ReferenceInvalid("bad target", metadata={"reference": request.target})
    if isinstance(request, pb.RemoveRequest):  # the second name, cut as raise sites cut
        cut = request.images[1][:64]
        return errors.ReferenceInvalid("bad name", metadata={"reference": cut})
    if isinstance(request, pb.PullRequest):  # a digest inside the reference
        return errors.DigestInvalid("bad digest", metadata={"digest": "sha512:" + "a" * 128})
    if isinstance(request, pb.ListImagesRequest):  # a class default
        return errors.FilterInvalid("bad filter", metadata={"filter": "nope"})
    if isinstance(request, pb.ReadBlobRequest):  # named by the raise site
        return errors.RangeInvalid("negative", field="limit")
    assert isinstance(request, pb.InspectRequest)
    if request.image == "missing":
        return errors.ImageNotFound("No such image: missing", metadata={"image": "missing"})
    if request.image == "config":
        return errors.OptionInvalid("broken config", metadata={"path": "/etc/x"})
    return errors.PlatformNotFound(
        "no such platform",
        metadata={
            "platform": f"{request.platform.os}/{request.platform.architecture}",
            "image": request.image,
        },
    )


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    """An aio server whose methods raise the exception named in the request, and
    typed methods raising the error of :func:`_typed_error`."""
    loop = asyncio.new_event_loop()
    ready: list[str] = []
    stopped = asyncio.Event()

    async def raise_unary(request: bytes, context: Any) -> bytes:
        raise ROWS[int(request)][0]

    async def raise_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield b"first"
        raise ROWS[int(request)][0]

    async def raise_typed(request: protobuf_message.Message, context: Any) -> bytes:
        raise _typed_error(request)

    async def raise_load(requests: AsyncIterator[pb.LoadRequest], context: Any) -> bytes:
        async for _ in requests:
            pass
        raise errors.MalformedContent("invalid archive: not a tar", metadata={"member": ""})

    def typed(message: type[protobuf_message.Message]) -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.unary_unary_rpc_method_handler(
            raise_typed, request_deserializer=message.FromString
        )

    handler = grpc.method_handlers_generic_handler(
        "test.Errors",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(raise_unary),
            "Stream": grpc.unary_stream_rpc_method_handler(raise_stream),
            "Tag": typed(pb.TagRequest),
            "Remove": typed(pb.RemoveRequest),
            "Pull": typed(pb.PullRequest),
            "ListImages": typed(pb.ListImagesRequest),
            "ReadBlob": typed(pb.ReadBlobRequest),
            "Inspect": typed(pb.InspectRequest),
            "Load": grpc.stream_unary_rpc_method_handler(
                raise_load, request_deserializer=pb.LoadRequest.FromString
            ),
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


def _others(status: status_pb2.Status) -> dict[str, Any]:
    """The detail messages after the ErrorInfo, by kind (each at most once)."""
    found: dict[str, Any] = {}
    for detail in status.details[1:]:
        for kind in (
            error_details_pb2.RetryInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.ResourceInfo,
        ):
            message = kind()
            if detail.Unpack(message):
                assert kind.__name__ not in found, f"two {kind.__name__}"
                found[kind.__name__] = message
                break
        else:
            pytest.fail(f"unexpected detail {detail.type_url}")
    return found


def _call(address: str, method: str, request: bytes) -> grpc.RpcError:
    with grpc.insecure_channel(address) as channel:
        if method == "Stream":
            stream: Any = channel.unary_stream("/test.Errors/Stream")
            with pytest.raises(grpc.RpcError) as failure:
                list(stream(request, timeout=10))  # one message, then the error
        else:
            unary: Any = channel.unary_unary(f"/test.Errors/{method}")
            with pytest.raises(grpc.RpcError) as failure:
                unary(request, timeout=10)
    return failure.value


@pytest.mark.parametrize(("index", "row"), list(enumerate(ROWS)), ids=[r[2] for r in ROWS])
@pytest.mark.parametrize("method", ["Unary", "Stream"])
def test_each_domain_error_maps_to_its_code_with_error_info(
    address: str, index: int, row: tuple[Exception, grpc.StatusCode, str], method: str
) -> None:
    exception, code, reason = row
    error = _call(address, method, str(index).encode())
    assert error.code() == code
    status, info = _details(error)
    assert status.code == code.value[0]
    assert (info.reason, info.domain) == (reason, "imagestore")
    if not isinstance(exception, errors.ImageStoreError):
        assert error.details() == "internal error"  # the bug's details stay in the log
        assert not info.metadata
    else:
        assert error.details() == str(exception)
        assert dict(info.metadata) == exception.metadata


@pytest.mark.parametrize(("index", "row"), list(enumerate(ROWS)), ids=[r[2] for r in ROWS])
@pytest.mark.parametrize("method", ["Unary", "Stream"])
def test_a_retry_delay_travels_as_retry_info_after_the_error_info(
    address: str, index: int, row: tuple[Exception, grpc.StatusCode, str], method: str
) -> None:
    exception = row[0]
    wanted = getattr(exception, "retry_after", None)
    status, info = _details(_call(address, method, str(index).encode()))
    assert info.reason == row[2]  # the ErrorInfo stays the first detail
    retry = _others(status).get("RetryInfo")
    if wanted is None:
        assert retry is None
    else:
        assert retry is not None
        assert retry.retry_delay.ToNanoseconds() / 1e9 == wanted


@pytest.mark.parametrize(("index", "row"), list(enumerate(ROWS)), ids=[r[2] for r in ROWS])
def test_resource_info_goes_with_the_not_found_reasons_about_a_resource(
    address: str, index: int, row: tuple[Exception, grpc.StatusCode, str]
) -> None:
    status, _ = _details(_call(address, "Unary", str(index).encode()))
    resource = _others(status).get("ResourceInfo")
    if row[2] == "IMAGE_NOT_FOUND":
        assert resource is not None
        assert (resource.resource_type, resource.resource_name) == ("image", "x")
        assert resource.description == "No such image: x:latest"
    else:  # the fallback NotFound names no resource, the other codes none either
        assert resource is None


@pytest.mark.parametrize(
    ("method", "request_message", "field"),
    [
        # the request field holding the value the error echoes
        ("Tag", pb.TagRequest(source="ok:1", target="Bad:1"), "target"),
        # in a repeated field, by position; a value cut by the raise site still matches
        ("Remove", pb.RemoveRequest(images=["ok:1", "x" * 300]), "images[1]"),
        # a digest inside a reference: the field containing it
        ("Pull", pb.PullRequest(image="r@sha512:" + "a" * 128), "image"),
        # the class's own field
        ("ListImages", pb.ListImagesRequest(filters=["nope=1"]), "filters"),
        # the field the raise site named
        ("ReadBlob", pb.ReadBlobRequest(digest="sha256:" + "0" * 64, limit=-1), "limit"),
    ],
    ids=["equal", "repeated-and-cut", "contained", "class-default", "named"],
)
def test_an_invalid_argument_names_its_request_field_in_a_bad_request(
    address: str, method: str, request_message: protobuf_message.Message, field: str
) -> None:
    error = _call(address, method, request_message.SerializeToString())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status, info = _details(error)
    bad = _others(status)["BadRequest"]
    assert [(v.field, v.description, v.reason) for v in bad.field_violations] == [
        (field, error.details(), info.reason)
    ]


def test_the_stream_of_a_load_is_the_field_of_its_content_errors(address: str) -> None:
    """Content errors of a Load are about its archive: the ``chunk`` field."""
    with grpc.insecure_channel(address) as channel:
        load: Any = channel.stream_unary("/test.Errors/Load")
        with pytest.raises(grpc.RpcError) as failure:
            load(iter([pb.LoadRequest(chunk=b"junk").SerializeToString()]), timeout=10)
    status, info = _details(failure.value)
    assert info.reason == "MALFORMED_CONTENT"
    assert [v.field for v in _others(status)["BadRequest"].field_violations] == ["chunk"]


def test_no_bad_request_when_no_request_field_is_at_fault(address: str) -> None:
    """The server's own configuration (OPTION_INVALID) is not the request's fault,
    and an error of another code never carries a BadRequest."""
    config = _call(address, "Inspect", pb.InspectRequest(image="config").SerializeToString())
    assert config.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "BadRequest" not in _others(_details(config)[0])
    missing = _call(address, "Inspect", pb.InspectRequest(image="missing").SerializeToString())
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    assert set(_others(_details(missing)[0])) == {"ResourceInfo"}


def test_resource_info_names_the_owner_where_there_is_one(address: str) -> None:
    request = pb.InspectRequest(
        image="app:1", platform=pb.Platform(os="linux", architecture="s390x")
    )
    status, info = _details(_call(address, "Inspect", request.SerializeToString()))
    assert info.reason == "PLATFORM_NOT_FOUND"
    resource = _others(status)["ResourceInfo"]
    assert (resource.resource_type, resource.resource_name, resource.owner) == (
        "platform",
        "linux/s390x",
        "app:1",
    )


@pytest.mark.parametrize(("index", "row"), list(enumerate(ROWS)), ids=[r[2] for r in ROWS])
def test_the_client_raises_the_class_of_the_reason_with_what_was_sent(
    address: str, index: int, row: tuple[Exception, grpc.StatusCode, str]
) -> None:
    original, code, reason = row
    raised = convert.error(_call(address, "Unary", str(index).encode()))
    if not isinstance(original, errors.ImageStoreError):  # a bug: INTERNAL, nothing more
        assert (type(raised), raised.reason, raised.metadata) == (errors.Internal, "INTERNAL", {})
        return
    # a reason it does not know: the category of the code, the reason as sent
    assert type(raised) is type(original)
    assert (raised.status, raised.reason) == (code.name, reason)
    assert (raised.message, raised.metadata) == (original.message, original.metadata)
    assert raised.retry_after == original.retry_after
    assert raised.resource == original.resource
    assert raised.field is None


def test_the_client_keeps_the_field_and_resource_the_server_named(address: str) -> None:
    tag = pb.TagRequest(source="ok:1", target="Bad:1").SerializeToString()
    bad = convert.error(_call(address, "Tag", tag))
    assert isinstance(bad, errors.ReferenceInvalid)
    assert (bad.field, bad.metadata) == ("target", {"reference": "Bad:1"})
    inspect = pb.InspectRequest(
        image="app:1", platform=pb.Platform(os="linux", architecture="s390x")
    ).SerializeToString()
    missing = convert.error(_call(address, "Inspect", inspect))
    assert isinstance(missing, errors.PlatformNotFound)
    assert missing.resource == errors.Resource("platform", "linux/s390x", "app:1")


def test_a_class_may_give_a_default_retry_delay_and_an_instance_overrides_it() -> None:
    class Busy(errors.ResourceExhausted):
        reason = errors.Reason.TOO_MANY_CONCURRENT_CALLS
        retry_after = 2.0

    assert Busy("busy").retry_after == 2.0
    assert Busy("busy", retry_after=0.5).retry_after == 0.5
    assert errors.ResourceExhausted("disk full").retry_after is None
    with pytest.raises(ValueError, match="negative"):
        errors.Aborted("no", retry_after=-1)


def test_about_field_names_the_field_of_an_invalid_argument_raised_inside() -> None:
    with pytest.raises(errors.ReferenceInvalid) as named, errors.about_field("source"):
        raise errors.ReferenceInvalid("bad", metadata={"reference": "B"})
    assert named.value.field == "source"
    with pytest.raises(errors.FilterInvalid) as kept, errors.about_field("source"):
        raise errors.FilterInvalid("bad")  # its class names its field already
    assert kept.value.field == "filters"
    with pytest.raises(errors.ImageNotFound) as other, errors.about_field("source"):
        raise errors.ImageNotFound("gone")  # not an INVALID_ARGUMENT: left alone
    assert other.value.field is None
