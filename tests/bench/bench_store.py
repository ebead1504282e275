"""The store beside its peers, in one run (``make bench``).

- Load of a docker-archive with 3 x ~200 MB uncompressed layers (tars of /usr)
  vs ``skopeo copy docker-archive:… oci:…`` of the same file: both gzip the
  layers; MB/s of archive bytes and both compressed sizes are printed.
- ListImages over a 10,000-image catalog, Inspect by ID and Tag (p50), beside a
  floor from the same catalog: an empty indexed query.

    python -m tests.bench.bench_store [--rounds N] [--data DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from imagestore.archive.load import load
from imagestore.store.store import Store
from tests.store.builders import build_image, layer_tar

LAYER_TARGET = 200 * 10**6
LARGEST_FILE = 8 << 20
CATALOG_IMAGES = 10_000
MOVING_TAG = "bench/moving:tag"


def make_layers(directory: Path) -> list[Path]:
    """Three distinct ~200 MB tars: files of /usr dealt round-robin."""
    paths = [directory / f"layer{i}.tar" for i in range(3)]
    if all(p.exists() for p in paths):
        return paths
    with contextlib.ExitStack() as stack:
        tars = [stack.enter_context(tarfile.open(p, "w")) for p in paths]
        _deal_files(tars)
    return paths


def _deal_files(tars: list[tarfile.TarFile]) -> None:
    sizes = [0] * len(tars)
    turn = 0
    for dirpath, dirnames, filenames in os.walk("/usr"):
        dirnames.sort()
        for name in sorted(filenames):
            file = Path(dirpath, name)
            if file.is_symlink() or not file.is_file():
                continue
            size = file.stat().st_size
            if size > LARGEST_FILE or sizes[turn] >= LAYER_TARGET:
                continue
            try:
                tars[turn].add(file, recursive=False)
            except OSError:
                continue
            sizes[turn] += size
            turn = (turn + 1) % len(tars)
            if min(sizes) >= LAYER_TARGET:
                return


def make_docker_archive(directory: Path) -> Path:
    archive = directory / "docker-archive-3x200.tar"
    if archive.exists():
        return archive
    import hashlib

    layers = make_layers(directory)
    diff_ids = []
    for path in layers:
        digest = hashlib.sha256()
        with path.open("rb") as source:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
        diff_ids.append("sha256:" + digest.hexdigest())
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    ).encode()
    manifest = [
        {
            "Config": "config.json",
            "RepoTags": ["bench/big:1"],
            "Layers": [f"{i}/layer.tar" for i in range(3)],
        }
    ]
    partial = archive.with_suffix(".partial")
    with tarfile.open(partial, "w") as tar:
        for i, path in enumerate(layers):
            tar.add(path, arcname=f"{i}/layer.tar")
        for name, body in (
            ("config.json", config),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    partial.rename(archive)
    return archive


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_load(archive: Path, rounds: int) -> None:
    skopeo = shutil.which("skopeo")
    size = archive.stat().st_size
    ours, theirs = float("inf"), float("inf")
    ours_size = theirs_size = 0
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(dir=archive.parent) as scratch:
            root = Path(scratch) / "store"
            with Store.open(root) as store:
                start = time.perf_counter()
                with archive.open("rb") as source:
                    load(store, iter(lambda: source.read(1 << 20), b""))
                ours = min(ours, time.perf_counter() - start)
                ours_size = sum(
                    store._parts.blobs.size(d) or 0 for d in store._parts.blobs.digests()
                )
            if skopeo is not None:
                target = Path(scratch) / "oci"
                start = time.perf_counter()
                subprocess.run(
                    [skopeo, "copy", "-q", f"docker-archive:{archive}", f"oci:{target}:x"],
                    check=True,
                )
                theirs = min(theirs, time.perf_counter() - start)
                theirs_size = dir_size(target / "blobs")
    print(f"\nLoad of a docker-archive, 3 layers, {size / 1e6:.0f} MB (best of {rounds})")
    rate = size / ours / 1e6
    print(f"  imagestore load        {rate:8.0f} MB/s  stored {ours_size / 1e6:.1f} MB")
    if skopeo is None:
        print("  skopeo                     not installed (make test installs it)")
        return
    rate = size / theirs / 1e6
    print(f"  skopeo copy to oci:    {rate:8.0f} MB/s  stored {theirs_size / 1e6:.1f} MB")
    print(f"  ratio                  {theirs / ours:8.2f}x  (target >= 2x)")


def make_catalog(directory: Path) -> Path:
    root = directory / "catalog-10k"
    done = root / "complete"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    with Store.open(root) as store:
        base = layer_tar({"base": b"x" * 4096})
        for i in range(CATALOG_IMAGES):
            created = f"2024-01-01T00:00:{i % 60:02d}.{i:06d}Z"
            build_image(store, [base], names=[f"bench/app{i % 500}:{i}"], created=created,
                        labels={"n": str(i)})  # fmt: skip
    done.touch()
    return root


def p50_ms(work: Callable[[], object], rounds: int) -> float:
    work()  # warm-up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def bench_catalog(root: Path) -> None:
    with Store.open(root) as store:
        ids = [image.id for image in store.list_images(page_size=200).images]

        def floor() -> None:
            with store._parts.catalog.reading() as db:
                db.image("none")

        listed = p50_ms(lambda: store.list_images(page_size=CATALOG_IMAGES), 21)
        count = len(store.list_images(page_size=CATALOG_IMAGES).images)
        picks = iter(ids * 10)
        inspected = p50_ms(lambda: store.inspect(next(picks)), 201)
        moves = iter(ids * 10)  # one name moved from image to image: a durable write each
        tagged = p50_ms(lambda: store.tag(next(moves), MOVING_TAG), 201)
        store.remove([MOVING_TAG])  # leave the cached catalog as it was built
        empty = p50_ms(floor, 201)
    print(f"\nCatalog of {count} images (p50)")
    print(f"  ListImages, all {count} rows     {listed:8.2f} ms   (target <= 50 ms)")
    print(f"  Inspect by ID                  {inspected:8.3f} ms   (target <= 2 ms)")
    print(f"  Tag (moves a name; fsync)      {tagged:8.3f} ms")
    print(f"  floor: empty indexed query     {empty:8.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", type=Path, default=Path("build/bench"))
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    bench_catalog(make_catalog(args.data))
    bench_load(make_docker_archive(args.data), args.rounds)


if __name__ == "__main__":
    main()
