"""The server's log: JSON or text lines on stderr, one access line per call
carrying the request ID the client received, library loggers kept quiet."""

from __future__ import annotations

import json
import logging
import re
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from imagestore.api.interceptors import (
    MAX_SUBJECT,
    accepted_request_id,
    new_request_id,
    request_subjects,
)
from imagestore.logs import (
    REQUEST_ID,
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
    text_value,
)
from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import Server, start_server
from tests.archives import ImageSpec, docker_archive
from tests.store.builders import layer_tar

Stub = pb_grpc.ImageStoreServiceStub
SERVICE = "/imagestore.v1.ImageStoreService/"
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
#: key=value, the value bare or a JSON string
PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


@contextmanager
def running(
    tmp_path: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[tuple[Server, Stub]]:
    """A server and a stub to it; the server is stopped on leaving, so its
    ``stderr_lines`` are complete after the block."""
    server = start_server(tmp_path / "root", "--listen", "127.0.0.1:0", *extra, env=env)
    try:
        with grpc.insecure_channel(server.address) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            yield server, pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
    finally:
        assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]


def json_records(lines: list[str]) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(isinstance(record, dict) for record in records)
    return records


def access(records: list[dict[str, Any]], request_id: str) -> dict[str, Any]:
    """The one access line of the call with ``request_id``."""
    found = [r for r in records if r["logger"] == "imagestore.rpc" and r.get("method")]
    mine = [r for r in found if r["request_id"] == request_id]
    assert len(mine) == 1, found
    return mine[0]


def sent_id(call: Any) -> str:
    """The request ID in a call's (or a failed call's error's) initial metadata."""
    metadata = call.initial_metadata()
    values = [value for key, value in metadata or () if key == "x-request-id"]
    assert len(values) == 1, metadata
    return str(values[0])


def test_json_access_lines_carry_the_request_id_the_client_received(tmp_path: Path) -> None:
    with running(tmp_path, "--log-format", "json") as (server, stub):
        _, listed = stub.ListImages.with_call(pb.ListImagesRequest())
        with pytest.raises(grpc.RpcError) as missing:
            stub.Inspect(pb.InspectRequest(image="nope:1"))
        chosen = "client-chosen.id_42"
        with pytest.raises(grpc.RpcError) as tagged:
            stub.Tag(
                pb.TagRequest(source="nope:1", target="other:2"),
                metadata=[("x-request-id", chosen)],
            )
        streamed = stub.Check(pb.CheckRequest())
        stream_id = sent_id(streamed)
        list(streamed)
    records = json_records(server.stderr_lines)

    listed_id = sent_id(listed)
    assert re.fullmatch(r"[0-9a-f]{16}", listed_id)
    line = access(records, listed_id)
    assert line["method"] == SERVICE + "ListImages"
    assert line["code"] == "OK"
    assert line["level"] == "INFO"
    assert TIME.fullmatch(line["time"])
    assert line["peer"].startswith("ipv4:127.0.0.1:")
    assert "image" not in line
    assert isinstance(line["duration_ms"], float)
    assert line["bytes_out"] >= 0

    missing_id = sent_id(missing.value)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    line = access(records, missing_id)
    assert (line["method"], line["code"], line["image"]) == (
        SERVICE + "Inspect",
        "NOT_FOUND",
        "nope:1",
    )

    assert sent_id(tagged.value) == chosen
    line = access(records, chosen)
    assert (line["image"], line["target"], line["code"]) == ("nope:1", "other:2", "NOT_FOUND")

    line = access(records, stream_id)
    assert (line["method"], line["code"]) == (SERVICE + "Check", "OK")
    assert len({listed_id, missing_id, stream_id}) == 3


def test_an_unfit_client_request_id_is_replaced(tmp_path: Path) -> None:
    with running(tmp_path, "--log-format", "json") as (server, stub):
        _, call = stub.ListImages.with_call(
            pb.ListImagesRequest(), metadata=[("x-request-id", "x" * 65)]
        )
    replaced = sent_id(call)
    assert re.fullmatch(r"[0-9a-f]{16}", replaced)
    assert access(json_records(server.stderr_lines), replaced)["code"] == "OK"


@contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port bound but not listening: connections to it are refused."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


def test_records_logged_deep_inside_a_call_carry_its_request_id(tmp_path: Path) -> None:
    with (
        refusing_port() as port,
        running(
            tmp_path,
            "--log-format=json",
            "--registry-attempts=2",
            "--registry-backoff=0.01",
        ) as (server, stub),
    ):
        pull = stub.Pull(
            pb.PullRequest(image=f"127.0.0.1:{port}/app:1"), metadata=[("x-request-id", "pull-1")]
        )
        with pytest.raises(grpc.RpcError):
            list(pull)
        assert sent_id(pull) == "pull-1"
    records = json_records(server.stderr_lines)
    inside = [r for r in records if r["logger"].startswith("imagestore.registry")]
    assert inside, records
    assert all(r.get("request_id") == "pull-1" for r in inside), inside
    assert access(records, "pull-1")["image"] == f"127.0.0.1:{port}/app:1"


@contextmanager
def silent_port() -> Iterator[int]:
    """A loopback port that takes connections (the kernel's backlog) and never
    answers: a registry request to it waits until something gives up."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        yield listening.getsockname()[1]


def test_a_call_past_its_deadline_is_logged_as_the_client_saw_it(tmp_path: Path) -> None:
    """grpc cancels the handler of a call whose deadline passed, as it does
    when the client cancels: the access line still says DEADLINE_EXCEEDED."""
    with silent_port() as port, running(tmp_path, "--log-format=json") as (server, stub):
        pull = stub.Pull(
            pb.PullRequest(image=f"127.0.0.1:{port}/app:1"),
            metadata=[("x-request-id", "late-1")],
            timeout=1,
        )
        with pytest.raises(grpc.RpcError) as late:
            list(pull)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        cancelled = stub.Pull(
            pb.PullRequest(image=f"127.0.0.1:{port}/app:2"),
            metadata=[("x-request-id", "gone-1")],
            timeout=60,
        )
        assert sent_id(cancelled) == "gone-1"  # the handler runs: it answered with headers
        cancelled.cancel()
    records = json_records(server.stderr_lines)
    assert access(records, "late-1")["code"] == "DEADLINE_EXCEEDED"
    assert access(records, "gone-1")["code"] == "CANCELLED"


def test_debug_level_leaves_library_loggers_at_warning(tmp_path: Path) -> None:
    with running(tmp_path, "--log-format=json", "--log-level=debug") as (server, stub):
        stub.ListImages(pb.ListImagesRequest())
    records = json_records(server.stderr_lines)
    libraries = [r for r in records if not r["logger"].startswith("imagestore")]
    assert all(r["level"] in ("WARNING", "ERROR", "CRITICAL") for r in libraries), libraries
    assert any(r["logger"] == "imagestore.rpc" for r in records)


@pytest.mark.parametrize("how", ["flag", "variable"])
def test_libraries_log_at_the_level_log_libraries_names(tmp_path: Path, how: str) -> None:
    flag = ["--log-libraries=debug"] if how == "flag" else []
    variable = {"IMAGESTORE_LOG_LIBRARIES": "debug"} if how == "variable" else {}
    with running(tmp_path, "--log-format=json", *flag, env=variable) as (server, stub):
        stub.ListImages(pb.ListImagesRequest())
    records = json_records(server.stderr_lines)
    # asyncio says which selector its loop uses, at debug
    assert any(r["logger"] == "asyncio" and r["level"] == "DEBUG" for r in records), records


def test_text_lines_stay_readable_key_value_pairs(tmp_path: Path) -> None:
    with (
        running(tmp_path, "--log-format", "text") as (server, stub),
        pytest.raises(grpc.RpcError) as missing,
    ):
        stub.Inspect(pb.InspectRequest(image='we ird"name'))
    request_id = sent_id(missing.value)
    lines = [line for line in server.stderr_lines if f"request_id={request_id}" in line]
    assert len(lines) == 1, lines
    stamp, level, logger, message, rest = lines[0].rstrip("\n").split(" ", 4)
    assert TIME.fullmatch(stamp)
    assert (level, logger, message) == ("INFO", "imagestore.rpc", "rpc")
    pairs = dict(PAIR.findall(rest))
    assert pairs["method"] == SERVICE + "Inspect"
    assert pairs["code"] == "INVALID_ARGUMENT"  # no such reference can exist
    assert json.loads(pairs["image"]) == 'we ird"name'
    assert pairs["peer"].startswith("ipv4:127.0.0.1:")
    assert rest.startswith(f"method={SERVICE}Inspect code=INVALID_ARGUMENT ")


def test_a_load_cancelled_as_the_server_stops_ends_in_its_access_line_alone(
    tmp_path: Path,
) -> None:
    """The cancelled Load's handler still winds down when shutdown starts: the
    server waits for it (no grpc traceback about a task cancelled at exit) and
    its access line is written after grpc has let the call go."""
    archive = docker_archive(ImageSpec(["z:1"], [layer_tar({"z": bytes(3 << 20)})]))
    sent, cancelled = threading.Event(), threading.Event()

    def requests() -> Iterator[pb.LoadRequest]:
        yield pb.LoadRequest(chunk=archive[: len(archive) // 2])
        sent.set()
        cancelled.wait(60)  # hold the stream open until cancelled

    with running(tmp_path, "--log-format=json", "--grace-period=5") as (server, stub):
        call = stub.Load(requests(), metadata=[("x-request-id", "load-1")])
        try:
            assert sent.wait(10)
            next(call, None)  # a progress message came back: the server is mid-load
            call.cancel()
        finally:
            cancelled.set()
    records = json_records(server.stderr_lines)  # no traceback lines among them
    # CANCELLED, or INVALID_ARGUMENT when the handler saw the stream end
    # (cut short) before it learnt of the cancellation
    assert access(records, "load-1")["code"] in ("CANCELLED", "INVALID_ARGUMENT")
    assert not [r for r in records if r["level"] in ("ERROR", "CRITICAL")], records


def record(message: str, *args: Any, **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("imagestore.test", logging.WARNING, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def test_json_lines_hold_fields_and_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord(
            "imagestore.x", logging.ERROR, __file__, 1, "it %s", ("failed",), sys.exc_info()
        )
    failed.image = "redis"
    line = JsonFormatter().format(failed)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "it failed"
    assert entry["image"] == "redis"
    assert entry["logger"] == "imagestore.x"
    assert entry["level"] == "ERROR"
    assert entry["exception"].startswith("Traceback")
    assert "ValueError: boom" in entry["exception"]


def test_text_lines_escape_what_would_break_them() -> None:
    line = TextFormatter().format(record("first\nsecond \x1b[31m", image="a b", code="OK"))
    assert "\n" not in line
    assert line.split(" ", 3)[3] == 'first\\nsecond \\x1b[31m image="a b" code=OK'
    assert text_value("plain:1") == "plain:1"
    assert text_value("") == '""'
    assert text_value("a=b") == '"a=b"'
    assert text_value(12.5) == "12.5"


def test_a_text_traceback_cannot_forge_a_record_line() -> None:
    """An exception's message can hold what a client sent, newlines included."""
    forged = "2026-11-30T04:50:01.123Z INFO imagestore.rpc rpc code=OK"
    try:
        raise ValueError(f"no image 'x\n{forged}'\r\x1b[2K")
    except ValueError:
        failed = record("internal error", exc_info=sys.exc_info())
    first, *rest = TextFormatter().format(failed).split("\n")
    assert first.endswith(" internal error")
    assert rest[0] == "    Traceback (most recent call last):"
    assert f"    {forged}'\\r\\x1b[2K" in rest
    assert all(line.startswith("    ") for line in rest), rest


def test_the_filter_puts_the_current_request_id_on_records() -> None:
    outside = record("x")
    RequestIdFilter().filter(outside)
    assert not hasattr(outside, "request_id")
    token = REQUEST_ID.set("abc")
    try:
        inside, explicit = record("y"), record("z", request_id="own")
        RequestIdFilter().filter(inside)
        RequestIdFilter().filter(explicit)
    finally:
        REQUEST_ID.reset(token)
    assert vars(inside)["request_id"] == "abc"
    assert vars(explicit)["request_id"] == "own"


def test_request_ids_from_clients_are_taken_when_short_and_printable() -> None:
    assert accepted_request_id([("x-request-id", "abc-123")]) == "abc-123"
    assert accepted_request_id([("x-request-id", "x" * 64)]) == "x" * 64
    assert accepted_request_id([("x-request-id", "x" * 65)]) is None
    assert accepted_request_id([("x-request-id", "a b")]) is None
    assert accepted_request_id([("x-request-id", "")]) is None
    assert accepted_request_id([("x-request-id", "é")]) is None
    assert accepted_request_id([("other", "abc")]) is None
    assert accepted_request_id(None) is None
    assert re.fullmatch(r"[0-9a-f]{16}", new_request_id())


def test_request_subjects_name_the_image_and_cut_long_ones() -> None:
    assert request_subjects(pb.ListImagesRequest(filters=["dangling=true"])) == {}
    assert request_subjects(pb.InspectRequest(image="redis")) == {"image": "redis"}
    assert request_subjects(pb.RemoveRequest(images=["a", "b"])) == {"image": "a,b"}
    assert request_subjects(pb.TagRequest(source="a", target="b")) == {"image": "a", "target": "b"}
    assert request_subjects(pb.LoginRequest(registry="r.test")) == {"registry": "r.test"}
    auth = pb.RegistryAuth(username="u", password="secret")
    assert request_subjects(pb.PullRequest(image="x", auth=auth)) == {"image": "x"}
    cut = request_subjects(pb.InspectRequest(image="n" * 500))["image"]
    assert len(cut) == MAX_SUBJECT
    assert cut.endswith("…")
    assert request_subjects(iter(())) == {}
