"""Inspect throughput of one replica against three, in one run (``make bench``).

Replicas (docs/design.md §4, "Replicas") share one PostgreSQL catalog and one
blob directory; a client reaches them all through one round_robin channel
(``ipv4:127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3``, the client's own channel
options). This measures what that buys on this machine: the rate of Inspect
RPCs from concurrent clients (each on a long-lived channel of its own, spread
over several processes so that the client side is not one GIL), each client
asking about a few loaded images in turn (answers kept between changes, each
confirmed against the database per call: §2, "Repeated reads skip the
crossing"), against

0. one server on the embedded SQLite catalog (the reference),
1. one replica on PostgreSQL (a durable throwaway cluster, tests/pg.py),
2. three replicas on that database and blob directory, via round_robin.

All four servers run throughout (an idle replica costs one heartbeat every
2 s); the arms take turns, in a rotated order each round, so that load from
elsewhere on the machine weighs on all of them. Printed per arm: the median
over the rounds of the rate, of p50 and p99 latency, and of the CPU per RPC
of the arm's servers, of PostgreSQL (every process of the cluster) and of the
clients; then the ratio 3 replicas / 1 replica, taken within each round. On a
2-core machine the replicas share the cores that one server had, so no gain
is expected: the goal is that three replicas lose little (>= 0.8x).

    python -m tests.bench.bench_replicas [--seconds N] [--clients N] [--rounds N]
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import queue
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from pathlib import Path

import grpc

from imagestore.client.settings import channel_options
from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests import pg
from tests.api.conftest import Server, start_server
from tests.archives import ImageSpec, docker_archive
from tests.store.builders import layer_tar

#: the images every client asks about in turn (each client starts at another one)
IMAGES = [f"bench/replicas:{i}" for i in range(4)]
CLIENT_PROCESSES = 4
#: calls each client makes before the window opens: its connections are up, its answers kept
WARM_UP_CALLS = 20
CHUNK = 1 << 20
READY_TIMEOUT = 60.0
#: the goal of 3 replicas / 1 replica (2 cores: no gain expected, little loss allowed)
GOAL = 0.8
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---- the clients: processes of threads, each thread one channel --------------


@dataclass
class ClientReport:
    """One client process's share of a window."""

    latencies: list[float]
    cpu_seconds: float


def _client_process(
    threads: int, first_client: int, orders: multiprocessing.Queue[str | None],
    reports: multiprocessing.Queue[object], go: Event, stop: Event,
) -> None:  # fmt: skip
    """Serve orders until None: one window of ``threads`` clients per target."""
    while (target := orders.get()) is not None:
        reports.put(_window(target, threads, first_client, reports, go, stop))


def _window(
    target: str, threads: int, first_client: int, reports: multiprocessing.Queue[object],
    go: Event, stop: Event,
) -> ClientReport:  # fmt: skip
    """Connect and warm up the clients, report ready, let them call from ``go``
    to ``stop``; their latencies and this process's CPU meanwhile."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    connected = threading.Barrier(threads + 1)
    stopping = threading.Event()
    failures: list[BaseException] = []
    workers = [
        threading.Thread(
            target=_client,
            args=(target, (first_client + i) % len(IMAGES), latencies[i], connected, go,
                  stopping, failures),
        )
        for i in range(threads)
    ]  # fmt: skip
    for worker in workers:
        worker.start()
    connected.wait(READY_TIMEOUT)
    reports.put("ready")
    go.wait()
    cpu_at_go = time.process_time()
    stop.wait()
    stopping.set()  # one cross-process wait here, not one lock per call in the loop
    cpu_seconds = time.process_time() - cpu_at_go
    for worker in workers:
        worker.join()
    if failures:  # a failed call must not pass for a slow one
        raise failures[0]
    return ClientReport([t for own in latencies for t in own], cpu_seconds)


def _client(
    target: str, first_image: int, took: list[float], connected: threading.Barrier,
    go: Event, stopping: threading.Event, failures: list[BaseException],
) -> None:  # fmt: skip
    """One client: its own channel, IMAGES in turn from ``first_image``."""
    try:
        _call_in_a_loop(target, first_image, took, connected, go, stopping)
    except BaseException as failure:
        failures.append(failure)
        connected.abort()  # the others stop waiting for this one


def _call_in_a_loop(
    target: str, first_image: int, took: list[float], connected: threading.Barrier,
    go: Event, stopping: threading.Event,
) -> None:  # fmt: skip
    with grpc.insecure_channel(target, options=channel_options()) as channel:
        grpc.channel_ready_future(channel).result(timeout=READY_TIMEOUT)
        inspect = pb_grpc.ImageStoreServiceStub(channel).Inspect  # type: ignore[no-untyped-call]
        requests = itertools.cycle(
            pb.InspectRequest(image=image) for image in IMAGES[first_image:] + IMAGES[:first_image]
        )
        for _ in range(WARM_UP_CALLS):
            inspect(next(requests))
        connected.wait()
        go.wait()
        while not stopping.is_set():
            began = time.perf_counter()
            inspect(next(requests))
            took.append(time.perf_counter() - began)


class ClientPool:
    """CLIENT_PROCESSES long-lived client processes (spawned: no grpc state is
    forked), sharing ``clients`` threads between them."""

    def __init__(self, clients: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._go, self._stop = context.Event(), context.Event()
        self._reports: multiprocessing.Queue[object] = context.Queue()
        self._orders: list[multiprocessing.Queue[str | None]] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        count = min(CLIENT_PROCESSES, clients)
        first = 0
        for n in range(count):
            threads = clients // count + (n < clients % count)
            orders: multiprocessing.Queue[str | None] = context.Queue()
            process = context.Process(
                target=_client_process,
                args=(threads, first, orders, self._reports, self._go, self._stop),
                name=f"bench-client-{n}",
            )
            process.start()
            self._orders.append(orders)
            self.processes.append(process)
            first += threads

    def connect(self, target: str) -> None:
        """Every client connected to ``target`` and warmed up, waiting for the window."""
        self._go.clear()
        self._stop.clear()
        for orders in self._orders:
            orders.put(target)
        for _ in self._orders:
            assert self._report() == "ready"

    def open(self) -> None:
        self._go.set()

    def close_window(self) -> list[ClientReport]:
        self._stop.set()
        reports = [self._report() for _ in self._orders]
        assert all(isinstance(r, ClientReport) for r in reports), reports
        return reports  # type: ignore[return-value]

    def _report(self) -> object:
        for process in self.processes:
            if process.exitcode is not None:
                raise RuntimeError(f"{process.name} exited with {process.exitcode}")
        try:
            return self._reports.get(timeout=READY_TIMEOUT)
        except queue.Empty:
            raise RuntimeError("a client process did not report in time") from None

    def shutdown(self) -> None:
        for orders in self._orders:
            orders.put(None)
        for process in self.processes:
            process.join(10)
            if process.exitcode is None:
                process.kill()
                process.join()


# ---- the servers and their CPU --------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def cluster_cpu_seconds(cluster: pg.Cluster) -> float:
    """CPU so far of the cluster's postmaster and every process it started that
    still runs (the servers' pooled connections live through a window)."""
    postmaster = int((cluster.host / "data" / "postmaster.pid").read_text().split()[0])
    total = cpu_seconds(postmaster)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rpartition(")")[2].split()[1]) == postmaster:
                total += cpu_seconds(int(entry.name))
        except (OSError, ValueError):
            continue  # it ended meanwhile
    return total


def load_images(address: str) -> None:
    """IMAGES, each with a small layer of its own, through one Load."""
    archive = docker_archive(
        *(
            ImageSpec(tags=[name], layers=[layer_tar({"n": name.encode()})], labels={"n": name})
            for name in IMAGES
        )
    )
    with grpc.insecure_channel(address, options=channel_options()) as channel:
        stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
        requests = (pb.LoadRequest(chunk=archive[i : i + CHUNK])
                    for i in range(0, len(archive), CHUNK))  # fmt: skip
        for _ in stub.Load(requests):
            pass


@dataclass
class Arm:
    label: str
    servers: list[Server]

    @property
    def target(self) -> str:
        if len(self.servers) == 1:
            return self.servers[0].address
        return "ipv4:" + ",".join(server.address for server in self.servers)


@dataclass
class Sample:
    """One window of one arm."""

    rate: float
    p50_ms: float
    p99_ms: float
    server_us: float  # CPU per RPC of the arm's servers
    postgres_us: float  # of every PostgreSQL process
    client_us: float  # of the client processes
    server_shares: list[float]  # each server's part of the servers' CPU


def measure(arm: Arm, pool: ClientPool, cluster: pg.Cluster, seconds: float) -> Sample:
    pool.connect(arm.target)
    pids = [server.process.pid for server in arm.servers]
    servers_before = [cpu_seconds(pid) for pid in pids]
    postgres_before = cluster_cpu_seconds(cluster)
    pool.open()
    began = time.perf_counter()
    time.sleep(seconds)  # the measuring window, not a wait for a condition
    reports = pool.close_window()
    took = time.perf_counter() - began
    servers = [cpu_seconds(pid) - before for pid, before in zip(pids, servers_before, strict=True)]
    postgres = cluster_cpu_seconds(cluster) - postgres_before
    latencies = sorted(t for report in reports for t in report.latencies)
    calls = len(latencies)
    return Sample(
        rate=calls / took,
        p50_ms=latencies[calls // 2] * 1e3,
        p99_ms=latencies[min(calls - 1, calls * 99 // 100)] * 1e3,
        server_us=sum(servers) / calls * 1e6,
        postgres_us=postgres / calls * 1e6,
        client_us=sum(r.cpu_seconds for r in reports) / calls * 1e6,
        server_shares=[s / (sum(servers) or 1) for s in servers],
    )


def report(arms: list[Arm], samples: dict[str, list[Sample]], options: argparse.Namespace) -> None:
    rounds = len(samples[arms[0].label])
    processes = min(CLIENT_PROCESSES, options.clients)
    print(f"\nInspect, {options.clients} concurrent clients in {processes} processes,"
          f" {len(IMAGES)} images in turn (answers kept);"
          f" medians of {rounds} rounds of {options.seconds:g} s")  # fmt: skip
    print(f"  {'arm':<30} {'RPC/s':>8} {'p50 ms':>7} {'p99 ms':>7}"
          f"   CPU µs/RPC: {'servers':>7} {'PG':>5} {'clients':>7}")  # fmt: skip
    for arm in arms:
        mine = samples[arm.label]

        def median(field: str, mine: list[Sample] = mine) -> float:
            return float(statistics.median(getattr(s, field) for s in mine))

        print(f"  {arm.label:<30} {median('rate'):8.0f} {median('p50_ms'):7.2f}"
              f" {median('p99_ms'):7.2f}   {'':12}{median('server_us'):7.0f}"
              f" {median('postgres_us'):5.0f} {median('client_us'):7.0f}")  # fmt: skip
    one, three = samples[arms[1].label], samples[arms[2].label]
    shares = [statistics.median(s.server_shares[i] for s in three) for i in range(3)]
    print("  servers' CPU per replica (3 replicas): " + " / ".join(f"{s:.0%}" for s in shares))
    ratios = [b.rate / a.rate for a, b in zip(one, three, strict=True)]
    reference = [b.rate / a.rate for a, b in zip(samples[arms[0].label], one, strict=True)]
    print(f"  1 replica on PostgreSQL / SQLite     {statistics.median(reference):5.2f}x")
    print(f"  3 replicas / 1 replica               {statistics.median(ratios):5.2f}x"
          f"   (rounds: {', '.join(f'{r:.2f}' for r in ratios)};"
          f" goal >= {GOAL}x; 2 cores: no gain expected)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="each window (default 5)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (16)")
    parser.add_argument("--rounds", type=int, default=3, help="windows per arm (3)")
    options = parser.parse_args()
    cluster = pg.cluster(durable=True)
    pool = ClientPool(options.clients)  # spawned while the servers start
    started: list[Server] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-replicas-") as directory:
            scratch = Path(directory)
            database = pg.database_for(scratch)
            url = cluster.create_database(database)
            shared_blobs = scratch / "shared-blobs"
            quiet = ["--listen", "127.0.0.1:0", "--log-level", "warning"]
            sqlite = start_server(scratch / "sqlite", *quiet)
            started.append(sqlite)
            replicas = []
            for name in "abc":
                replica = start_server(
                    scratch / f"replica-{name}", *quiet, "--catalog", url,
                    "--blob-dir", str(shared_blobs),
                )  # fmt: skip
                started.append(replica)
                replicas.append(replica)
            load_images(sqlite.address)
            load_images(replicas[0].address)
            arms = [
                Arm("0: 1 server, SQLite", [sqlite]),
                Arm("1: 1 replica, PostgreSQL", replicas[:1]),
                Arm("2: 3 replicas, round_robin", replicas),
            ]
            samples: dict[str, list[Sample]] = {arm.label: [] for arm in arms}
            for turn in range(options.rounds):
                for arm in arms[turn % len(arms) :] + arms[: turn % len(arms)]:
                    samples[arm.label].append(measure(arm, pool, cluster, options.seconds))
            report(arms, samples, options)
            for server in started:
                code = server.stop()
                assert code == 0, f"server exited {code}: {''.join(server.stderr_lines)[-2000:]}"
            started.clear()
            cluster.drop_database(database)
    finally:
        pool.shutdown()
        for server in started:
            server.stop()


if __name__ == "__main__":
    main()
