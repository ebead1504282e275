"""Pull and Push against a real registry on loopback, beside skopeo (``make bench``).

- Pull of an image with 3 layers of 200 MiB uncompressed (~100 MiB gzip each;
  4 KiB random / 4 KiB text alternating, as in the registry recipe) through the
  imagestore server, vs ``skopeo copy docker://… oci:…`` (no decompression)
  and ``skopeo copy docker://… docker-archive:…`` (decompresses, like us).
- Push of the same into an empty registry vs ``skopeo copy oci:… docker://…``.
- The same for an image of 200 tiny layers (per-layer overhead).
- Server RSS growth while pulling one 1 GiB layer, after a warm-up pull.

Medians of interleaved runs; wall times of whole operations.

    python -m tests.bench.bench_registry [--runs N] [--data DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import psutil

from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import Server, start_server
from tests.archives import tar_of
from tests.bench.images import (
    MIB,
    SKOPEO,
    big_image,
    blob_bytes,
    half_compressible,
    oci_source,
    publish,
)
from tests.registry.distribution import Distribution, start_distribution


def seconds(work: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    work(*args)
    return time.perf_counter() - start


def skopeo_seconds(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([*SKOPEO, "copy", "-q", *args], check=True)
    return time.perf_counter() - start


class Bench:
    def __init__(self, data: Path) -> None:
        self.data = data
        self.source = start_distribution(data / "registry-source")
        self.server: Server = start_server(data / "store", "--listen", "127.0.0.1:0")
        self.channel = grpc.insecure_channel(self.server.address)
        self.stub = pb_grpc.ImageStoreServiceStub(self.channel)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self.channel.close()
        self.server.stop()
        self.source.stop()

    def publish(self, layout: Path, name: str) -> str:
        reference = f"{self.source.host}/{name}:1"
        publish(layout, reference)
        return reference

    def pull(self, reference: str) -> None:
        for _ in self.stub.Pull(pb.PullRequest(image=reference), timeout=600):
            pass

    def forget(self) -> None:
        """Empty the store: every image and blob goes."""
        self.stub.Prune(pb.PruneRequest(all=True))

    def push(self, reference: str, target: str) -> None:
        self.stub.Tag(pb.TagRequest(source=reference, target=target))
        for _ in self.stub.Push(pb.PushRequest(image=target), timeout=600):
            pass
        self.stub.Remove(pb.RemoveRequest(images=[target]))

    def fresh_registry(self, label: str) -> Distribution:
        folder = self.data / f"registry-{label}"
        shutil.rmtree(folder, ignore_errors=True)
        return start_distribution(folder)


def bench_pull(bench: Bench, reference: str, runs: int, size_mib: float, *, archive: bool) -> None:
    ours: list[float] = []
    theirs: list[float] = []
    unpacking: list[float] = []
    out = bench.data / "skopeo-out"
    tarball = bench.data / "skopeo-out.tar"
    for _ in range(runs):
        bench.forget()
        ours.append(seconds(bench.pull, reference))
        shutil.rmtree(out, ignore_errors=True)
        theirs.append(
            skopeo_seconds("--src-tls-verify=false", f"docker://{reference}", f"oci:{out}:1")
        )
        if archive:
            tarball.unlink(missing_ok=True)
            unpacking.append(
                skopeo_seconds(
                    "--src-tls-verify=false",
                    f"docker://{reference}",
                    f"docker-archive:{tarball}:bench/x:1",
                )
            )
    shutil.rmtree(out, ignore_errors=True)
    tarball.unlink(missing_ok=True)
    mine, peer = statistics.median(ours), statistics.median(theirs)
    print(f"  imagestore Pull (verifies diff_ids)   {mine:7.3f} s  {size_mib / mine:7.0f} MiB/s")
    print(f"  skopeo copy docker:// -> oci:         {peer:7.3f} s  {size_mib / peer:7.0f} MiB/s")
    print(f"  ratio imagestore / skopeo             {mine / peer:7.2f}x  (target <= 1.0x)")
    if archive:
        unpack = statistics.median(unpacking)
        print(f"  skopeo copy docker:// -> docker-archive: {unpack:7.3f} s (decompresses)")
        print(f"  ratio imagestore / that               {mine / unpack:7.2f}x  (target <= 0.35x)")


def bench_push(bench: Bench, reference: str, layout: Path, runs: int, size_mib: float) -> None:
    ours: list[float] = []
    theirs: list[float] = []
    for run in range(runs):
        registry = bench.fresh_registry("push")
        try:
            ours.append(seconds(bench.push, reference, f"{registry.host}/pushed/ours{run}:1"))
        finally:
            registry.stop()
        registry = bench.fresh_registry("push")
        try:
            target = f"docker://{registry.host}/pushed/skopeo{run}:1"
            theirs.append(skopeo_seconds("--dest-tls-verify=false", f"oci:{layout}:1", target))
        finally:
            registry.stop()
    mine, peer = statistics.median(ours), statistics.median(theirs)
    print(f"  imagestore Push                       {mine:7.3f} s  {size_mib / mine:7.0f} MiB/s")
    print(f"  skopeo copy oci: -> docker://         {peer:7.3f} s  {size_mib / peer:7.0f} MiB/s")
    print(f"  ratio imagestore / skopeo             {mine / peer:7.2f}x  (target <= 0.6x)")


def bench_rss(bench: Bench, reference: str) -> None:
    process = psutil.Process(bench.server.process.pid)
    bench.forget()
    bench.pull(reference)  # warm-up
    bench.forget()
    before = process.memory_info().rss
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        bench.pull(reference)
    finally:
        done.set()
        sampler.join()
    print(f"  server RSS {before / MIB:.0f} MiB before, peak {peak / MIB:.0f} MiB:"
          f" growth {(peak - before) / MIB:.1f} MiB  (budget 64 MiB)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--data", type=Path, default=Path("build/bench/registry"))
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    big = big_image(args.data)
    tiny = oci_source(args.data, "tiny", [tar_of({f"f{i}": b"%d\n" % i * 100}) for i in range(200)])
    huge = oci_source(args.data, "huge", [tar_of({"one": half_compressible(1024 * MIB, 7)})])
    bench = Bench(args.data)
    try:
        big_ref = bench.publish(big, "bench/big")
        tiny_ref = bench.publish(tiny, "bench/tiny")
        huge_ref = bench.publish(huge, "bench/huge")
        big_mib = blob_bytes(big) / MIB
        tiny_mib = blob_bytes(tiny) / MIB
        print(f"\nPull, 3 layers x 200 MiB ({big_mib:.0f} MiB of blobs), median of {args.runs}")
        bench_pull(bench, big_ref, args.runs, big_mib, archive=True)
        print(f"\nPush, the same image into an empty registry, median of {args.runs}")
        bench.pull(big_ref)
        bench_push(bench, big_ref, big, args.runs, big_mib)
        print(f"\nPull, 200 tiny layers, median of {args.runs}")
        bench_pull(bench, tiny_ref, args.runs, tiny_mib, archive=False)
        print(f"\nPush, 200 tiny layers, median of {args.runs}")
        bench.pull(tiny_ref)
        bench_push(bench, tiny_ref, tiny, args.runs, tiny_mib)
        print("\nPull of one 1 GiB layer")
        bench_rss(bench, huge_ref)
    finally:
        bench.close()


if __name__ == "__main__":
    main()
