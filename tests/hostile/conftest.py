"""The hostile-input suite: attacks sent to the real server process.

Each test starts its own server (``target``), seeds one image, and sends an
attack inside ``target.watch()``. While the attack runs, a watchdog thread keeps
asking the server for its health and for an Inspect of the seeded image; both
must answer within ``PROBE_BOUND`` each time (generous: CI is a busy 2-core
machine; the tight figures are in ``make bench``). The watchdog also samples
the server's RSS, threads and descriptors, so a test can bound their growth
during the attack, and afterwards ``target.assert_clean()`` checks that nothing
was stored and the store is consistent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import Server, start_server
from tests.archives import ImageSpec, docker_archive, tar_of

Stub = pb_grpc.ImageStoreServiceStub
#: each probe (health, Inspect) must answer within this while an attack runs
PROBE_BOUND = 2.0
SEED = "example/seed:1"
MiB = 1 << 20


@dataclass(frozen=True)
class Resources:
    rss: int
    threads: int
    fds: int


@dataclass
class Watch:
    """What the watchdog saw while an attack ran."""

    baseline: Resources
    probes: int = 0
    slowest: float = 0.0
    failures: list[str] = field(default_factory=list)
    peak_rss: int = 0
    peak_threads: int = 0
    peak_fds: int = 0

    @property
    def rss_growth(self) -> int:
        return self.peak_rss - self.baseline.rss

    def assert_within(self, *, rss: int, threads: int = 8, fds: int = 16) -> None:
        """Peak growth during the attack, beside the baseline taken just before it."""
        assert self.rss_growth <= rss, f"RSS grew by {self.rss_growth / MiB:.0f} MiB"
        assert self.peak_threads - self.baseline.threads <= threads, (
            f"threads went from {self.baseline.threads} to {self.peak_threads}"
        )
        assert self.peak_fds - self.baseline.fds <= fds, (
            f"descriptors went from {self.baseline.fds} to {self.peak_fds}"
        )


@dataclass
class Target:
    """The server under attack, with a channel of its own for the attacker."""

    server: Server
    channel: grpc.Channel
    stub: Stub
    process: psutil.Process
    seed_id: str

    def resources(self) -> Resources:
        return Resources(
            self.process.memory_info().rss, self.process.num_threads(), self.process.num_fds()
        )

    @contextmanager
    def watch(self) -> Iterator[Watch]:
        """Probe health and Inspect on a separate channel until the block ends.

        The first probe answers before the block starts, so every attack runs
        under observation; the last one runs after it ends.
        """
        seen = Watch(self.resources())
        stop = threading.Event()
        first = threading.Event()
        with grpc.insecure_channel(self.server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            stub: Stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]

            def probe() -> None:
                started = time.monotonic()
                try:
                    answer = health.Check(health_pb2.HealthCheckRequest(), timeout=PROBE_BOUND)
                    assert answer.status == health_pb2.HealthCheckResponse.SERVING
                    stub.Inspect(pb.InspectRequest(image=SEED), timeout=PROBE_BOUND)
                except grpc.RpcError as exc:
                    seen.failures.append(f"{exc.code()}: {exc.details()}")
                seen.slowest = max(seen.slowest, time.monotonic() - started)
                seen.probes += 1
                now = self.resources()
                seen.peak_rss = max(seen.peak_rss, now.rss)
                seen.peak_threads = max(seen.peak_threads, now.threads)
                seen.peak_fds = max(seen.peak_fds, now.fds)

            def loop() -> None:
                while True:
                    probe()
                    first.set()
                    if stop.wait(0.02):
                        return

            watchdog = threading.Thread(target=loop, name="watchdog", daemon=True)
            watchdog.start()
            assert first.wait(30), "the server never answered the first probe"
            try:
                yield seen
            finally:
                stop.set()
                watchdog.join(30)
                probe()
        assert not seen.failures, f"probes failed during the attack: {seen.failures[:5]}"
        assert seen.slowest <= PROBE_BOUND, f"a probe took {seen.slowest:.2f} s"

    def assert_clean(self) -> None:
        """Only the seed is stored, nothing is left in ingest, and Check is happy."""
        listed = self.stub.ListImages(pb.ListImagesRequest(all=True), timeout=30).images
        assert [image.id for image in listed] == [self.seed_id]
        assert list(self.stub.Check(pb.CheckRequest(), timeout=60))[-1].summary.ok
        assert not list((self.server.root / "blobs" / "ingest").iterdir())

    def settle_threads(self, at_most: int, timeout: float = 30.0) -> None:
        """Wait (polling, with a deadline) until finished streams' threads are gone."""
        deadline = time.monotonic() + timeout
        while self.process.num_threads() > at_most:
            if time.monotonic() > deadline:
                pytest.fail(f"{self.process.num_threads()} threads remain (wanted {at_most})")
            time.sleep(0.05)


def load_archive(stub: Stub, archive: bytes, timeout: float = 60) -> pb.LoadResult:
    """Send an archive through Load in 1 MiB chunks; the result (the last message)."""
    chunks = [archive[i : i + MiB] for i in range(0, len(archive), MiB)] or [b""]
    requests = (pb.LoadRequest(chunk=chunk) for chunk in chunks)
    responses: list[pb.LoadResponse] = list(stub.Load(requests, timeout=timeout))
    assert responses[-1].HasField("result"), responses[-1]
    return responses[-1].result


def rpc_error(error: grpc.RpcError) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """The status code, ErrorInfo reason and metadata the server sent."""
    trailers: dict[str, Any] = dict(error.trailing_metadata() or ())  # type: ignore[arg-type]
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    for detail in status.details:
        if detail.Unpack(info):
            assert info.domain == "imagestore"
            return error.code(), info.reason, dict(info.metadata)
    pytest.fail(f"no ErrorInfo in {error.code()}: {error.details()}")


def retry_delay(error: grpc.RpcError) -> float:
    """The RetryInfo delay the server sent beside its ErrorInfo, in seconds."""
    trailers: dict[str, Any] = dict(error.trailing_metadata() or ())  # type: ignore[arg-type]
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    for detail in status.details:
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(retry):
            return float(retry.retry_delay.ToNanoseconds()) / 1e9
    pytest.fail(f"no RetryInfo in {error.code()}: {error.details()}")


def start_target(root: Path, *options: str) -> tuple[Server, grpc.Channel, Target]:
    server = start_server(root, "--listen", "127.0.0.1:0", "--grace-period", "5", *options)
    channel = grpc.insecure_channel(
        server.address, options=[("grpc.max_receive_message_length", 64 * MiB)]
    )
    grpc.channel_ready_future(channel).result(timeout=30)
    stub: Stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
    seed = ImageSpec(tags=[SEED], layers=[tar_of({"etc/seed": b"seed" * 256})])
    load_archive(stub, docker_archive(seed))
    # Warm every path once, so the baseline is taken after imports and caches.
    stub.ListImages(pb.ListImagesRequest(), timeout=30)
    stub.Inspect(pb.InspectRequest(image=SEED), timeout=30)
    list(stub.Check(pb.CheckRequest(), timeout=30))
    target = Target(server, channel, stub, psutil.Process(server.process.pid), seed.image_id)
    return server, channel, target


@pytest.fixture
def server_options() -> tuple[str, ...]:
    """Extra ``imagestore serve`` flags; a test module overrides this fixture."""
    return ()


@pytest.fixture
def target(tmp_path: Path, server_options: tuple[str, ...]) -> Iterator[Target]:
    server, channel, running = start_target(tmp_path / "root", *server_options)
    try:
        yield running
    finally:
        channel.close()
        log = "".join(server.stderr_lines)
        assert server.stop() == 0, log[-3000:]
        assert "Traceback" not in log, log[-5000:]
