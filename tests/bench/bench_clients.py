"""The Python clients beside each other and their floors, in one run
(``make bench``): Inspect RPCs per second from 16 concurrent callers.

- AsyncImageStoreClient: 16 tasks on one client (one channel, one event loop).
- ImageStoreClient: 16 threads sharing one client (one channel), and 16
  threads with a client each (16 channels).
- Floors: Health/Check (a no-op RPC) through raw channels, the same ways:
  16 tasks on one grpc.aio channel, 16 threads on their own grpc channels.

Every Inspect asks about the same image: the hot path, answered from the
server's memory between two changes of the store (api/answers.py), so the
figures weigh the clients and the gRPC stacks, not the catalog.

    python -m tests.bench.bench_clients [--seconds N] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imagestore.client import AsyncImageStoreClient, ImageStoreClient
from tests.api.conftest import start_server
from tests.archives import ImageSpec, docker_archive, tar_of

CALLERS = 16
IMAGE = ImageSpec(["bench/clients:1"], [tar_of({"a": b"a" * 4096})], labels={"k": "v"})


def _threads_rate(
    seconds: float, make_call: Callable[[int], tuple[Callable[[], object], Callable[[], None]]]
) -> float:
    """Calls per second from CALLERS threads; ``make_call(i)`` gives thread i its
    call and what closes it. The window opens once every thread has called once."""
    counts = [0] * CALLERS
    ready = threading.Barrier(CALLERS + 1)
    stop = threading.Event()

    def run(index: int) -> None:
        call, close = make_call(index)
        try:
            call()  # warm up: connect, set up the stream
            ready.wait()
            while not stop.is_set():
                call()
                counts[index] += 1
        finally:
            close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CALLERS)]
    for thread in threads:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - start)


async def _tasks_rate(seconds: float, call: Callable[[], Awaitable[object]]) -> float:
    """Calls per second from CALLERS tasks on one event loop, sharing ``call``'s channel."""
    counts = [0] * CALLERS
    stop = asyncio.Event()
    await call()  # warm up

    async def run(index: int) -> None:
        while not stop.is_set():
            await call()
            counts[index] += 1

    tasks = [asyncio.create_task(run(i)) for i in range(CALLERS)]
    start = time.perf_counter()
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    return sum(counts) / (time.perf_counter() - start)


def floor_threads(address: str, seconds: float) -> float:
    """Health/Check from CALLERS threads, each on its own raw channel."""

    def make(index: int) -> tuple[Callable[[], object], Callable[[], None]]:
        channel = grpc.insecure_channel(address)
        check = health_pb2_grpc.HealthStub(channel).Check
        return (lambda: check(health_pb2.HealthCheckRequest())), channel.close

    return _threads_rate(seconds, make)


def sync_shared(address: str, seconds: float) -> float:
    """Inspect from CALLERS threads sharing one ImageStoreClient."""
    with ImageStoreClient(address, timeout=30) as client:

        def make(index: int) -> tuple[Callable[[], object], Callable[[], None]]:
            return (lambda: client.inspect("bench/clients:1")), lambda: None

        return _threads_rate(seconds, make)


def sync_own(address: str, seconds: float) -> float:
    """Inspect from CALLERS threads, each with its own ImageStoreClient."""

    def make(index: int) -> tuple[Callable[[], object], Callable[[], None]]:
        client = ImageStoreClient(address, timeout=30)
        return (lambda: client.inspect("bench/clients:1")), client.close

    return _threads_rate(seconds, make)


async def floor_tasks(address: str, seconds: float) -> float:
    """Health/Check from CALLERS tasks on one raw grpc.aio channel."""
    async with grpc.aio.insecure_channel(address) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        return await _tasks_rate(seconds, lambda: check(health_pb2.HealthCheckRequest()))


async def async_shared(address: str, seconds: float) -> float:
    """Inspect from CALLERS tasks on one AsyncImageStoreClient."""
    async with AsyncImageStoreClient(address, timeout=30) as client:
        return await _tasks_rate(seconds, lambda: client.inspect("bench/clients:1"))


#: (label, how it is measured, its floor's label)
MEASURES: list[tuple[str, Callable[[str, float], float], str]] = [
    ("no-op, 16 threads", floor_threads, ""),
    ("no-op, 16 tasks", lambda a, s: asyncio.run(floor_tasks(a, s)), ""),
    ("sync, one client", sync_shared, "no-op, 16 threads"),
    ("sync, 16 clients", sync_own, "no-op, 16 threads"),
    ("asyncio, one client", lambda a, s: asyncio.run(async_shared(a, s)), "no-op, 16 tasks"),
]


def bench(address: str, seconds: float, rounds: int) -> None:
    """Each round measures every way in turn; ratios are taken within a round,
    so that load from elsewhere on the machine weighs on both terms."""
    rates: dict[str, list[float]] = {label: [] for label, *_ in MEASURES}
    for _ in range(rounds):
        for label, measure, _ in MEASURES:
            rates[label].append(measure(address, seconds))
    print(f"\nInspect of one image (the hot path: answers kept), {CALLERS} concurrent callers"
          f" (medians of {rounds} rounds of {seconds:.0f} s each)")  # fmt: skip
    for label, _, floor in MEASURES:
        line = f"  {label:22} {statistics.median(rates[label]):8.0f} RPC/s"
        if floor:
            ratios = [r / f for r, f in zip(rates[label], rates[floor], strict=True)]
            line += f"   {statistics.median(ratios):.2f}x its floor ({floor})"
        else:
            line += "   (a floor: Health/Check through a raw channel)"
        print(line)
    ratio = statistics.median(
        a / s for a, s in zip(rates["asyncio, one client"], rates["sync, one client"], strict=True)
    )
    print(f"  asyncio client / sync client (one client each): {ratio:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        server = start_server(
            Path(scratch) / "root", "--listen", "127.0.0.1:0", "--log-level", "warning"
        )
        try:
            with ImageStoreClient(server.address, timeout=30) as client:
                client.load(io.BytesIO(docker_archive(IMAGE))).result()
            bench(server.address, args.seconds, args.rounds)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
