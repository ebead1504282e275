"""Health latency while each hostile input of the hardening issue runs (``make bench``).

For every attack a fresh ``imagestore serve`` process is started and seeded
(the hostile suite's ``start_target``), the attack's material is prepared, and
then the attack runs while a prober takes Health/Check one call at a time
(every 10 ms, 5 s deadline) on a channel of its own, until the attack ends; an
attack shorter than ``--probes`` probes is repeated, within ``--budget``
seconds (also each call's deadline, so a server that freezes cannot stop the
benchmark). The prober is a process of its own, so neither the attacker's nor
the in-process registries' work in this process skews its timings.

One line per attack: the status codes it got, health p50/p99 during it beside
the idle p99 measured in the same run (goal: p99 ratio <= 2x), probes lost to
their deadline, and the server's peak RSS, thread and descriptor growth over
the baseline taken after setup. A server that no longer answers when the attack
ends is killed (SIGKILL) and said so.

    python -m tests.bench.bench_hostile [--budget S] [--probes N] [--only TEXT]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

import imagestore.hashing
from tests.api.conftest import Server
from tests.bench.attacks import Attack, Context, MiB, Sizes, all_attacks
from tests.hostile.conftest import start_target

#: the prober's pause between two probes, and each probe's deadline
PROBE_INTERVAL = 0.01
PROBE_DEADLINE = 5.0
GOAL_RATIO = 2.0


# ---- the prober (a process of its own) ----------------------------------------------


def _probe_loop(commands: Connection, taken: Synchronized[int]) -> None:
    """Serve ``("probe", address, count)`` (count None: until ``"stop"``) with
    ``(latencies, failed)``: seconds per probe, and whether each one failed."""
    channel: grpc.Channel | None = None
    address = ""
    while True:
        command = commands.recv()
        if command[0] == "quit":
            break
        _, target, count = command
        if target != address:
            if channel is not None:
                channel.close()
            channel = grpc.insecure_channel(target)
            grpc.channel_ready_future(channel).result(timeout=30)
            address = target
        assert channel is not None
        health = health_pb2_grpc.HealthStub(channel)
        latencies: list[float] = []
        failed: list[bool] = []
        taken.value = 0
        while count is None or len(latencies) < count:
            started = time.perf_counter()
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=PROBE_DEADLINE)
                failed.append(answer.status != health_pb2.HealthCheckResponse.SERVING)
            except grpc.RpcError:
                failed.append(True)
            latencies.append(time.perf_counter() - started)
            taken.value = len(latencies)
            if commands.poll(PROBE_INTERVAL):  # doubles as the pause between probes
                commands.recv()  # "stop"
                break
        commands.send((latencies, failed))
    if channel is not None:
        channel.close()


@dataclass
class Prober:
    """The probing process, driven over a pipe; ``taken`` counts the current run."""

    process: multiprocessing.process.BaseProcess
    commands: Connection
    taken: Synchronized[int]

    @classmethod
    def start(cls) -> Prober:
        spawn = multiprocessing.get_context("spawn")  # no fork under gRPC's threads
        ours, theirs = spawn.Pipe()
        taken: Synchronized[int] = spawn.Value("i", 0)
        process = spawn.Process(target=_probe_loop, args=(theirs, taken), daemon=True)
        process.start()
        return cls(process, ours, taken)

    def count(self, address: str, probes: int) -> tuple[list[float], list[bool]]:
        self.commands.send(("probe", address, probes))
        result: tuple[list[float], list[bool]] = self.commands.recv()
        return result

    def begin(self, address: str) -> None:
        """Probe until :meth:`end`; returns once the first probe is done."""
        self.taken.value = 0
        self.commands.send(("probe", address, None))
        deadline = time.monotonic() + 60
        while self.taken.value < 1:
            if time.monotonic() > deadline:
                raise TimeoutError("the prober took no probe in 60 s")
            time.sleep(0.005)

    def end(self) -> tuple[list[float], list[bool]]:
        self.commands.send(("stop",))
        result: tuple[list[float], list[bool]] = self.commands.recv()
        return result

    def close(self) -> None:
        self.commands.send(("quit",))
        self.process.join(30)


# ---- measuring ----------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass
class Sampler:
    """The server's peak RSS, threads and descriptors, sampled every 20 ms."""

    process: psutil.Process
    rss: int = 0
    threads: int = 0
    fds: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        try:
            with self.process.oneshot():
                self.rss = max(self.rss, self.process.memory_info().rss)
                self.threads = max(self.threads, self.process.num_threads())
                self.fds = max(self.fds, self.process.num_fds())
        except psutil.Error:
            pass  # the server is gone (it crashed): the outcome will say so

    def __enter__(self) -> Sampler:
        def run() -> None:
            while not self._stop.wait(0.02):
                self.sample()

        self._thread = threading.Thread(target=run, name="sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.sample()


def stop_server(server: Server, *, kill: bool) -> int:
    """SIGTERM (a grace period), SIGKILL if it does not end; its exit code."""
    if server.process.poll() is not None:
        return server.stop()
    if not kill:
        try:
            return server.stop(signal.SIGTERM, timeout=20)
        except subprocess.TimeoutExpired:
            pass
    return server.stop(signal.SIGKILL, timeout=30)


@dataclass
class Line:
    name: str
    outcome: str
    probes: int
    p50: float
    p99: float
    lost: int
    rss: int
    threads: int
    fds: int


def _summary(codes: Counter[str]) -> str:
    return ", ".join(code if n == 1 else f"{code} x{n}" for code, n in codes.most_common())


def run_attack(
    attack: Attack,
    prober: Prober,
    scratch: Path,
    budget: float,
    min_probes: int,
    log: Path | None = None,
) -> Line:
    """Start a server, prepare the attack, run it (repeated) under probing;
    the server's log goes to ``log`` when given."""
    with tempfile.TemporaryDirectory(dir=scratch) as directory:
        server, channel, target = start_target(Path(directory) / "root")
        process = psutil.Process(server.process.pid)
        context = Context(target.stub, scratch, lambda: int(prober.taken.value), min_probes)
        frozen = False
        try:
            with attack.prepare(context) as round_:
                sampler = Sampler(process)
                sampler.sample()
                baseline = (sampler.rss, sampler.threads, sampler.fds)
                codes: Counter[str] = Counter()
                prober.begin(server.address)
                with sampler:
                    started = time.monotonic()
                    while True:
                        began = time.monotonic()
                        remaining = budget - (began - started)
                        codes.update(round_(max(remaining, 1.0)))
                        took = time.monotonic() - began
                        spent = time.monotonic() - started
                        if prober.taken.value >= min_probes or spent + took > budget:
                            break
                        if any(code.endswith("DEADLINE_EXCEEDED") for code in codes):
                            break
                    latencies, failed = prober.end()
                frozen = failed[-1]
                exit_code = stop_server(server, kill=frozen)
        finally:
            channel.close()
            if server.process.poll() is None:
                stop_server(server, kill=True)
    if log is not None:
        log.write_text("".join(server.stderr_lines))
    notes = list(context.notes)
    if frozen:
        notes.append("unresponsive at the end: killed")
    elif exit_code != 0:
        notes.append(f"server exit {exit_code}")
    if any("Traceback" in line for line in server.stderr_lines):
        notes.append("traceback in the server log")
    return Line(
        attack.name,
        "; ".join([_summary(codes), *notes]),
        len(latencies),
        percentile(latencies, 0.50),
        percentile(latencies, 0.99),
        sum(failed),
        sampler.rss - baseline[0],
        sampler.threads - baseline[1],
        sampler.fds - baseline[2],
    )


def idle_latencies(prober: Prober, scratch: Path, count: int) -> list[float]:
    """Health latency of a fresh, seeded, idle server, probed like the attacks."""
    with tempfile.TemporaryDirectory(dir=scratch) as directory:
        server, channel, _ = start_target(Path(directory) / "root")
        try:
            latencies, failed = prober.count(server.address, count)
        finally:
            channel.close()
            stop_server(server, kill=False)
    if any(failed):
        raise RuntimeError(f"{sum(failed)} idle probes failed")
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per attack")
    parser.add_argument("--probes", type=int, default=100, help="health probes per attack")
    parser.add_argument("--idle-probes", type=int, default=500)
    parser.add_argument("--only", default="", help="run the attacks whose name contains this")
    parser.add_argument("--pax-digits", type=int, default=MiB)
    parser.add_argument("--check-mb", type=int, default=300)
    parser.add_argument("--data", type=Path, default=Path("build/bench"))
    parser.add_argument("--logs", type=Path, help="keep each server's log in this directory")
    args = parser.parse_args()
    sizes = Sizes(pax_digits=args.pax_digits, check_bytes=args.check_mb * 10**6)
    attacks = [a for a in all_attacks(sizes) if args.only.lower() in a.name.lower()]
    args.data.mkdir(parents=True, exist_ok=True)
    prober = Prober.start()
    try:
        idle = idle_latencies(prober, args.data, args.idle_probes)
        idle_p99 = percentile(idle, 0.99)
        print(
            f"\nHealth/Check latency while each attack runs (imagestore at"
            f" {Path(imagestore.hashing.__file__).parent}; a fresh server per attack;"
            " probes one at a"
            f" time every {PROBE_INTERVAL * 1e3:.0f} ms, {PROBE_DEADLINE:.0f} s deadline;"
            f" attacks repeated to >= {args.probes} probes within {args.budget:.0f} s)"
        )
        print(
            f"  idle: {len(idle)} probes, p50 {percentile(idle, 0.5) * 1e3:.2f} ms,"
            f" p99 {idle_p99 * 1e3:.2f} ms   (goal: p99 under attack <= {GOAL_RATIO:.0f}x idle)"
        )
        print(
            f"  {'attack':<54}{'probes':>7}{'p50 ms':>9}{'p99 ms':>9}{'idle p99':>9}"
            f"{'ratio':>8}{'lost':>5}{'RSS +MiB':>9}{'+thr':>5}{'+fds':>5}  outcome"
        )
        met = 0
        if args.logs is not None:
            args.logs.mkdir(parents=True, exist_ok=True)
        for number, attack in enumerate(attacks, 1):
            log = None if args.logs is None else args.logs / f"attack{number:02d}.log"
            line = run_attack(attack, prober, args.data, args.budget, args.probes, log)
            ratio = line.p99 / idle_p99
            met += ratio <= GOAL_RATIO
            print(
                f"  {line.name:<54}{line.probes:>7}{line.p50 * 1e3:>9.2f}{line.p99 * 1e3:>9.2f}"
                f"{idle_p99 * 1e3:>9.2f}{ratio:>7.1f}x{line.lost:>5}{line.rss / MiB:>9.0f}"
                f"{line.threads:>5}{line.fds:>5}  {line.outcome}",
                flush=True,
            )
        print(f"  {met} of {len(attacks)} attacks within the goal")
    finally:
        prober.close()


if __name__ == "__main__":
    main()
