"""The gRPC service beside its floors, in one run (``make bench``).

- Load and Save of the 3 x ~200 MB docker-archive (see bench_store) over
  loopback, MB/s, beside ``cat`` of the same bytes (the archive for Load, the
  stored blobs for Save).
- Unary throughput: Tag + Inspect from 16 concurrent clients, RPC/s, beside
  a no-op RPC (Health/Check) on the same server.

    python -m tests.bench.bench_api [--seconds N] [--data DIR]
"""

from __future__ import annotations

import argparse
import shutil
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
from tests.bench.bench_store import make_docker_archive

CHUNK = 1 << 20
CLIENTS = 16


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


def _rate(address: str, seconds: float, work: Callable[[grpc.Channel, int], int]) -> float:
    """Calls per second from CLIENTS threads, each with its own channel."""
    counts = [0] * CLIENTS
    stop = threading.Event()

    def client(index: int) -> None:
        with _channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            while not stop.is_set():
                counts[index] += work(channel, index)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts) / seconds


def bench_unary(address: str, seconds: float) -> None:
    def tag_and_inspect(channel: grpc.Channel, index: int) -> int:
        stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
        stub.Tag(pb.TagRequest(source="bench/big:1", target=f"bench/client{index}:x"))
        stub.Inspect(pb.InspectRequest(image=f"bench/client{index}:x"))
        return 2

    def noop(channel: grpc.Channel, index: int) -> int:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        return 1

    ours = _rate(address, seconds, tag_and_inspect)
    floor = _rate(address, seconds, noop)
    print(f"\nUnary RPCs, {CLIENTS} concurrent clients ({seconds:.0f} s each)")
    print(f"  Tag + Inspect     {ours:8.0f} RPC/s   (target >= 1,000)")
    print(f"  no-op Health/Check{floor:8.0f} RPC/s   ratio {ours / floor:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--data", type=Path, default=Path("build/bench"))
    args = parser.parse_args()
    archive = make_docker_archive(args.data)
    with tempfile.TemporaryDirectory(dir=args.data) as scratch:
        root = Path(scratch) / "root"
        server = start_server(root, "--listen", "127.0.0.1:0", "--log-level", "warning")
        try:
            bench_streams(server.address, root, archive)
            bench_unary(server.address, args.seconds)
        finally:
            server.stop()
    shutil.rmtree(args.data / "api-root", ignore_errors=True)


if __name__ == "__main__":
    main()
