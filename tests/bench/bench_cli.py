"""CLI start-up beside its floor, in one run (``make bench``): the median wall
time of ``imagestore --version`` and of ``imagestore images -q`` against a
running server, beside ``python -c 'import grpc'`` (the floor of any Python
gRPC client) and ``python -c pass``, all with this interpreter.

Goals (issue 15): ``images -q`` ≤ 1.5x the grpc floor; ``--version`` ≤ 0.5x.

    python -m tests.bench.bench_cli [--runs N]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.api.conftest import PROJECT, start_server

GOALS = {"--version": 0.5, "images -q": 1.5}


def _median(command: list[str], env: dict[str, str], runs: int) -> float:
    """Median seconds of ``runs`` runs (after one warm-up run)."""
    times = []
    for run in range(runs + 1):
        started = time.perf_counter()
        subprocess.run(command, cwd=PROJECT, env=env, check=True, capture_output=True)
        if run:  # the first run warms the page cache and .pyc files
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    python = sys.executable
    with tempfile.TemporaryDirectory() as scratch:
        server = start_server(Path(scratch) / "root", "--listen", "127.0.0.1:0")
        try:
            # bytecode cached as an installed package has it: the warm-up run writes
            # the .pyc files (site-packages has them already: without them the floor
            # would be measured compiled, the CLI compiling)
            env = {**os.environ, "IMAGESTORE_HOST": server.address}
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            measured = {
                "python -c pass": _median([python, "-c", "pass"], env, runs),
                "python -c 'import grpc'": _median([python, "-c", "import grpc"], env, runs),
                "--version": _median([python, "-m", "imagestore", "--version"], env, runs),
                "images -q": _median([python, "-m", "imagestore", "images", "-q"], env, runs),
            }
        finally:
            server.stop(signal.SIGTERM)
    floor = measured["python -c 'import grpc'"]
    print(f"CLI start-up, median of {runs} runs each (same interpreter, same run)")
    for name, seconds in measured.items():
        ratio = seconds / floor
        goal = GOALS.get(name)
        verdict = ""
        if goal is not None:
            verdict = f"  goal <= {goal}x: {'met' if ratio <= goal else 'NOT met'}"
        print(f"  {name:<26} {seconds * 1000:7.1f} ms  {ratio:5.2f}x grpc floor{verdict}")


if __name__ == "__main__":
    main()
