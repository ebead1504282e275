"""CI's bounded fuzz run: every harness replays its seeds, then fuzzes a while.

Each harness (see tests/fuzz/harness.py for what passing means) runs in its own
libFuzzer process for IMAGESTORE_FUZZ_SECONDS (default 20) from its committed
seed corpus, with a fixed seed so that a run is repeatable. A failure shows
libFuzzer's report and the failing input, base64-encoded: reproduce it with
``python -m tests.fuzz.<name> FILE``, fix it, and add the input to
tests/fuzz/corpus/<name>/ so that every later run replays it. ``make fuzz``
runs the same harnesses for long.
"""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest

from tests.fuzz.run import CORPUS, HARNESSES, ROOT, command, findings

SECONDS = int(os.environ.get("IMAGESTORE_FUZZ_SECONDS", "20"))


def _report(output: str, found: list[Path]) -> str:
    """The Python exception atheris caught (or libFuzzer's last words), and the inputs."""
    for marker in ("=== Uncaught Python exception", "==ERROR:", "ERROR: libFuzzer"):
        start = output.find(marker)
        if start >= 0:
            break
    else:
        start = max(len(output) - 4000, 0)
    inputs = [
        f"{path.name} (base64): {base64.b64encode(path.read_bytes()).decode()}" for path in found
    ]
    return "\n".join([output[start : start + 4000], *inputs])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(HARNESSES))
def test_fuzz_harness_finds_nothing(name: str, tmp_path: Path) -> None:
    seeds = sorted((CORPUS / name).iterdir())
    assert seeds, f"no seed corpus in tests/fuzz/corpus/{name}"
    result = subprocess.run(
        command(name, SECONDS, tmp_path, seed=1),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # atheris prints the Python exception on stdout
        text=True,
        errors="replace",
        timeout=SECONDS + 300,
        check=False,
    )
    found = findings(tmp_path, name)
    report = _report(result.stdout, found)
    assert result.returncode == 0, report
    assert not found, report
    # The run really fuzzed: it replayed every seed and went on mutating.
    runs = [
        line
        for line in result.stdout.splitlines()
        if line.startswith("stat::number_of_executed_units")
    ]
    assert runs, report
    assert int(runs[-1].split(":")[-1]) > len(seeds), report
