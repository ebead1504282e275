"""imagestore's OCI Distribution endpoint beside `docker-registry` (``make bench``).

- ``skopeo copy docker://… oci:…`` of an image with 3 layers of 200 MiB
  uncompressed (~100 MiB gzip each, half random; the image tests/bench/images.py
  builds) from imagestore's endpoint and from `docker-registry` serving the same
  blobs, interleaved in one run: medians, MB/s, and the ratio of imagestore's
  throughput to Distribution's (goal >= 0.8x, issue 18).
- The server's RSS (VmRSS of /proc/PID/status) before and during 8 concurrent
  skopeo pulls of that image, after a warm-up pull: the growth (goal <= 64 MiB).

The store gets the image by a gRPC Pull from the `docker-registry`, so both
serve the same manifest and blobs byte for byte.

    python -m tests.bench.bench_endpoint [--runs N] [--data DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path

import grpc

from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import Server, start_server
from tests.bench.images import MIB, SKOPEO, big_image, blob_bytes, publish
from tests.registry.distribution import Distribution, start_distribution

MB = 1_000_000
CONCURRENT_PULLS = 8
#: the store's name of the image: docker.io/bench/big:1, `bench/big:1` on the endpoint
STORE_NAME = "bench/big:1"


def vm_rss(pid: int) -> int:
    """Resident bytes of a process, as the kernel counts them now."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def copy_to_layout(source: str, layout: Path) -> float:
    """Wall seconds of one ``skopeo copy docker://source oci:layout`` into an empty layout."""
    shutil.rmtree(layout, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(
        [*SKOPEO, "copy", "-q", "--src-tls-verify=false", f"docker://{source}", f"oci:{layout}:1"],
        check=True,
    )
    return time.perf_counter() - start


class Bench:
    """One `docker-registry` and one imagestore server holding the same image."""

    def __init__(self, data: Path) -> None:
        self.data = data
        shutil.rmtree(data / "registry", ignore_errors=True)
        shutil.rmtree(data / "store", ignore_errors=True)
        self.distribution: Distribution = start_distribution(data / "registry")
        self.server: Server = start_server(
            data / "store", "--listen", "127.0.0.1:0", "--registry-listen", "127.0.0.1:0"
        )
        address = self.server.registry_address
        if not address:
            self.close()
            raise SystemExit("the server announced no registry endpoint (--registry-listen)")
        self.endpoint: str = address
        self.channel = grpc.insecure_channel(self.server.address)
        self.stub = pb_grpc.ImageStoreServiceStub(self.channel)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        if hasattr(self, "channel"):
            self.channel.close()
        self.server.stop()
        self.distribution.stop()
        # the image's layout stays for the next run; the two copies served from go
        shutil.rmtree(self.data / "registry", ignore_errors=True)
        shutil.rmtree(self.data / "store", ignore_errors=True)

    def publish(self, layout: Path) -> tuple[str, str]:
        """Put the image in both: (reference on Distribution, reference on imagestore)."""
        upstream = f"{self.distribution.host}/bench/big:1"
        publish(layout, upstream)
        for _ in self.stub.Pull(pb.PullRequest(image=upstream), timeout=600):
            pass
        self.stub.Tag(pb.TagRequest(source=upstream, target=STORE_NAME))
        return upstream, f"{self.endpoint}/{STORE_NAME}"


def bench_throughput(bench: Bench, theirs: str, ours: str, runs: int, size_bytes: int) -> None:
    layout = bench.data / "copy"
    mine: list[float] = []
    peer: list[float] = []
    copy_to_layout(ours, layout)  # warm-up: both read from a warm page cache
    copy_to_layout(theirs, layout)
    for _ in range(runs):
        mine.append(copy_to_layout(ours, layout))
        peer.append(copy_to_layout(theirs, layout))
    shutil.rmtree(layout, ignore_errors=True)
    ours_s, theirs_s = statistics.median(mine), statistics.median(peer)
    ours_rate, theirs_rate = size_bytes / ours_s / MB, size_bytes / theirs_s / MB
    print(f"  imagestore endpoint -> oci:      {ours_s:7.3f} s  {ours_rate:7.0f} MB/s")
    print(f"  docker-registry -> oci:          {theirs_s:7.3f} s  {theirs_rate:7.0f} MB/s")
    print(f"  ratio imagestore / distribution  {ours_rate / theirs_rate:7.2f}x  (goal >= 0.8x)")


def bench_rss(bench: Bench, ours: str, size_bytes: int) -> None:
    pid = bench.server.process.pid
    copy_to_layout(ours, bench.data / "warm-up")  # the server's buffers and pools, once
    shutil.rmtree(bench.data / "warm-up", ignore_errors=True)
    before = vm_rss(pid)
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, vm_rss(pid))
            done.wait(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    layouts = [bench.data / f"concurrent-{i}" for i in range(CONCURRENT_PULLS)]
    seconds: list[float] = []

    def pull_into(layout: Path) -> None:
        seconds.append(copy_to_layout(ours, layout))

    start = time.perf_counter()
    try:
        pullers = [threading.Thread(target=pull_into, args=(p,)) for p in layouts]
        for puller in pullers:
            puller.start()
        for puller in pullers:
            puller.join()
    finally:
        done.set()
        sampler.join()
    wall = time.perf_counter() - start
    for layout in layouts:
        shutil.rmtree(layout, ignore_errors=True)
    if len(seconds) != CONCURRENT_PULLS:
        raise SystemExit("a concurrent pull failed (see skopeo's error above)")
    total = CONCURRENT_PULLS * size_bytes / wall / MB
    print(f"  {CONCURRENT_PULLS} pulls in {wall:.2f} s: {total:.0f} MB/s served in all")
    print(f"  server RSS {before / MIB:.0f} MiB before, peak {peak / MIB:.0f} MiB:"
          f" growth {(peak - before) / MIB:.1f} MiB  (goal <= 64 MiB)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--data", type=Path, default=Path("build/bench/endpoint"))
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    layout = big_image(args.data)
    size_bytes = blob_bytes(layout)
    bench = Bench(args.data)
    try:
        theirs, ours = bench.publish(layout)
        print(
            f"\nskopeo copy docker:// -> oci:, 3 layers x 200 MiB ({size_bytes / MB:.0f} MB"
            f" of blobs), median of {args.runs}"
        )
        bench_throughput(bench, theirs, ours, args.runs, size_bytes)
        print(f"\nServer RSS during {CONCURRENT_PULLS} concurrent pulls of that image")
        bench_rss(bench, ours, size_bytes)
    finally:
        bench.close()


if __name__ == "__main__":
    main()
