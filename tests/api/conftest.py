"""The real server process, started per test on a free loopback port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
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

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        for reader in self.readers:
            reader.join(5)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
        return code


def start_server(root: Path, *extra: str, env: dict[str, str] | None = None) -> Server:
    """Start `python -m imagestore serve` and wait for its "listening on" line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "imagestore", "serve", "--root", str(root), *extra],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    assert process.stderr is not None
    stderr_lines: list[str] = []
    found: list[str] = []
    ready = threading.Event()

    def read_stdout() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            if match := re.match(r"listening on (\S+)", line):
                found.append(match[1])
                ready.set()
        ready.set()

    readers = [
        threading.Thread(target=lambda: stderr_lines.extend(process.stderr), daemon=True),  # type: ignore[arg-type]
        threading.Thread(target=read_stdout, daemon=True),
    ]
    for reader in readers:
        reader.start()
    ready.wait(START_TIMEOUT)
    running = Server(process, found[0] if found else "", root, stderr_lines, readers)
    if not found:
        running.stop(signal.SIGKILL)
        pytest.fail(f"server did not start: {''.join(stderr_lines)[-3000:]}")
    return running


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
