"""Native hasher vs the stdlib on the same data, in one run (``make bench``).

Data (made once under build/bench/): a tar of a system directory (~200 MB, a
realistic layer), 64 MiB of random bytes, and the big image's layer (200 MiB
half-compressible, tests/bench/images.py), each also gzip-compressed at level 6
(what registries usually serve). Every figure is the best of a few rounds, from
memory, in 1 MiB chunks as the store streams. Prints MB/s and the ratio to the
peer; nothing here asserts on timings.

"One layer on two cores" times each pass of a digest-only decode alone, then
the decoder on one thread, on two (its hasher thread), and hashlib + zlib, with
wall time and CPU time (user + sys of the process, and of the calling thread:
with two threads the caller's share is the critical path when a core is free).
On a machine others share, ``--fifo`` runs that part at SCHED_FIFO priority
(root; its threads inherit it), so that the wall times say what a free core gives.

    python tests/bench/bench_native.py [--rounds N] [--data DIR] [--fifo]

IMAGESTORE_TEST_NATIVE selects a variant build (e.g. the zlib backend).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import tarfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests import native_variant

native_variant.load_from_environment()

from imagestore import hashing  # noqa: E402  (after the variant is loaded)
from tests.archives import tar_of  # noqa: E402
from tests.bench.images import half_compressible  # noqa: E402

CHUNK = 1 << 20
SYSTEM_TAR_TARGET = 200 * 10**6
LARGEST_FILE = 8 << 20  # keep the mix file-like: no single huge blob
RANDOM_SIZE = 64 << 20
BIG_LAYER_SIZE = 200 << 20
TINY_LAYERS, TINY_SIZE = 200, 1024


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
    big = data_dir / "big-layer.tar"
    if not big.exists():
        big.write_bytes(tar_of({"layer0": half_compressible(BIG_LAYER_SIZE, 0)}))
    datasets = {}
    for name, path in (("system tar", system), ("random", random), ("big layer", big)):
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


def native_decode(compressed: bytes, threads: hashing.Threads = "auto") -> None:
    with hashing.Decoder(threads=threads) as decoder:
        for piece in slices(compressed):
            decoder.update(piece)
        decoder.finish()


def native_decode_one_thread(compressed: bytes) -> None:
    native_decode(compressed, "one")


def native_decode_two_threads(compressed: bytes) -> None:
    native_decode(compressed, "two")


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


# ---- one layer on two cores -------------------------------------------------


@dataclass(frozen=True)
class Cost:
    wall: float  #: seconds
    cpu: float  #: user + sys of the process, seconds
    caller_cpu: float  #: user + sys of the calling thread, seconds


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def thread_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


def best_cost(work: Callable[[bytes], object], data: bytes, rounds: int) -> Cost:
    """The least of each figure over the rounds (each is noisy on its own)."""
    walls, cpus, callers = [], [], []
    for _ in range(rounds):
        wall, cpu, caller = time.perf_counter(), process_cpu(), thread_cpu()
        work(data)
        walls.append(time.perf_counter() - wall)
        cpus.append(process_cpu() - cpu)
        callers.append(thread_cpu() - caller)
    return Cost(min(walls), min(cpus), min(callers))


def _gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def one_layer_on_two_cores(name: str, data: bytes, compressed: bytes, rounds: int) -> None:
    """The three passes alone, then the decoder on one thread, two, and the peer."""
    gib = len(compressed) / (1 << 30)
    sha_in = best_cost(native_sha256, compressed, rounds)
    sha_out = best_cost(native_sha256, data, rounds)
    one = best_cost(native_decode_one_thread, compressed, rounds)
    two = best_cost(native_decode_two_threads, compressed, rounds)
    peer = best_cost(stdlib_decode, compressed, rounds)
    print(
        f"\none layer on two cores: {name}, {len(data) / 2**20:.0f} MiB"
        f" ({len(compressed) / 2**20:.0f} MiB gzip)"
    )
    print(f"  passes alone (CPU ms): sha256(gzip) {sha_in.cpu * 1e3:.0f},"
          f" sha256(tar) {sha_out.cpu * 1e3:.0f},"
          f" inflate {(one.cpu - sha_in.cpu - sha_out.cpu) * 1e3:.0f} (by difference)")  # fmt: skip
    header = (
        f"  {'decode':<30}{'wall ms':>9}{'MB/s':>7}{'CPU ms':>8}{'caller CPU ms':>15}"
        f"{'CPU s/GiB gz':>14}"
    )
    print(header)
    for label, cost in (
        ("native, one thread", one),
        ("native, two threads", two),
        ("hashlib + zlib (peer)", peer),
    ):
        print(
            f"  {label:<30}{cost.wall * 1e3:>9.0f}{mb_per_s(len(data), cost.wall):>7.0f}"
            f"{cost.cpu * 1e3:>8.0f}{cost.caller_cpu * 1e3:>15.0f}{cost.cpu / gib:>14.2f}"
        )
    print(
        f"  two threads vs one: wall {one.wall / two.wall:.2f}x,"
        f" caller's CPU {one.caller_cpu / two.caller_cpu:.2f}x,"
        f" total CPU {two.cpu / one.cpu:.2f}x of one thread's"
    )


@contextmanager
def fifo_priority(enabled: bool) -> Iterator[None]:
    """SCHED_FIFO for this thread (and the threads it starts) inside the block."""
    if not enabled:
        yield
        return
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    try:
        yield
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def tiny_layers_cost(rounds: int) -> None:
    """Many 1 KiB layers, each its own decoder: auto must start no thread for them."""
    layers = [_gzip(os.urandom(TINY_SIZE)) for _ in range(TINY_LAYERS)]

    def decode_all(mode: hashing.Threads) -> Callable[[bytes], None]:
        def work(_: bytes) -> None:
            for layer in layers:
                native_decode(layer, mode)

        return work

    one = best_cost(decode_all("one"), b"", rounds)
    auto = best_cost(decode_all("auto"), b"", rounds)
    print(f"\n{TINY_LAYERS} layers of {TINY_SIZE} B, a decoder each (best of {rounds}):")
    for label, cost in (("one thread", one), ("auto (as the store runs)", auto)):
        print(f"  {label:<30} wall {cost.wall * 1e3:7.2f} ms  CPU {cost.cpu * 1e3:7.2f} ms")


def mb_per_s(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path("build/bench"))
    parser.add_argument(
        "--fifo", action="store_true", help="time one layer on two cores at SCHED_FIFO (root)"
    )
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
        one = best_seconds(native_decode_one_thread, compressed, rounds)
        two = best_seconds(
            lambda blob: two_threads(native_decode_one_thread, blob), compressed, rounds
        )
        row(
            "decode: 2 layers at once vs 1 (1-thread)",
            name,
            mb_per_s(2 * size, two),
            mb_per_s(size, one),
            ">= 1.8x",
        )

    if args.fifo:
        print("\n(below: at SCHED_FIFO priority, so that other load does not set the wall times)")
    with fifo_priority(args.fifo):
        for name in ("big layer", "system tar"):
            one_layer_on_two_cores(name, *datasets[name], rounds)
        tiny_layers_cost(rounds)


if __name__ == "__main__":
    main()
