"""The listener, through the real ``imagestore serve`` command.

Bounds enforced: a second server on an address already served (TCP port,
metrics port or live unix socket) exits 1 with one line saying ``address
already in use`` and never reports itself ready, while the first keeps serving;
ports outside 0..65535 are refused (exit 1, the flag named) instead of being
taken modulo 65536; so are admission limits the server cannot honour (a cap
below 1, a response budget outside 64 KiB..8 MiB).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.api.conftest import (
    PROJECT,
    Server,
    close_notify_socket,
    notify_socket,
    read_notification,
    start_server,
)

TIMEOUT = 60


@dataclass
class Attempt:
    result: subprocess.CompletedProcess[str]
    #: the datagrams the server sent its NOTIFY_SOCKET
    notifications: list[dict[str, str]]


def serve(root: Path, *options: str) -> Attempt:
    """``imagestore serve`` expected to give up on its own (a timeout fails the test)."""
    receiver = notify_socket()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "imagestore", "serve", "--root", str(root), *options],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env={**os.environ, "NOTIFY_SOCKET": receiver.getsockname()},
        )
        receiver.setblocking(False)  # the process is gone: what it sent is queued
        notifications = []
        with contextlib.suppress(BlockingIOError):
            while True:
                notifications.append(read_notification(receiver.recv(4096)))
    finally:
        close_notify_socket(receiver)
    return Attempt(result, notifications)


def assert_refused(attempt: Attempt, *phrases: str) -> None:
    """Exit 1, never reported ready, nothing on stdout, the last line of stderr naming
    the problem, no traceback."""
    result = attempt.result
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert not [fields for fields in attempt.notifications if fields.get("READY") == "1"]
    assert result.stdout == ""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("imagestore serve: "), last
    for phrase in phrases:
        assert phrase in last, last


def assert_serving(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def first(tmp_path: Path) -> Iterator[Server]:
    running = start_server(tmp_path / "first", "--listen", "127.0.0.1:0")
    yield running
    assert running.stop() == 0, "".join(running.stderr_lines)[-3000:]


def test_a_second_server_on_a_taken_port_fails_instead_of_sharing_it(
    first: Server, tmp_path: Path
) -> None:
    result = serve(tmp_path / "second", "--listen", first.address)
    assert_refused(result, f"cannot listen on {first.address}", "address already in use")
    # Every new connection still reaches the first server (no second listener
    # shares the port): each sees the first server's store.
    for _ in range(10):
        assert_serving(first.address)


@pytest.mark.parametrize("flag", ["--listen", "--metrics-listen"])
@pytest.mark.parametrize("port", ["99999", "65536"])
def test_a_port_out_of_range_is_refused(tmp_path: Path, flag: str, port: str) -> None:
    options = ["--listen", "127.0.0.1:0"] if flag == "--metrics-listen" else []
    result = serve(tmp_path / "root", *options, flag, f"127.0.0.1:{port}")
    assert_refused(result, flag, f"port {port} is out of range", "0 to 65535")


def test_a_taken_metrics_port_fails(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        result = serve(tmp_path / "root", "--listen", "127.0.0.1:0", "--metrics-listen", address)
    assert_refused(result, f"cannot listen on {address}", "address already in use")


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory for unix sockets (their paths are limited to 107 bytes)."""
    with tempfile.TemporaryDirectory(prefix="is-", dir="/tmp") as directory:
        yield Path(directory)


def test_a_live_unix_socket_is_not_taken_over(tmp_path: Path, socket_dir: Path) -> None:
    listen = f"unix://{socket_dir}/imagestore.sock"
    running = start_server(tmp_path / "first", "--listen", listen)
    try:
        result = serve(tmp_path / "second", "--listen", listen)
        assert_refused(result, "address already in use")
        assert_serving(f"unix:{socket_dir}/imagestore.sock")
    finally:
        assert running.stop() == 0


def test_a_leftover_unix_socket_file_is_replaced(tmp_path: Path, socket_dir: Path) -> None:
    path = socket_dir / "imagestore.sock"
    with socket.socket(socket.AF_UNIX) as leftover:  # bound, then closed: nobody listens
        leftover.bind(str(path))
    assert path.exists()
    running = start_server(tmp_path / "root", "--listen", f"unix://{path}")
    try:
        assert_serving(f"unix:{path}")
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o600)
    finally:
        assert running.stop() == 0


def _connects_as(uid: int, gid: int, path: Path) -> bool:
    """Whether a process of ``uid``/``gid`` (no other groups) may connect to the
    unix socket at ``path``: a forked child drops root and tries, since root
    itself passes every permission check."""
    child = os.fork()
    if child == 0:  # pragma: no cover - the child exits at once
        code = 2
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(str(path))
            code = 0
        except PermissionError:
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) in (0, 1), "the child failed otherwise"
    return os.waitstatus_to_exitcode(status) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_socket_mode_0660_lets_the_group_connect_and_no_one_else(
    tmp_path: Path, socket_dir: Path
) -> None:
    path = socket_dir / "imagestore.sock"
    socket_dir.chmod(0o755)  # only the socket's own mode decides
    running = start_server(tmp_path / "root", "--listen", f"unix://{path}", "--socket-mode", "0660")
    try:
        assert_serving(f"unix:{path}")
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o660)
        group = os.stat(path).st_gid  # the server's group
        outsider = 65534  # nobody / nogroup
        assert _connects_as(outsider, group, path)
        assert not _connects_as(outsider, outsider, path)
    finally:
        assert running.stop() == 0


def test_a_socket_open_to_every_user_needs_insecure(tmp_path: Path, socket_dir: Path) -> None:
    path = socket_dir / "imagestore.sock"
    listen = f"unix://{path}"
    refused = serve(tmp_path / "root", "--listen", listen, "--socket-mode", "0666")
    assert_refused(refused, "socket mode of 0666", "--insecure")
    running = start_server(
        tmp_path / "root", "--listen", listen, "--socket-mode", "0666", "--insecure"
    )
    try:
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o666)
    finally:
        assert running.stop() == 0


@pytest.mark.parametrize(
    ("option", "value", "phrase"),
    [
        ("--max-concurrent-rpcs", "0", "--max-concurrent-rpcs must be at least 1"),
        ("--max-concurrent-streams", "-1", "--max-concurrent-streams must be at least 1"),
        ("--max-response-bytes", "1000", "--max-response-bytes must be between"),
        ("--max-response-bytes", str(64 << 20), "--max-response-bytes must be between"),
    ],
)
def test_a_limit_the_server_cannot_honour_is_refused(
    tmp_path: Path, option: str, value: str, phrase: str
) -> None:
    result = serve(tmp_path / "root", "--listen", "127.0.0.1:0", option, value)
    assert_refused(result, phrase)
