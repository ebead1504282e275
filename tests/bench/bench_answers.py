"""Kept Inspect answers on each catalog, in one run (``make bench``).

A server on SQLite and one on PostgreSQL (a durable throwaway cluster), each
holding one small image: Inspect of it again and again, an answer kept between
two changes of the store. Printed: the p50 of one client's calls in a row, and
the rate of 16 concurrent clients, beside a no-op RPC (Health/Check) on the
same server in the same run.

    python -m tests.bench.bench_answers [--calls N] [--seconds N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from imagestore.v1 import imagestore_pb2 as pb
from tests import pg
from tests.api.conftest import start_server
from tests.archives import ImageSpec, docker_archive
from tests.bench.bench_api import CHUNK, _channel, _rate, _service, health_check, inspect_image


def _p50_us(call: Callable[[], object], calls: int) -> float:
    took = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        took.append(time.perf_counter() - start)
    return statistics.median(took) * 1e6


def measure(root: Path, extra: list[str], calls: int, seconds: float) -> dict[str, float]:
    server = start_server(root, "--listen", "127.0.0.1:0", *extra)
    try:
        archive = docker_archive(ImageSpec(tags=["bench/big:1"], layers=[b"\0" * 1024]))
        with _channel(server.address) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            requests = (pb.LoadRequest(chunk=archive[i : i + CHUNK])
                        for i in range(0, len(archive), CHUNK))  # fmt: skip
            for _ in _service(channel).Load(requests):
                pass
            inspect = inspect_image(channel, 0)
            floor = health_check(channel, 0)
            inspect()
            results = {
                "inspect_p50": _p50_us(inspect, calls),
                "floor_p50": _p50_us(floor, calls),
            }
        results["inspect_rate"] = _rate(server.address, seconds, inspect_image)
        results["floor_rate"] = _rate(server.address, seconds, health_check)
        return results
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2001)
    parser.add_argument("--seconds", type=float, default=3.0)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-answers-") as directory:
        root = Path(directory)
        cluster = pg.cluster(durable=True)
        url = cluster.create_database(pg.database_for(root / "pg"))
        for label, extra, where in (
            ("SQLite", [], root / "sqlite"),
            ("PostgreSQL", ["--catalog", url], root / "pg"),
        ):
            r = measure(where, extra, options.calls, options.seconds)
            print(
                f"{label:<11} Inspect (kept answer) p50 {r['inspect_p50']:7.0f} µs"
                f"  (no-op {r['floor_p50']:5.0f} µs);"
                f" 16 clients {r['inspect_rate']:7.0f} RPC/s"
                f"  (no-op {r['floor_rate']:6.0f} RPC/s)"
            )


if __name__ == "__main__":
    main()
