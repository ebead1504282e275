"""The real server process, started per test on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from imagestore.v1 import imagestore_pb2_grpc as pb_grpc

PROJECT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0


@dataclass
class Server:
    process: subprocess.Popen[str]
    address: str
    root: Path
    stderr_lines: list[str]
    readers: list[threading.Thread]
    #: the NOTIFY_SOCKET the server was given, kept open until it exits (STOPPING=1 lands there)
    notifications: socket.socket | None = None
    #: the registry endpoint's host:port (``--registry-listen``), from the same STATUS
    registry_address: str | None = None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        for reader in self.readers:
            reader.join(5)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
        if self.notifications is not None:
            close_notify_socket(self.notifications)
            self.notifications = None
        return code


def start_server(root: Path, *extra: str, env: dict[str, str] | None = None) -> Server:
    """Start `python -m imagestore serve` and wait for its readiness notification:
    the READY=1 datagram it sends to $NOTIFY_SOCKET, whose STATUS names the address."""
    notifications = notify_socket()
    notify_path = notifications.getsockname()
    process = subprocess.Popen(
        [sys.executable, "-m", "imagestore", "serve", "--root", str(root), *extra],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {}), "NOTIFY_SOCKET": notify_path},
    )
    assert process.stdout is not None
    assert process.stderr is not None
    stderr_lines: list[str] = []
    stdout_lines: list[str] = []

    def wake_when_exited() -> None:
        """A start that fails ends the wait for READY at once, not at the timeout."""
        process.wait()
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(EXITED, notify_path)

    readers = [
        threading.Thread(target=lambda: stderr_lines.extend(process.stderr), daemon=True),  # type: ignore[arg-type]
        threading.Thread(target=lambda: stdout_lines.extend(process.stdout), daemon=True),  # type: ignore[arg-type]
        threading.Thread(target=wake_when_exited, daemon=True),
    ]
    for reader in readers:
        reader.start()
    status = wait_for_ready(notifications, START_TIMEOUT)
    address, _, registry = (status or "").partition("; registry on ")
    running = Server(process, address, root, stderr_lines, readers, notifications, registry or None)
    if status is None:
        running.stop(signal.SIGKILL)
        pytest.fail(
            f"server did not start: {''.join(stderr_lines)[-3000:]}"
            f"\nstdout: {''.join(stdout_lines)[-1000:]}"
        )
    return running


#: what the test's own thread sends the notify socket when the server process has exited
EXITED = b"X-IMAGESTORE-TEST-EXITED=1"


def read_notification(message: bytes) -> dict[str, str]:
    """An sd_notify datagram: newline-separated KEY=VALUE lines."""
    fields = (line.partition("=") for line in message.decode().splitlines() if line)
    return {key: value for key, _, value in fields}


def wait_for_ready(notifications: socket.socket, timeout: float) -> str | None:
    """The READY=1 datagram's STATUS after "serving on " (the address, then
    "; registry on <address>" with --registry-listen), or None if the server
    exited first or sent nothing in time."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        notifications.settimeout(remaining)
        try:
            message = notifications.recv(4096)
        except TimeoutError:
            return None
        if message == EXITED:
            return None
        fields = read_notification(message)
        if fields.get("READY") == "1":
            status = fields.get("STATUS", "")
            assert status.startswith("serving on "), fields
            return status.removeprefix("serving on ")
    return None


def notify_socket() -> socket.socket:
    """A unix datagram socket in a fresh short directory (paths are limited to 107 bytes)."""
    directory = tempfile.mkdtemp(prefix="is-notify-", dir="/tmp")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(os.path.join(directory, "notify"))
    return receiver


def close_notify_socket(receiver: socket.socket) -> None:
    path = receiver.getsockname()
    receiver.close()
    shutil.rmtree(os.path.dirname(path), ignore_errors=True)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = start_server(tmp_path / "root", "--listen", "127.0.0.1:0", "--grace-period", "5")
    yield running
    assert running.stop() == 0, "".join(running.stderr_lines)[-3000:]


@pytest.fixture
def channel(server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(
        server.address, options=[("grpc.max_receive_message_length", 16 << 20)]
    ) as opened:
        grpc.channel_ready_future(opened).result(timeout=10)
        yield opened


@pytest.fixture
def stub(channel: grpc.Channel) -> pb_grpc.ImageStoreServiceStub:
    return pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until ``predicate()`` holds, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.02)
