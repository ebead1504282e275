"""The blocking client's stream objects against the real server: ``result()``
alone or after iterating, ``cancel()``, leaving the ``with`` block, breaking
out of the loop, and deadlines on streams; a stream that ends without its
result, without a server; and the IMAGESTORE_* defaults."""

from __future__ import annotations

import asyncio
import io
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest

from imagestore import errors
from imagestore.client import (
    AsyncResultStream,
    ImageStoreClient,
    LoadResult,
    Progress,
    ResultStream,
    Settings,
    convert,
    readers,
)
from imagestore.client.settings import DEFAULT_TARGET
from imagestore.v1 import imagestore_pb2 as pb
from tests.api.conftest import Server
from tests.archives import ImageSpec, docker_archive, tar_of
from tests.client.serverlog import ended, wait_for_failed_ends

APP = ImageSpec(["app:1"], [tar_of({"a": b"a" * 3000}), tar_of({"b": b"b" * 200_000})])
#: what a blocked load sends: less than a pipe holds, more than the first member
SENT = 32 << 10


@pytest.fixture
def client(server: Server) -> Iterator[ImageStoreClient]:
    with ImageStoreClient(server.address, timeout=30) as opened:
        yield opened


@contextmanager
def stalled_archive() -> Iterator[IO[bytes]]:
    """A pipe holding the start of an archive, its writer silent: a load of it
    ends only by being cancelled or by its deadline. Unbuffered, so the client
    sends what there is."""
    archive = docker_archive(ImageSpec(["stalled:1"], APP.layers))
    read_fd, write_fd = os.pipe()
    os.write(write_fd, archive[:SENT])  # fits the pipe: no writer thread needed
    reader = os.fdopen(read_fd, "rb", buffering=0)
    try:
        yield reader
    finally:
        os.close(write_fd)  # the client's reader (if still reading) sees the end
        reader.close()


def _nothing_loading(server: Server) -> bool:
    return not any((server.root / "blobs" / "ingest").iterdir())


def _assert_nothing_kept(client: ImageStoreClient, server: Server) -> None:
    """The server ended the stalled load on its side too, and kept nothing."""
    wait_for_failed_ends(server, "Load", 1)  # its cleanup ends after ours
    assert ended(server, "Load")[-1] in ("CANCELLED", "DEADLINE_EXCEEDED")
    assert _nothing_loading(server)
    with pytest.raises(errors.ImageNotFound):
        client.inspect("stalled:1")


def test_result_alone_drains_the_stream(client: ImageStoreClient) -> None:
    result = client.load(io.BytesIO(docker_archive(APP))).result()
    assert isinstance(result, LoadResult)
    assert [image.id for image in result.images] == [APP.image_id]


def test_iterate_then_result(client: ImageStoreClient) -> None:
    with client.load(io.BytesIO(docker_archive(APP))) as call:
        progress = list(call)
        assert call.done
        assert progress
        assert all(isinstance(p, Progress) for p in progress)
        assert call.result().images[0].id == APP.image_id
        assert call.result().images[0].id == APP.image_id  # the result stays


def test_cancel_ends_the_call_on_the_server(client: ImageStoreClient, server: Server) -> None:
    with stalled_archive() as source:
        call = client.load(source)
        first = next(iter(call))  # the server has read the first member
        assert isinstance(first, Progress)
        call.cancel()
        assert call.done
        with pytest.raises(errors.Cancelled):
            call.result()
        with pytest.raises(errors.Cancelled):
            list(call)
    _assert_nothing_kept(client, server)


def test_leaving_the_with_block_cancels(client: ImageStoreClient, server: Server) -> None:
    with stalled_archive() as source:
        with client.load(source) as call:
            for _ in call:
                break
        with pytest.raises(errors.Cancelled):
            call.result()
    _assert_nothing_kept(client, server)


def test_breaking_out_of_the_loop_cancels(client: ImageStoreClient, server: Server) -> None:
    with stalled_archive() as source:
        call = client.load(source)
        for _ in call:
            break
        assert call.done
        with pytest.raises(errors.Cancelled):
            call.result()
    _assert_nothing_kept(client, server)


def test_a_stream_past_its_deadline_is_deadline_exceeded(
    client: ImageStoreClient, server: Server
) -> None:
    with stalled_archive() as source:
        call = client.load(source, timeout=1.0)
        with pytest.raises(errors.DeadlineExceeded) as late:
            call.result()
        assert late.value.status == "DEADLINE_EXCEEDED"
    _assert_nothing_kept(client, server)


def test_the_clients_default_deadline_is_for_unary_calls(server: Server) -> None:
    # a listener that never answers: a call to it ends only by its deadline
    with socket.create_server(("127.0.0.1", 0)) as silent:
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        with (
            ImageStoreClient(address, timeout=0.5) as hurried,
            pytest.raises(errors.DeadlineExceeded),
        ):
            hurried.list_images()
        with ImageStoreClient(address) as patient, pytest.raises(errors.DeadlineExceeded):
            patient.inspect("app:1", timeout=0.5)
    # a stream has a deadline only when its call gives one
    with ImageStoreClient(server.address, timeout=0.5) as hurried, stalled_archive() as source:
        with hurried.load(source) as unbounded:
            assert unbounded._call.time_remaining() is None
            next(iter(unbounded))  # the server has the call: it will log its end
        wait_for_failed_ends(server, "Load", 1)
        with hurried.load(io.BytesIO(docker_archive(APP)), timeout=30) as bounded:
            assert 0 < bounded._call.time_remaining() <= 30
            assert bounded.result().images[0].id == APP.image_id


def test_byte_streams_are_stream_objects_too(client: ImageStoreClient) -> None:
    client.load(io.BytesIO(docker_archive(APP))).result()
    with client.save(["app:1"]) as chunks:
        assert b"".join(chunks)
    blob = client.inspect("app:1").layers[1].digest
    with client.read_blob(blob) as data:
        first = next(iter(data))
        data.cancel()
        assert first
        with pytest.raises(errors.Cancelled):
            list(data)


class _Ended:
    """A finished call's messages, as grpc hands them (sync and asyncio)."""

    def __init__(self, messages: list[Any]) -> None:
        self._messages = iter(messages)

    def __next__(self) -> Any:
        return next(self._messages)

    async def read(self) -> Any:
        import grpc.aio

        return next(self._messages, grpc.aio.EOF)

    def cancel(self) -> bool:
        return False


def test_a_stream_that_ends_without_its_result_says_so() -> None:
    progress = pb.LoadResponse(progress=pb.Progress(phase=pb.PHASE_COMPLETE, subject="x"))
    call: ResultStream[Progress, LoadResult] = ResultStream(
        _Ended([progress]), readers.Transfer("load", convert.load_result)
    )
    assert [p.subject for p in call] == ["x"]
    with pytest.raises(errors.Unavailable, match="the load ended without its result"):
        call.result()

    async def awaited() -> None:
        late: AsyncResultStream[Progress, LoadResult] = AsyncResultStream(
            _Ended([progress]), readers.Transfer("load", convert.load_result)
        )
        with pytest.raises(errors.Unavailable, match="the load ended without its result"):
            await late.result()

    asyncio.run(awaited())


def test_settings_come_from_arguments_then_the_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\nignored\n")
    assert Settings.resolve(environ={}) == Settings(DEFAULT_TARGET)
    env = {
        "IMAGESTORE_HOST": "tcp://example:1",
        "IMAGESTORE_TLS": "true",
        "IMAGESTORE_TLS_CA": "/ca.pem",
        "IMAGESTORE_TOKEN_FILE": str(token_file),
    }
    found = Settings.resolve(environ=env)
    assert (found.target, found.tls, found.ca_file, found.token) == (
        "example:1",
        True,
        Path("/ca.pem"),
        "from-file",
    )
    assert Settings.resolve(environ={**env, "IMAGESTORE_TOKEN": "direct"}).token == "direct"
    explicit = Settings.resolve("other:2", tls=False, token="mine", environ=env)
    assert (explicit.target, explicit.token) == ("other:2", "mine")
    assert explicit.tls  # a CA file (from the environment) still means TLS
    assert not Settings.resolve(environ={"IMAGESTORE_TLS": "0"}).tls
    assert Settings.resolve(environ={"IMAGESTORE_TLS_CERT": "/c"}).tls
    assert "mine" not in repr(explicit)
    assert explicit.metadata() == (("authorization", "Bearer mine"),)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(errors.InvalidArgument):
        Settings.resolve(token_file=tmp_path / "empty", environ={})


def test_the_target_defaults_to_imagestore_host(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGESTORE_HOST", server.address)
    with ImageStoreClient(timeout=30) as client:
        assert client.target == server.address
        assert client.list_images() == []
