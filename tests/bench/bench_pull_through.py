"""Pull-through, cold, beside a straight copy from its upstream (``make bench``).

``skopeo copy docker://… oci:…`` of the image with 3 layers of 200 MiB
uncompressed (~100 MiB gzip each, half random; tests/bench/images.py) from
imagestore's endpoint with pull-through on and an empty store (cold: the
manifest is answered once the pull from the upstream `docker-registry` has
stored the manifest and config, and each layer streams to skopeo as it lands,
its last bytes held until its digest and diff_id are verified and it is
stored; docs/registry.md §9), against the same copy straight from the
upstream, in one run, interleaved. Each cold run has a fresh store (a new
server on an empty root). Medians, and the ratio cold / direct (goal <= 2x,
issue 18).

Beside it, where a cold copy's time goes on this machine: the CPU-seconds the
server, skopeo and the upstream spent over each cold copy (user + sys), and
the least wall time any cold copy could take here: the server at its floor
with I/O (the native Decoder over the layers on one thread, their bytes
received over loopback and written to synced files, as bench_transfer
measures it; sending them on to skopeo is not counted) plus skopeo's and the
upstream's CPU, spread over every core.

    python -m tests.bench.bench_pull_through [--runs N] [--data DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.api.conftest import start_server
from tests.bench.bench_endpoint import MB, copy_to_layout
from tests.bench.bench_transfer import cpu_seconds, floor_cpu_seconds, io_floor_cpu_seconds
from tests.bench.images import big_image, blob_bytes, publish
from tests.registry.distribution import Distribution, start_distribution

#: the image's name at the upstream
NAME = "bench/big:1"


@dataclass
class Cold:
    """One cold copy: its wall seconds and the CPU-seconds of each process in it."""

    seconds: float
    server_cpu: float
    skopeo_cpu: float
    upstream_cpu: float


def children_cpu() -> float:
    """CPU-seconds of this process's waited-for children (skopeo's, once it ended)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def cold_copy(data: Path, upstream: Distribution, layout: Path) -> Cold:
    """One copy through a new server with an empty store."""
    root = data / "store"
    shutil.rmtree(root, ignore_errors=True)
    server = start_server(
        root,
        "--listen", "127.0.0.1:0",
        "--registry-listen", "127.0.0.1:0",
        "--registry-pull-through",
        "--registry-upstream", upstream.host,
    )  # fmt: skip
    try:
        if not server.registry_address:
            raise SystemExit("the server announced no registry endpoint (--registry-listen)")
        path = f"{upstream.host.replace(':', '_')}/{NAME}"
        serving, sending = psutil.Process(server.process.pid), psutil.Process(upstream.process.pid)
        server_before, upstream_before = cpu_seconds(serving), cpu_seconds(sending)
        skopeo_before = children_cpu()
        seconds = copy_to_layout(f"{server.registry_address}/{path}", layout)
        return Cold(
            seconds,
            cpu_seconds(serving) - server_before,
            children_cpu() - skopeo_before,
            cpu_seconds(sending) - upstream_before,
        )
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path("build/bench/pull-through"))
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    layout = big_image(args.data)
    size_bytes = blob_bytes(layout)
    shutil.rmtree(args.data / "registry", ignore_errors=True)
    upstream = start_distribution(args.data / "registry")
    copy = args.data / "copy"
    try:
        publish(layout, f"{upstream.host}/{NAME}")
        copy_to_layout(f"{upstream.host}/{NAME}", copy)  # warm-up: the upstream's page cache
        colds: list[Cold] = []
        direct: list[float] = []
        for _ in range(args.runs):
            colds.append(cold_copy(args.data, upstream, copy))
            direct.append(copy_to_layout(f"{upstream.host}/{NAME}", copy))
        floor = floor_cpu_seconds(layout)
        io_floor = io_floor_cpu_seconds(layout, args.data / "io-floor")
    finally:
        upstream.stop()
        shutil.rmtree(args.data / "registry", ignore_errors=True)
        shutil.rmtree(copy, ignore_errors=True)
    cold = [c.seconds for c in colds]
    cold_s, direct_s = statistics.median(cold), statistics.median(direct)
    print(
        f"\nskopeo copy docker:// -> oci:, 3 layers x 200 MiB ({size_bytes / MB:.0f} MB"
        f" of blobs), median of {args.runs}"
    )
    for label, seconds, runs in (
        ("through imagestore, cold (pull-through)", cold_s, cold),
        ("straight from docker-registry", direct_s, direct),
    ):
        each = ", ".join(f"{s:.2f}" for s in runs)
        rate = size_bytes / seconds / MB
        print(f"  {label:<40} {seconds:7.3f} s  {rate:6.0f} MB/s   (runs: {each})")
    print(f"  {'ratio cold / direct':<40} {cold_s / direct_s:7.2f}x    (goal <= 2x)")
    median = statistics.median
    server, skopeo = median(c.server_cpu for c in colds), median(c.skopeo_cpu for c in colds)
    sending, cores = median(c.upstream_cpu for c in colds), os.cpu_count() or 1
    best = (io_floor + skopeo + sending) / cores
    print(
        f"  CPU over a cold copy: server {server:.2f} s (its floor {floor:.2f}, with I/O"
        f" {io_floor:.2f}), skopeo {skopeo:.2f} s, upstream {sending:.2f} s"
    )
    print(
        f"  {'least a cold copy can take here':<40} {best:7.3f} s"
        f"  ((floor + I/O + skopeo + upstream) / {cores} cores: {best / direct_s:.2f}x direct)"
    )


if __name__ == "__main__":
    main()
