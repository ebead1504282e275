"""Issue 19's acceptance table: Pull and Push beside skopeo, in one run (``make bench``).

Three images, built once under the data directory (tests/bench/images.py) and
published by skopeo from an OCI layout to a `docker-registry` on loopback that
this benchmark starts: the big image (3 layers of 200 MiB uncompressed, ~100
MiB gzip each), a real-world image made of this machine's files (a Debian-like
base layer and a Python stdlib layer, ~111 MB gzip) and 200 layers of 1 KiB.

For each image, interleaved in every run, wall seconds of:

- imagestore Pull, through the gRPC API of the real server process from this
  process (no CLI start-up included), into an empty store (every image pruned
  before each run), and the server's CPU-seconds (user + sys, psutil) over it,
  and the source registry's (it shares the cores);
- ``skopeo copy docker://… oci:DIR`` (a fresh DIR each run) and
  ``skopeo copy docker://… docker-archive:FILE`` (a fresh FILE);
- imagestore Push and ``skopeo copy oci:… docker://…`` (from the image's source
  layout, the same blobs), each into a registry with an empty storage directory
  started for that push alone: neither pusher can skip or mount a blob (skopeo's
  blob-info cache would otherwise mount from another repository of the same
  registry), and both pay the registry's full write of every byte.

Medians, the ratios to skopeo, and the goals of issue 19 beside them; the
server's CPU-seconds per GiB of compressed bytes pulled beside its floor, the
CPU-seconds of this thread running the native Decoder (inflate, SHA-256 of the
compressed and of the uncompressed bytes) over the same layers from memory,
with one SHA-256 of the config and manifest (best of 3: a floor is the least it
takes). Beside it the floor with the I/O no pull avoids: the same work on bytes
received over loopback TCP and written to files synced at each layer's end,
so the server's CPU over it is its own code's cost, and the least a Pull can
take here is that floor plus the registry's CPU, spread over every core.
The per-GiB goal is the big and the real image's: 200 tiny layers
(68 kB) measure the per-layer overhead, so the server's CPU per layer is
printed too. Then the registry requests of an up-to-date pull (the same tag
pulled a second time) and how many of them are blob requests, counted from the
registry's own log (level info: one "response completed" line per request),
bracketed by a marker request sent after the pull ends. Once, for reference,
the big image pulled by the ``imagestore`` CLI (its start-up included).

Beside the CPU: the cores the server kept busy over the Pull (its CPU / wall)
and the busiest of its threads (that thread's CPU / wall, from /proc: 1.0 is a
thread that never waited). The server's CPU is read when the Pull's stream
ends: work it defers past its answer (none today) would not count.

    python -m tests.bench.bench_transfer [--runs N] [--data DIR]

``IMAGESTORE_BENCH_RUNS`` sets the default of ``--runs`` (5).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil

from imagestore import hashing
from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import PROJECT, Server, start_server, wait_until
from tests.bench.images import (
    SKOPEO,
    big_image,
    blob_bytes,
    layer_blobs,
    publish,
    real_image,
    tiny_image,
)
from tests.registry.distribution import Distribution, start_distribution

GIB = 1 << 30
MB = 10**6
CHUNK = 1 << 20
FLOOR_ROUNDS = 3
TIMEOUT = 600
#: issue 19's goals: imagestore Pull / skopeo -> oci: per image, Push / skopeo push
#: of the big image, requests of an up-to-date pull, server CPU per GiB / floor
PULL_GOALS = {"big": 1.3, "real": 1.3, "tiny": 1.0}
PUSH_GOALS = {"big": 0.65}
UP_TO_DATE_GOAL = 2
UP_TO_DATE_BLOB_GOAL = 0
#: per GiB, for the images whose bytes dominate; 200 tiny layers (68 kB) measure
#: the per-layer overhead, printed per layer beside it instead
CPU_GOALS = {"big": 1.15, "real": 1.15}


@dataclass
class Image:
    name: str  #: the repository's last part and the data directory's prefix
    label: str  #: as the table prints it
    layout: Path
    size: int = 0  #: bytes of every blob (what a full pull downloads)
    layers: int = 0

    def __post_init__(self) -> None:
        self.size = blob_bytes(self.layout)
        self.layers = len(layer_blobs(self.layout))


@dataclass
class Figures:
    """One image's measurements, a list per column, a value per run."""

    pull: list[float] = field(default_factory=list)
    pull_cpu: list[float] = field(default_factory=list)
    #: CPU-seconds of the source registry over each Pull (it shares the cores)
    registry_cpu: list[float] = field(default_factory=list)
    #: server CPU / wall of each Pull: the cores it kept busy on average
    cores: list[float] = field(default_factory=list)
    #: CPU / wall of the server's busiest thread over each Pull (1.0: a core's worth)
    busiest_thread: list[float] = field(default_factory=list)
    to_oci: list[float] = field(default_factory=list)
    to_archive: list[float] = field(default_factory=list)
    push: list[float] = field(default_factory=list)
    skopeo_push: list[float] = field(default_factory=list)
    floor_cpu: float = math.nan
    #: the floor with the receiving, writing and syncing a pull cannot avoid
    io_floor_cpu: float = math.nan
    up_to_date: list[tuple[str, str, int]] = field(default_factory=list)


def skopeo_seconds(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([*SKOPEO, "copy", "-q", *args], check=True)
    return time.perf_counter() - start


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """User + system CPU-seconds of each thread of the process, by thread ID."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return found


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU-seconds the process has used so far (all its threads)."""
    times = process.cpu_times()
    return float(times.user + times.system)


class Bench:
    """The source registry (logging each request) and one imagestore server."""

    def __init__(self, data: Path) -> None:
        self.data = data
        for scratch in ("registry-source", "registry-push", "store"):
            shutil.rmtree(data / scratch, ignore_errors=True)
        self.source: Distribution = start_distribution(data / "registry-source", log_level="info")
        self.server: Server = start_server(data / "store", "--listen", "127.0.0.1:0")
        self.process = psutil.Process(self.server.process.pid)
        self.source_process = psutil.Process(self.source.process.pid)
        self.channel = grpc.insecure_channel(self.server.address)
        grpc.channel_ready_future(self.channel).result(timeout=10)
        self.stub = pb_grpc.ImageStoreServiceStub(self.channel)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self.channel.close()
        self.server.stop()
        self.source.stop()
        for scratch in ("registry-source", "registry-push", "store", "out-oci"):
            shutil.rmtree(self.data / scratch, ignore_errors=True)
        (self.data / "out.tar").unlink(missing_ok=True)

    def reference(self, image: Image) -> str:
        return f"{self.source.host}/bench/{image.name}:1"

    def pull(self, reference: str) -> tuple[float, float, float, float]:
        """(wall seconds, server CPU-seconds, CPU-seconds of its busiest thread, of
        the source registry) of one Pull, its stream drained."""
        threads = thread_cpu_seconds(self.process.pid)
        cpu, sent = cpu_seconds(self.process), cpu_seconds(self.source_process)
        start = time.perf_counter()
        for _ in self.stub.Pull(pb.PullRequest(image=reference), timeout=TIMEOUT):
            pass
        wall = time.perf_counter() - start
        cpu, sent = cpu_seconds(self.process) - cpu, cpu_seconds(self.source_process) - sent
        after = thread_cpu_seconds(self.process.pid)
        busiest = max(used - threads.get(tid, 0.0) for tid, used in after.items())
        return wall, cpu, busiest, sent

    def forget(self) -> None:
        """Empty the store: every image and blob goes."""
        self.stub.Prune(pb.PruneRequest(all=True), timeout=TIMEOUT)

    def fresh_registry(self) -> Distribution:
        """A registry on an empty storage directory (the last one's is removed)."""
        folder = self.data / "registry-push"
        shutil.rmtree(folder, ignore_errors=True)
        return start_distribution(folder)

    def push_seconds(self, reference: str, image: Image) -> float:
        """Wall seconds of imagestore's Push of the stored image to an empty registry
        (the Tag that names the target and its removal are not timed)."""
        registry = self.fresh_registry()
        try:
            target = f"{registry.host}/pushed/{image.name}:1"
            self.stub.Tag(pb.TagRequest(source=reference, target=target))
            start = time.perf_counter()
            for _ in self.stub.Push(pb.PushRequest(image=target), timeout=TIMEOUT):
                pass
            seconds = time.perf_counter() - start
            self.stub.Remove(pb.RemoveRequest(images=[target]))
            return seconds
        finally:
            registry.stop()

    def skopeo_push_seconds(self, image: Image) -> float:
        registry = self.fresh_registry()
        try:
            target = f"docker://{registry.host}/pushed/{image.name}:1"
            return skopeo_seconds("--dest-tls-verify=false", f"oci:{image.layout}:1", target)
        finally:
            registry.stop()

    def up_to_date_requests(self, reference: str) -> list[tuple[str, str, int]]:
        """The requests the source registry saw for a pull of a tag the store holds
        at its current digest: every one logged from just before the pull up to a
        marker request sent after the pull ended (its line is written just after
        its answer, so wait for it)."""
        self.pull(reference)  # the store holds the tag at the registry's digest
        offset = self.source.log_size()
        self.pull(reference)
        marker = f"/v2/?bench-marker={uuid.uuid4().hex}"
        urllib.request.urlopen(f"http://{self.source.host}{marker}", timeout=10).close()
        wait_until(lambda: any(uri == marker for _, uri, _ in self.source.requests_since(offset)))
        return [r for r in self.source.requests_since(offset) if r[1] != marker]


def measure(bench: Bench, image: Image, runs: int) -> Figures:
    figures = Figures()
    reference = bench.reference(image)
    out, tarball = bench.data / "out-oci", bench.data / "out.tar"
    # warm-up: the registry's blobs in the page cache, the server's pools started
    bench.forget()
    bench.pull(reference)
    for _ in range(runs):
        bench.forget()
        seconds, cpu, busiest, sent = bench.pull(reference)
        figures.pull.append(seconds)
        figures.pull_cpu.append(cpu)
        figures.registry_cpu.append(sent)
        figures.cores.append(cpu / seconds)
        figures.busiest_thread.append(busiest / seconds)
        shutil.rmtree(out, ignore_errors=True)
        figures.to_oci.append(
            skopeo_seconds("--src-tls-verify=false", f"docker://{reference}", f"oci:{out}:1")
        )
        tarball.unlink(missing_ok=True)
        figures.to_archive.append(
            skopeo_seconds(
                "--src-tls-verify=false",
                f"docker://{reference}",
                f"docker-archive:{tarball}:bench/{image.name}:1",
            )
        )
        figures.push.append(bench.push_seconds(reference, image))
        figures.skopeo_push.append(bench.skopeo_push_seconds(image))
    shutil.rmtree(out, ignore_errors=True)
    tarball.unlink(missing_ok=True)
    figures.up_to_date = bench.up_to_date_requests(reference)
    figures.floor_cpu = floor_cpu_seconds(image.layout)
    figures.io_floor_cpu = io_floor_cpu_seconds(image.layout, bench.data / "io-floor")
    return figures


def floor_cpu_seconds(layout: Path) -> float:
    """CPU-seconds of this thread to verify the image's blobs as a pull must, from
    memory, in 1 MiB pieces: each layer through the native Decoder on one thread
    (inflate, SHA-256 of both sides: its hasher thread would hide half the work
    from this thread's clock), the config and the manifest through SHA-256; the
    least of FLOOR_ROUNDS rounds."""
    layers = [path.read_bytes() for path in layer_blobs(layout)]
    documents = _documents(layout)
    best = math.inf
    for _ in range(FLOOR_ROUNDS):
        start = time.thread_time()
        for layer in layers:
            view = memoryview(layer)
            with hashing.Decoder(threads="one") as decoder:
                for at in range(0, len(view), CHUNK):
                    decoder.update(view[at : at + CHUNK])
                decoder.finish()
        for document in documents:
            hashing.sha256_digest(document)
        best = min(best, time.thread_time() - start)
    return best


def io_floor_cpu_seconds(layout: Path, scratch: Path) -> float:
    """The floor plus the kernel's part that no pull avoids: CPU-seconds (user +
    sys) of this thread to receive the layers over a loopback TCP connection
    (sent by another thread with ``sendfile``, whose CPU is not counted, as the
    registry's is not), in pieces of up to 1 MiB, each verified as the floor does
    and written by the Decoder to a file under ``scratch``, synced when its layer
    ends (``fdatasync``); the config and manifest hashed; the least of
    FLOOR_ROUNDS rounds. The server's CPU over it is what its own code costs."""
    layers, documents = layer_blobs(layout), _documents(layout)
    scratch.mkdir(parents=True, exist_ok=True)
    best = math.inf
    try:
        for _ in range(FLOOR_ROUNDS):
            with socket.create_server(("127.0.0.1", 0)) as server:
                sender = threading.Thread(target=_send_files, args=(server, layers))
                sender.start()
                try:
                    with socket.create_connection(server.getsockname()[:2]) as connection:
                        best = min(best, _receive(connection, layers, documents, scratch))
                finally:
                    sender.join()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return best


def _send_files(server: socket.socket, paths: list[Path]) -> None:
    connection, _ = server.accept()
    with connection:
        for path in paths:
            with path.open("rb") as file:
                connection.sendfile(file)


def _receive(
    connection: socket.socket, layers: list[Path], documents: list[bytes], scratch: Path
) -> float:
    """This thread's CPU-seconds to receive, verify, write and sync every layer,
    and to hash the documents."""
    piece = memoryview(bytearray(CHUNK))
    start = time.thread_time()
    for number, path in enumerate(layers):
        left = path.stat().st_size
        with (scratch / str(number)).open("wb") as file, hashing.Decoder(threads="one") as decoder:
            decoder.write_to(file.fileno())
            while left:
                count = connection.recv_into(piece, min(left, CHUNK))
                if count == 0:
                    raise ConnectionError(f"the sender stopped {left} bytes short")
                decoder.update(piece[:count])
                left -= count
            decoder.finish()
            os.fdatasync(file.fileno())
    for document in documents:
        hashing.sha256_digest(document)
    return time.thread_time() - start


def _documents(layout: Path) -> list[bytes]:
    """The layout's blobs that are not layers: its config and manifest."""
    names = {path.name for path in layer_blobs(layout)}
    blobs = (layout / "blobs" / "sha256").iterdir()
    return [path.read_bytes() for path in blobs if path.name not in names]


def cli_pull_seconds(bench: Bench, reference: str) -> float:
    """Wall seconds of ``imagestore pull`` (the CLI, its start-up included) into an
    empty store."""
    bench.forget()
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "imagestore", "pull", reference],
        cwd=PROJECT,
        env={**os.environ, "IMAGESTORE_HOST": bench.server.address},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def verdict(value: float, goal: float | None) -> str:
    """ "(goal <= G: met)", or nothing when the figure has no goal (for this image)."""
    if goal is None:
        return ""
    return f"(goal <= {goal:g}: {'met' if value <= goal else 'NOT met'})"


def line(label: str, figure: str, note: str = "") -> None:
    print(f"  {label:<34}{figure:>12}  {note}".rstrip())


def report(image: Image, figures: Figures, runs: int) -> None:
    median = statistics.median
    pull, to_oci = median(figures.pull), median(figures.to_oci)
    to_archive, push = median(figures.to_archive), median(figures.push)
    skopeo_push, cpu = median(figures.skopeo_push), median(figures.pull_cpu)
    gib = image.size / GIB
    floor, io_floor = figures.floor_cpu, figures.io_floor_cpu
    pull_ratio, push_ratio, cpu_ratio = pull / to_oci, push / skopeo_push, cpu / floor
    count = len(figures.up_to_date)
    blob_count = sum("/blobs/" in uri for _, uri, _ in figures.up_to_date)
    pull_goal, push_goal = PULL_GOALS.get(image.name), PUSH_GOALS.get(image.name)
    print(f"\n{image.label}: {image.size / MB:.1f} MB of blobs, medians of {runs}")
    line("imagestore Pull", f"{pull:.3f} s", each(figures.pull))
    line("skopeo copy docker:// -> oci:", f"{to_oci:.3f} s", each(figures.to_oci))
    line("ratio Pull / skopeo -> oci:", f"{pull_ratio:.2f}x", verdict(pull_ratio, pull_goal))
    archive_ratio = f"(Pull / it {pull / to_archive:.2f}x)"
    line("skopeo -> docker-archive:", f"{to_archive:.3f} s", archive_ratio)
    line("imagestore Push", f"{push:.3f} s", each(figures.push))
    line("skopeo copy oci: -> docker://", f"{skopeo_push:.3f} s", each(figures.skopeo_push))
    line("ratio Push / skopeo push", f"{push_ratio:.2f}x", verdict(push_ratio, push_goal))
    line("server CPU over the Pull", f"{cpu:.3f} s", each(figures.pull_cpu))
    line("server CPU per GiB pulled", f"{cpu / gib:.3f} s/GiB")
    line("floor (Decoder, one thread)", f"{floor / gib:.3f} s/GiB", f"({floor:.3f} s)")
    line("ratio CPU / floor", f"{cpu_ratio:.2f}x", verdict(cpu_ratio, CPU_GOALS.get(image.name)))
    line("floor + I/O (recv, write, sync)", f"{io_floor / gib:.3f} s/GiB", f"({io_floor:.3f} s)")
    line("ratio floor + I/O / floor", f"{io_floor / floor:.2f}x", "(the kernel's part)")
    line("ratio CPU / (floor + I/O)", f"{cpu / io_floor:.2f}x", "(the server's own part)")
    line("server CPU per layer", f"{cpu / image.layers * 1000:.2f} ms")
    line("server cores busy (CPU / wall)", f"{median(figures.cores):.2f}", each(figures.cores))
    # the server at its floor with I/O, the registry's CPU beside it, every core busy
    registry_cpu, cores = median(figures.registry_cpu), os.cpu_count() or 1
    least = (io_floor + registry_cpu) / cores
    line("registry CPU over the Pull", f"{registry_cpu:.3f} s", each(figures.registry_cpu))
    line(
        "least a Pull can take here",
        f"{least:.3f} s",
        f"((floor + I/O + registry) / {cores} cores: {least / to_oci:.2f}x skopeo -> oci:)",
    )
    line("its busiest thread (CPU / wall)", f"{median(figures.busiest_thread):.2f}")
    line("up-to-date pull: registry requests", f"{count}", verdict(count, UP_TO_DATE_GOAL))
    line("  of which blob requests", f"{blob_count}", verdict(blob_count, UP_TO_DATE_BLOB_GOAL))
    for method, uri, status in figures.up_to_date:
        print(f"    {method} {uri} -> {status}")


def each(values: list[float]) -> str:
    """Every run's figure, for the eye to judge the spread."""
    return "(runs: " + ", ".join(f"{value:.2f}" for value in values) + ")"


def table(images: list[Image], results: dict[str, Figures]) -> None:
    """The issue's table: one row per image."""
    median = statistics.median
    print(
        "\n| image | imagestore Pull | skopeo -> oci: | ratio | skopeo -> docker-archive: |"
        " imagestore Push | skopeo push | ratio | server CPU/GiB | floor/GiB | CPU/floor |"
        " floor + I/O/GiB | CPU/(floor + I/O) | up-to-date requests |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for image in images:
        f = results[image.name]
        pull, to_oci, to_archive = median(f.pull), median(f.to_oci), median(f.to_archive)
        push, skopeo_push = median(f.push), median(f.skopeo_push)
        gib = image.size / GIB
        cpu, floor, io_floor = median(f.pull_cpu) / gib, f.floor_cpu / gib, f.io_floor_cpu / gib
        print(
            f"| {image.label} | {pull:.2f} s | {to_oci:.2f} s | {pull / to_oci:.2f}x |"
            f" {to_archive:.2f} s ({pull / to_archive:.2f}x) | {push:.2f} s |"
            f" {skopeo_push:.2f} s | {push / skopeo_push:.2f}x | {cpu:.2f} s |"
            f" {floor:.2f} s | {cpu / floor:.2f}x | {io_floor:.2f} s | {cpu / io_floor:.2f}x |"
            f" {len(f.up_to_date)} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=int(os.environ.get("IMAGESTORE_BENCH_RUNS", 5)))
    parser.add_argument("--data", type=Path, default=Path("build/bench/transfer"))
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    images = [
        Image("big", "3 x 200 MiB layers", big_image(args.data)),
        Image("real", "Debian-like base + Python stdlib (2 layers)", real_image(args.data)),
        Image("tiny", "200 layers of 1 KiB", tiny_image(args.data)),
    ]
    print(
        f"Pull and Push through the gRPC API from this process (no CLI start-up),"
        f" beside skopeo; registry: docker-registry on loopback; gzip backend:"
        f" {hashing.backend()}; wall seconds, server CPU = user + sys of its process"
    )
    bench = Bench(args.data)
    results: dict[str, Figures] = {}
    try:
        for image in images:
            publish(image.layout, bench.reference(image))
        for image in images:
            results[image.name] = measure(bench, image, args.runs)
            report(image, results[image.name], args.runs)
        cli = cli_pull_seconds(bench, bench.reference(images[0]))
        print(
            f"\nOnce: `imagestore pull` (CLI, start-up included) of {images[0].label}: {cli:.3f} s"
        )
    finally:
        bench.close()
    table(images, results)
    print(f"\n(whole run {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
