"""Readiness notification (systemd ``Type=notify``) from the real ``imagestore serve``.

The test plays the service manager: it binds a unix datagram socket, passes it in
``NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace) and reads what
the server sends: READY=1 once RPCs are served, STOPPING=1 when SIGTERM arrives.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import (
    PROJECT,
    START_TIMEOUT,
    close_notify_socket,
    notify_socket,
    read_notification,
)

STOP_TIMEOUT = 30


def launch(
    tmp_path: Path, notify: str | None, listen: str = "127.0.0.1:0"
) -> subprocess.Popen[str]:
    """The server (by default on a free loopback port), its output in files."""
    env = {key: value for key, value in os.environ.items() if key != "NOTIFY_SOCKET"}
    if notify is not None:
        env["NOTIFY_SOCKET"] = notify
    command = [sys.executable, "-m", "imagestore", "serve", "--root", str(tmp_path / "root")]
    command += ["--listen", listen, "--grace-period", "5"]
    with (tmp_path / "stdout").open("w") as stdout, (tmp_path / "stderr").open("w") as stderr:
        return subprocess.Popen(
            command, cwd=PROJECT, stdout=stdout, stderr=stderr, text=True, env=env
        )


def receive(receiver: socket.socket) -> dict[str, str]:
    receiver.settimeout(START_TIMEOUT)
    return read_notification(receiver.recv(4096))


def stop(process: subprocess.Popen[str]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    return process.wait(STOP_TIMEOUT)


def list_images(address: str) -> pb.ListImagesResponse:
    """One RPC, without waiting for the channel: a server not yet listening fails it."""
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
        answer: pb.ListImagesResponse = stub.ListImages(pb.ListImagesRequest(), timeout=10)
        return answer


@pytest.fixture
def path_socket() -> Iterator[socket.socket]:
    receiver = notify_socket()
    yield receiver
    close_notify_socket(receiver)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory for a unix socket to listen on (paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="is-", dir="/tmp") as directory:
        yield Path(directory)


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    name = f"imagestore-test-notify-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        yield receiver, "@" + name


def assert_ready_then_stopping(process: subprocess.Popen[str], receiver: socket.socket) -> None:
    try:
        ready = receive(receiver)
        assert ready["READY"] == "1", ready
        assert ready["MAINPID"] == str(process.pid)
        assert ready["STATUS"].startswith("serving on 127.0.0.1:"), ready
        # READY means ready: the very next RPC is answered, with no retry or wait.
        assert list(list_images(ready["STATUS"].removeprefix("serving on ")).images) == []
        process.send_signal(signal.SIGTERM)
        stopping = receive(receiver)
        assert stopping["STOPPING"] == "1", stopping
    finally:
        assert stop(process) == 0


def test_ready_once_serving_and_stopping_on_sigterm(
    tmp_path: Path, path_socket: socket.socket
) -> None:
    process = launch(tmp_path, path_socket.getsockname())
    assert_ready_then_stopping(process, path_socket)
    assert (tmp_path / "stdout").read_text() == ""  # the address travels in STATUS only


def test_an_abstract_namespace_socket_is_notified(
    tmp_path: Path, abstract_socket: tuple[socket.socket, str]
) -> None:
    receiver, name = abstract_socket
    process = launch(tmp_path, name)
    assert_ready_then_stopping(process, receiver)


def test_a_notify_socket_nobody_reads_is_logged_once_and_not_fatal(
    tmp_path: Path, socket_dir: Path
) -> None:
    missing = tmp_path / "no-such-socket"
    listen = socket_dir / "imagestore.sock"
    process = launch(tmp_path, str(missing), listen=f"unix://{listen}")
    try:
        # No notification to wait for: wait for the channel to connect instead.
        with grpc.insecure_channel(f"unix:{listen}") as channel:
            grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT)
    finally:
        assert stop(process) == 0  # READY was sent (and failed) before SIGTERM was seen
    log = (tmp_path / "stderr").read_text()
    warnings = [line for line in log.splitlines() if "cannot notify" in line]
    assert len(warnings) == 1, log[-3000:]  # STOPPING failed too, silently
    assert str(missing) in warnings[0]


def test_without_notify_socket_the_server_serves_as_before(
    tmp_path: Path, socket_dir: Path
) -> None:
    listen = socket_dir / "imagestore.sock"
    process = launch(tmp_path, None, listen=f"unix://{listen}")
    try:
        with grpc.insecure_channel(f"unix:{listen}") as channel:
            grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT)
    finally:
        assert stop(process) == 0
    assert "cannot notify" not in (tmp_path / "stderr").read_text()
    assert (tmp_path / "stdout").read_text() == ""
