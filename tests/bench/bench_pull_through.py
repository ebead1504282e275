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

    python -m tests.bench.bench_pull_through [--runs N] [--data DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
from pathlib import Path

from tests.api.conftest import start_server
from tests.bench.bench_endpoint import MB, copy_to_layout
from tests.bench.images import big_image, blob_bytes, publish
from tests.registry.distribution import Distribution, start_distribution

#: the image's name at the upstream
NAME = "bench/big:1"


def cold_copy(data: Path, upstream: Distribution, layout: Path) -> float:
    """Seconds of one copy through a new server with an empty store."""
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
        return copy_to_layout(f"{server.registry_address}/{path}", layout)
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
        cold: list[float] = []
        direct: list[float] = []
        for _ in range(args.runs):
            cold.append(cold_copy(args.data, upstream, copy))
            direct.append(copy_to_layout(f"{upstream.host}/{NAME}", copy))
    finally:
        upstream.stop()
        shutil.rmtree(args.data / "registry", ignore_errors=True)
        shutil.rmtree(copy, ignore_errors=True)
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


if __name__ == "__main__":
    main()
