"""Check of a ~2 GB store beside an idle server, in one run (``make bench``).

- Check's duration (every blob re-hashed; the blobs were just written, so they
  are most likely in the page cache: this is the hashing, not the disk).
- Inspect latency, p50 and p99, from one client calling in a loop: on the
  idle server, then while a Check runs. Check hashes with no lock held, so
  Inspect should barely notice it: the goal is p50 during Check <= 2x idle.
- Health p99 in the same two phases.

    python -m tests.bench.bench_check [--data DIR] [--gigabytes N] [--idle-calls N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imagestore.oci import mediatypes as mt
from imagestore.oci.manifests import Descriptor
from imagestore.oci.references import parse_reference
from imagestore.store.blobs import Encoding
from imagestore.store.leases import Lease
from imagestore.store.store import Store
from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import start_server

MiB = 1 << 20
LAYER_SIZE = 256 * MiB
LAYERS_PER_IMAGE = 2
IMAGE = "bench/check{}:1"


def _random_layer(store: Store, lease: Lease, index: int) -> Descriptor:
    """An uncompressed tar of one incompressible file, streamed into the store."""
    header = tarfile.TarInfo(f"random{index}.bin")
    header.size = LAYER_SIZE
    with store.ingest(lease, encoding=Encoding.LAYER) as ingest:
        ingest.write(header.tobuf(format=tarfile.USTAR_FORMAT))
        for _ in range(LAYER_SIZE // MiB):
            ingest.write(os.urandom(MiB))
        ingest.write(bytes(1024))  # the tar's end: two zero blocks
        info = store.commit(ingest, lease, mt.OCI_LAYER)
    return Descriptor(mt.OCI_LAYER, info.digest, info.size)


def make_store(directory: Path, gigabytes: float) -> tuple[Path, list[str]]:
    """A store of ``gigabytes`` of incompressible layers (kept for the next run)."""
    layers = max(1, round(gigabytes * (1 << 30) / LAYER_SIZE))
    images = -(-layers // LAYERS_PER_IMAGE)
    names = [IMAGE.format(i) for i in range(images)]
    root = directory / f"check-{layers}x{LAYER_SIZE // MiB}MiB"
    done = root / "complete"
    if done.exists():
        return root, names
    shutil.rmtree(root, ignore_errors=True)
    with Store.open(root) as store:
        made = 0
        for image, name in enumerate(names):
            with store.lease() as lease:
                count = min(LAYERS_PER_IMAGE, layers - made)
                descriptors = [_random_layer(store, lease, made + i) for i in range(count)]
                made += count
                with store._parts.catalog.reading() as db:
                    diff_ids = [db.blob(d.digest) for d in descriptors]
                config = json.dumps(
                    {
                        "architecture": "amd64",
                        "os": "linux",
                        "config": {"Labels": {"image": str(image)}},
                        "rootfs": {
                            "type": "layers",
                            "diff_ids": [row.diff_id for row in diff_ids if row is not None],
                        },
                    }
                ).encode()
                config_info = store.put_blob(lease, config, mt.OCI_CONFIG)
                manifest = json.dumps(
                    {
                        "schemaVersion": 2,
                        "mediaType": mt.OCI_MANIFEST,
                        "config": {
                            "mediaType": mt.OCI_CONFIG,
                            "digest": config_info.digest,
                            "size": config_info.size,
                        },
                        "layers": [d.to_json() for d in descriptors],
                    }
                ).encode()
                info = store.put_blob(lease, manifest, mt.OCI_MANIFEST)
                target = Descriptor(mt.OCI_MANIFEST, info.digest, info.size)
                store.commit_target(lease, target, [parse_reference(name)])
    done.touch()
    return root, names


def _latencies(call: Callable[[], object], until: Callable[[int], bool]) -> list[float]:
    """Seconds per call, calling in a loop until ``until(calls so far)``."""
    times: list[float] = []
    while not until(len(times)):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def _p(times: list[float], percent: int) -> float:
    """The percentile in milliseconds (a blocked server may answer only once)."""
    if len(times) < 2:
        return max(times) * 1000
    return statistics.quantiles(times, n=100, method="inclusive")[percent - 1] * 1000


def bench_check(address: str, names: list[str], stored: int, idle_calls: int) -> None:
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
        health = health_pb2_grpc.HealthStub(channel)
        picks = iter(range(1 << 62))

        def inspect() -> None:
            stub.Inspect(pb.InspectRequest(image=names[next(picks) % len(names)]), timeout=30)

        def probe() -> None:
            health.Check(health_pb2.HealthCheckRequest(), timeout=30)

        for _ in range(50):  # warm-up
            inspect()
        idle_inspect = _latencies(inspect, lambda n: n >= idle_calls)
        idle_health = _latencies(probe, lambda n: n >= idle_calls)

        done = threading.Event()
        result: list[list[pb.CheckResponse]] = []

        def run_check() -> None:
            try:
                result.append(list(stub.Check(pb.CheckRequest(), timeout=3600)))
            finally:
                done.set()

        start = time.perf_counter()
        checker = threading.Thread(target=run_check)
        checker.start()
        busy_inspect: list[float] = []
        busy_health: list[float] = []
        while not done.is_set():  # alternate, so both sample the whole Check
            busy_inspect += _latencies(inspect, lambda n: n >= 1)
            busy_health += _latencies(probe, lambda n: n >= 1)
        checker.join()
        seconds = time.perf_counter() - start
    report = result[0][-1].summary
    problems = [r.problem for r in result[0] if r.HasField("problem")]
    assert report.ok, problems
    messages = len(result[0])
    print(f"\nCheck of a {stored / 1e9:.1f} GB store ({report.blobs_checked} blobs,"
          f" {messages} messages streamed)")  # fmt: skip
    print(f"  Check             {seconds:8.2f} s      {stored / seconds / 1e6:8.0f} MB/s hashed")
    print(f"  Inspect, idle     p50 {_p(idle_inspect, 50):7.2f} ms   p99"
          f" {_p(idle_inspect, 99):7.2f} ms   ({len(idle_inspect)} calls)")  # fmt: skip
    print(f"  Inspect, Check    p50 {_p(busy_inspect, 50):7.2f} ms   p99"
          f" {_p(busy_inspect, 99):7.2f} ms   ({len(busy_inspect)} calls)")  # fmt: skip
    print(f"  Health,  idle     p99 {_p(idle_health, 99):7.2f} ms   during Check p99"
          f" {_p(busy_health, 99):7.2f} ms")  # fmt: skip
    ratio = _p(busy_inspect, 50) / _p(idle_inspect, 50)
    print(f"  ratio             {ratio:8.2f}x   Inspect p50 during Check / idle (target <= 2x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("build/bench"))
    parser.add_argument("--gigabytes", type=float, default=2.0)
    parser.add_argument("--idle-calls", type=int, default=500)
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    root, names = make_store(args.data, args.gigabytes)
    stored = sum(p.stat().st_size for p in (root / "blobs" / "sha256").iterdir())
    server = start_server(root, "--listen", "127.0.0.1:0", "--log-level", "warning")
    try:
        bench_check(server.address, names, stored, args.idle_calls)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
