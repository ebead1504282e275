"""Native hasher vs the stdlib on the same data, in one run (``make bench``).

Data (made once under build/bench/): a tar of a system directory (~200 MB, a
realistic layer) and 64 MiB of random bytes, each also gzip-compressed at
level 6 (what registries usually serve). Every figure is the best of a few
rounds, from memory, in 1 MiB chunks as the store streams. Prints MB/s and the
ratio to the peer; nothing here asserts on timings.

    python tests/bench/bench_native.py [--rounds N] [--data DIR]

IMAGESTORE_TEST_NATIVE selects a variant build (e.g. the zlib backend).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tarfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from tests import native_variant

native_variant.load_from_environment()

from imagestore import hashing  # noqa: E402  (after the variant is loaded)

CHUNK = 1 << 20
SYSTEM_TAR_TARGET = 200 * 10**6
LARGEST_FILE = 8 << 20  # keep the mix file-like: no single huge blob
RANDOM_SIZE = 64 << 20


def slices(data: bytes) -> Iterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(view), CHUNK):
        yield view[start : start + CHUNK]


def make_system_tar(path: Path) -> None:
    """Tar regular files from /usr until ~200 MB, in a fixed order."""
    total = 0
    with tarfile.open(path, "w") as tar:
        for root in ("/usr/lib", "/usr/share", "/usr/bin"):
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for name in sorted(filenames):
                    file = Path(dirpath, name)
                    if file.is_symlink() or not file.is_file():
                        continue
                    if file.stat().st_size > LARGEST_FILE:
                        continue
                    try:
                        tar.add(file, recursive=False)
                    except OSError:
                        continue
                    total += file.stat().st_size
                    if total >= SYSTEM_TAR_TARGET:
                        return


def prepare(data_dir: Path) -> dict[str, tuple[bytes, bytes]]:
    """{name: (uncompressed, gzip level 6)}, cached on disk."""
    data_dir.mkdir(parents=True, exist_ok=True)
    system = data_dir / "system.tar"
    if not system.exists():
        make_system_tar(system.with_suffix(".partial"))
        system.with_suffix(".partial").rename(system)
    random = data_dir / "random.bin"
    if not random.exists():
        random.write_bytes(os.urandom(RANDOM_SIZE))
    datasets = {}
    for name, path in (("system tar", system), ("random", random)):
        gz = path.with_name(path.name + ".gz")
        if not gz.exists():
            compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
            body = b"".join(compressor.compress(s) for s in slices(path.read_bytes()))
            gz.write_bytes(body + compressor.flush())
        datasets[name] = (path.read_bytes(), gz.read_bytes())
    return datasets


def best_seconds(work: Callable[[bytes], object], data: bytes, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        work(data)
        best = min(best, time.perf_counter() - start)
    return best


# ---- the two sides of each comparison -------------------------------------


def native_decode(compressed: bytes) -> None:
    with hashing.Decoder() as decoder:
        for piece in slices(compressed):
            decoder.update(piece)
        decoder.finish()


def stdlib_decode(compressed: bytes) -> None:
    inflater = zlib.decompressobj(31)
    digest_in, digest_out = hashlib.sha256(), hashlib.sha256()
    for piece in slices(compressed):
        digest_in.update(piece)
        digest_out.update(inflater.decompress(piece))
    digest_out.update(inflater.flush())
    digest_in.hexdigest()
    digest_out.hexdigest()


def native_encode(data: bytes) -> int:
    size = 0
    with hashing.Encoder() as encoder:
        for piece in slices(data):
            size += len(encoder.update(piece))
        tail, _ = encoder.finish()
    return size + len(tail)


def stdlib_encode(data: bytes) -> int:
    deflater = zlib.compressobj(1, zlib.DEFLATED, 31)
    digest_in, digest_out = hashlib.sha256(), hashlib.sha256()
    size = 0
    for piece in slices(data):
        digest_in.update(piece)
        out = deflater.compress(piece)
        digest_out.update(out)
        size += len(out)
    out = deflater.flush()
    digest_out.update(out)
    digest_in.hexdigest()
    digest_out.hexdigest()
    return size + len(out)


def native_sha256(data: bytes) -> None:
    with hashing.Sha256() as hasher:
        for piece in slices(data):
            hasher.update(piece)
        hasher.finish()


def stdlib_sha256(data: bytes) -> None:
    digest = hashlib.sha256()
    for piece in slices(data):
        digest.update(piece)
    digest.hexdigest()


def two_threads(work: Callable[[bytes], object], data: bytes) -> None:
    threads = [threading.Thread(target=work, args=(data,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def mb_per_s(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path("build/bench"))
    args = parser.parse_args()
    datasets = prepare(args.data)
    rounds = args.rounds
    backend = hashing.backend()

    print(f"\nnative backend: {backend}  (best of {rounds}; MB/s of uncompressed bytes)")
    header = f"{'measure':<44}{'data':<12}{'native':>9}{'peer':>9}{'ratio':>8}  target"
    print(header)
    print("-" * len(header))

    def row(measure: str, name: str, native: float, peer: float, target: str) -> None:
        ratio = native / peer
        print(f"{measure:<44}{name:<12}{native:>9.0f}{peer:>9.0f}{ratio:>7.2f}x  {target}")

    for name, (data, compressed) in datasets.items():
        size = len(data)
        row(
            "decode: inflate+2xSHA-256 vs zlib+hashlib",
            name,
            mb_per_s(size, best_seconds(native_decode, compressed, rounds)),
            mb_per_s(size, best_seconds(stdlib_decode, compressed, rounds)),
            ">= 1.6x (isa-l)",
        )
        row(
            "encode: SHA+gzip-1+SHA vs zlib-1+hashlib",
            name,
            mb_per_s(size, best_seconds(native_encode, data, rounds)),
            mb_per_s(size, best_seconds(stdlib_encode, data, rounds)),
            ">= 3.5x (isa-l)",
        )
        native_size, stdlib_size = native_encode(data), stdlib_encode(data)
        print(
            f"{'  encoded size (native / zlib-1)':<56}"
            f"{native_size / 1e6:.1f} MB / {stdlib_size / 1e6:.1f} MB "
            f"(ratio {size / native_size:.2f} / {size / stdlib_size:.2f})"
        )
        row(
            "sha256: native vs hashlib",
            name,
            mb_per_s(size, best_seconds(native_sha256, data, rounds)),
            mb_per_s(size, best_seconds(stdlib_sha256, data, rounds)),
            ">= 0.95x",
        )
        one = best_seconds(native_decode, compressed, rounds)
        two = best_seconds(lambda blob: two_threads(native_decode, blob), compressed, rounds)
        row(
            "decode: two threads vs one (native)",
            name,
            mb_per_s(2 * size, two),
            mb_per_s(size, one),
            ">= 1.8x",
        )


if __name__ == "__main__":
    main()
