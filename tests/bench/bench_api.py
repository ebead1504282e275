"""The gRPC service beside its floors, in one run (``make bench``).

- Load and Save of the 3 x ~200 MB docker-archive (see bench_store) over
  loopback, MB/s, beside ``cat`` of the same bytes (the archive for Load, the
  stored blobs for Save).
- Unary throughput from 16 concurrent clients, RPC/s, each beside the floor: a
  no-op RPC (Health/Check) on the same server in the same run. Inspect has a
  goal of >= 0.5x the floor. It is measured twice: the same question again
  and again (answered from memory between two changes of the store), and
  1,600 images in turn, each client its own 100 (more than the server keeps:
  every answer is read from the catalog on a worker thread). Tag (a catalog
  commit, which fsyncs) is shown beside them, with no goal.

    python -m tests.bench.bench_api [--seconds N] [--rounds N] [--data DIR]
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import start_server
from tests.archives import ImageSpec, docker_archive
from tests.bench.bench_store import make_docker_archive

CHUNK = 1 << 20
CLIENTS = 16
#: images each client of inspect_in_turn asks about in turn
MANY_PER_CLIENT = 100


def _channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 16 << 20)])


def _cat_seconds(paths: list[Path]) -> float:
    start = time.perf_counter()
    subprocess.run(["cat", *map(str, paths)], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def bench_streams(address: str, root: Path, archive: Path) -> None:
    size = archive.stat().st_size
    with _channel(address) as channel:
        stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]

        def requests() -> Iterator[pb.LoadRequest]:
            with archive.open("rb") as source:
                while chunk := source.read(CHUNK):
                    yield pb.LoadRequest(chunk=chunk)

        start = time.perf_counter()
        for _ in stub.Load(requests()):
            pass
        load_seconds = time.perf_counter() - start

        start = time.perf_counter()
        saved = sum(len(r.chunk) for r in stub.Save(pb.SaveRequest(images=["bench/big:1"])))
        save_seconds = time.perf_counter() - start
    blobs = sorted((root / "blobs" / "sha256").iterdir())
    blob_bytes = sum(p.stat().st_size for p in blobs)
    cat_archive = _cat_seconds([archive])
    cat_blobs = _cat_seconds(blobs)
    print(
        f"\nLoad and Save over loopback (archive {size / 1e6:.0f} MB, tar out {saved / 1e6:.0f} MB)"
    )
    print(f"  Load              {size / load_seconds / 1e6:8.0f} MB/s   cat of the archive"
          f" {size / cat_archive / 1e6:8.0f} MB/s")  # fmt: skip
    print(f"  Save              {saved / save_seconds / 1e6:8.0f} MB/s   cat of the blobs  "
          f" {blob_bytes / cat_blobs / 1e6:8.0f} MB/s   (target >= 500 MB/s)")  # fmt: skip


#: a client's call, made from its channel and its index
Call = Callable[[grpc.Channel, int], Callable[[], object]]


def _rate(address: str, seconds: float, make_call: Call) -> float:
    """Calls per second from CLIENTS threads, each with its own channel, calling in a loop."""
    counts = [0] * CLIENTS
    connected = threading.Barrier(CLIENTS + 1)  # the window opens once all are connected
    stop = threading.Event()

    def client(index: int) -> None:
        with _channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            call = make_call(channel, index)
            call()  # warm up: the first call of a channel sets up its stream
            connected.wait()
            while not stop.is_set():
                call()
                counts[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    connected.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - start)


def _service(channel: grpc.Channel) -> pb_grpc.ImageStoreServiceStub:
    return pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]


def health_check(channel: grpc.Channel, index: int) -> Callable[[], object]:
    """Health/Check: the server's cheapest RPC, through the same gRPC stack (the floor)."""
    check = health_pb2_grpc.HealthStub(channel).Check
    return lambda: check(health_pb2.HealthCheckRequest())


def inspect_image(channel: grpc.Channel, index: int) -> Callable[[], object]:
    """Inspect of one image, again and again: the answer is kept between changes."""
    call = _service(channel).Inspect
    return lambda: call(pb.InspectRequest(image="bench/big:1"))


def inspect_in_turn(channel: grpc.Channel, index: int) -> Callable[[], object]:
    """Inspect of the client's own MANY_PER_CLIENT images in turn: a question
    comes back after CLIENTS * MANY_PER_CLIENT others, more than the server
    keeps, so every answer is read afresh."""
    call = _service(channel).Inspect
    requests = itertools.cycle(
        pb.InspectRequest(image=f"bench/many:{index * MANY_PER_CLIENT + i}")
        for i in range(MANY_PER_CLIENT)
    )
    return lambda: call(next(requests))


def tag_image(channel: grpc.Channel, index: int) -> Callable[[], object]:
    """Tag of the loaded image under the client's own name: one committed transaction."""
    call = _service(channel).Tag
    request = pb.TagRequest(source="bench/big:1", target=f"bench/client{index}:x")
    return lambda: call(request)


def load_many(address: str) -> None:
    """CLIENTS * MANY_PER_CLIENT small images (one shared layer), for inspect_in_turn."""
    layer = b"\0" * 1024
    archive = docker_archive(
        *(
            ImageSpec(tags=[f"bench/many:{i}"], layers=[layer], labels={"n": str(i)})
            for i in range(CLIENTS * MANY_PER_CLIENT)
        )
    )
    with _channel(address) as channel:
        requests = (pb.LoadRequest(chunk=archive[i : i + CHUNK])
                    for i in range(0, len(archive), CHUNK))  # fmt: skip
        for _ in _service(channel).Load(requests):
            pass


#: (label, client call, goal as a ratio to the floor, note)
UNARY = [
    ("Inspect, one image", inspect_image, 0.5, "answer kept between changes"),
    ("Inspect, in turn", inspect_in_turn, 0.5, "every answer read afresh"),
    ("Tag", tag_image, None, "fsyncs each commit"),
]


def bench_unary(address: str, seconds: float, rounds: int) -> None:
    """Each round measures the floor, then each call of UNARY in turn; a ratio is
    taken within a round, so that load from elsewhere on the machine weighs on
    both of its terms."""
    load_many(address)
    floors: list[float] = []
    rates: dict[str, list[float]] = {label: [] for label, *_ in UNARY}
    for _ in range(rounds):
        floors.append(_rate(address, seconds, health_check))
        for label, call, *_ in UNARY:
            rates[label].append(_rate(address, seconds, call))
    print(f"\nUnary RPCs, {CLIENTS} concurrent clients"
          f" (medians of {rounds} rounds of {seconds:.0f} s each)")  # fmt: skip
    print(f"  {'no-op Health/Check':20} {statistics.median(floors):8.0f} RPC/s   (the floor)")
    for label, _, goal, note in UNARY:
        ratio = statistics.median(r / f for r, f in zip(rates[label], floors, strict=True))
        wanted = f"goal >= {goal:.2f}x" if goal is not None else "no goal"
        print(f"  {label:20} {statistics.median(rates[label]):8.0f} RPC/s"
              f"   {ratio:.2f}x the floor   ({note}; {wanted})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path("build/bench"))
    args = parser.parse_args()
    archive = make_docker_archive(args.data)
    with tempfile.TemporaryDirectory(dir=args.data) as scratch:
        root = Path(scratch) / "root"
        server = start_server(root, "--listen", "127.0.0.1:0", "--log-level", "warning")
        try:
            bench_streams(server.address, root, archive)
            bench_unary(server.address, args.seconds, args.rounds)
        finally:
            server.stop()
    shutil.rmtree(args.data / "api-root", ignore_errors=True)


if __name__ == "__main__":
    main()
