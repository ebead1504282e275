"""The store beside its peers, in one run (``make bench``).

- Load of a docker-archive with 3 x ~200 MB uncompressed layers (tars of /usr)
  vs ``skopeo copy docker-archive:… oci:…`` of the same file: both gzip the
  layers; MB/s of archive bytes and both compressed sizes are printed.
- ListImages over a 10,000-image catalog, Inspect by ID and Tag (p50), beside a
  floor from the same catalog: an empty indexed query.
- The same figures, and Load, on the PostgreSQL catalog beside SQLite: the same
  10,000-image catalog copied row for row into a database of a local, durable
  throwaway cluster (fsync and synchronous commit on, as SQLite's
  synchronous=FULL; over its unix socket), with the ratio PostgreSQL / SQLite.

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
from imagestore.store.blobs import STORE_ID_FILE
from imagestore.store.parts import CatalogFactory, postgres_catalog, sqlite_catalog
from imagestore.store.store import Store
from tests import pg
from tests.store.builders import build_image, layer_tar

LAYER_TARGET = 200 * 10**6
LARGEST_FILE = 8 << 20
CATALOG_IMAGES = 10_000
MOVING_TAG = "bench/moving:tag"
#: the catalog's tables in an order their foreign keys accept, and their columns
TABLES = {
    "blobs": "digest, size, media_type, diff_id, uncompressed_size, stored_at",
    "images": "id, created, stored_at, size, content_size, os, architecture, variant, labels,"
    " last_tag_time",
    "targets": "digest, media_type, kind, image_id, stored_at",
    "manifest_blobs": "manifest_digest, position, blob_digest, media_type, size",
    "index_children": "index_digest, position, child_digest, media_type, size, platform",
    "names": "name, repository, tag, digest, target, created_at, updated_at",
    "blob_sources": "digest, registry, repository, recorded_at",
    "damaged_blobs": "digest, problem, found_at",
    "events": "cursor, time, kind, image_id, name, target, labels, remote, reclaimed",
}


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


def fresh_postgres_catalog() -> CatalogFactory:
    """A new, empty database on the benchmarks' durable cluster."""
    cluster = pg.cluster(durable=True)
    database = f"bench_{os.getpid()}_{time.monotonic_ns()}"
    return postgres_catalog(cluster.create_database(database))


def bench_load(archive: Path, rounds: int) -> None:
    skopeo = shutil.which("skopeo")
    size = archive.stat().st_size
    ours, theirs, on_postgres = float("inf"), float("inf"), float("inf")
    ours_size = theirs_size = 0
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(dir=archive.parent) as scratch:
            for name, catalog in (("sqlite", sqlite_catalog), ("postgresql", None)):
                root = Path(scratch) / name
                with Store.open(root, catalog=catalog or fresh_postgres_catalog()) as store:
                    start = time.perf_counter()
                    with archive.open("rb") as source:
                        load(store, iter(lambda: source.read(1 << 20), b""))
                    took = time.perf_counter() - start
                    if name == "sqlite":
                        ours = min(ours, took)
                    else:
                        on_postgres = min(on_postgres, took)
                    ours_size = sum(
                        store._parts.blobs.size(d) or 0 for d in store._parts.blobs.digests()
                    )
                shutil.rmtree(root)
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
    rate = size / on_postgres / 1e6
    print(
        f"  ... on PostgreSQL      {rate:8.0f} MB/s  ratio {ours / on_postgres:.2f}x"
        " of SQLite's rate"
    )
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


def copy_to_postgres(root: Path, directory: Path) -> tuple[Path, CatalogFactory]:
    """The SQLite catalog of ``root`` copied row for row into a new PostgreSQL
    database, beside a copy of its blob files (Inspect reads the configs)."""
    import sqlite3

    import psycopg

    from imagestore.store.postgres import PostgresCatalog

    copy = directory / "catalog-10k-postgresql"
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir(mode=0o700)
    # the blob files alone: the new catalog is another store, which claims the copy
    shutil.copytree(root / "blobs", copy / "blobs", ignore=shutil.ignore_patterns(STORE_ID_FILE))
    factory = fresh_postgres_catalog()
    catalog = factory(copy)  # creates the schema
    assert isinstance(catalog, PostgresCatalog)
    url = catalog.url
    catalog.close()
    source = sqlite3.connect(root / "catalog.db")
    with psycopg.connect(url) as target, target.cursor() as cursor:
        for table, columns in TABLES.items():
            with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as rows:
                for row in source.execute(f"SELECT {columns} FROM {table}"):
                    rows.write_row(row)
        (last,) = source.execute("SELECT last_cursor FROM events_state").fetchone()
        cursor.execute("UPDATE events_state SET last_cursor = %s", (last,))
    source.close()
    with psycopg.connect(url, autocommit=True) as target:
        target.execute("VACUUM ANALYZE")  # what autovacuum does to a catalog in use
    return copy, postgres_catalog(url)


def bench_catalog(root: Path, directory: Path) -> None:
    sqlite = measure_catalog(root, sqlite_catalog)
    postgres = measure_catalog(*copy_to_postgres(root, directory))
    count = int(sqlite["count"])
    assert postgres["count"] == count
    print(f"\nCatalog of {count} images (p50)")
    print(f"  ListImages, all {count} rows     {sqlite['listed']:8.2f} ms   (target <= 50 ms)")
    print(f"  Inspect by ID                  {sqlite['inspected']:8.3f} ms   (target <= 2 ms)")
    print(f"  Tag (moves a name; fsync)      {sqlite['tagged']:8.3f} ms")
    print(f"  floor: empty indexed query     {sqlite['empty']:8.3f} ms")
    print("\nThe same catalog on PostgreSQL (p50; ratio PostgreSQL / SQLite)")
    for key, label in (
        ("listed", f"ListImages, all {count} rows"),
        ("inspected", "Inspect by ID"),
        ("tagged", "Tag (moves a name; fsync)"),
        ("empty", "floor: empty indexed query"),
    ):
        ratio = postgres[key] / sqlite[key]
        print(f"  {label:<30} {postgres[key]:8.3f} ms   {ratio:6.2f}x")


def measure_catalog(root: Path, catalog: CatalogFactory) -> dict[str, float]:
    with Store.open(root, catalog=catalog) as store:
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
    return {
        "count": count,
        "listed": listed,
        "inspected": inspected,
        "tagged": tagged,
        "empty": empty,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", type=Path, default=Path("build/bench"))
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    bench_catalog(make_catalog(args.data), args.data)
    bench_load(make_docker_archive(args.data), args.rounds)


if __name__ == "__main__":
    main()
