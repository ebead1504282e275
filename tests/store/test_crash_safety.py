"""SIGKILL a process that is changing the store, at random points; reopen; check."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imagestore import errors
from imagestore.store.store import Store
from tests.store.conftest import OpenStore

TRIALS = 60
PROJECT = Path(__file__).resolve().parents[2]


def run_until_killed(root: Path, seed: int, delay: float, catalog: str) -> list[str]:
    """Start the worker, kill it ``delay`` seconds after it is ready; its output lines."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.store.crash_worker", str(root), str(seed), catalog],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
    )
    assert worker.stdout is not None
    assert worker.stdout.readline().strip() == "ready", (
        worker.stderr.read() if worker.stderr else ""
    )
    time.sleep(delay)
    worker.send_signal(signal.SIGKILL)
    out, err = worker.communicate(timeout=30)
    assert worker.returncode == -signal.SIGKILL, f"worker ended by itself: {err[-2000:]}"
    return out.splitlines()


@pytest.mark.slow
def test_sigkill_at_random_points_leaves_a_consistent_store(
    tmp_path: Path, open_store: OpenStore, catalog_name: str
) -> None:
    rng = random.Random(20261126)
    root = tmp_path / "root"
    expected: dict[str, str] = {}  # name -> image id, as the worker last reported
    found_stale = 0
    for trial in range(TRIALS):
        lines = run_until_killed(root, trial, rng.uniform(0.01, 0.4), catalog_name)
        for line in lines:
            kind, *rest = line.split()
            if kind == "committed":
                image_id, name = rest
                expected[name] = image_id
            elif kind == "removed":
                expected.pop(rest[0], None)
        stale_before_open = len(list((root / "blobs" / "ingest").iterdir()))
        with open_store(root) as store:
            found_stale += stale_before_open
            assert list(store._parts.blobs.ingest_dir.iterdir()) == []  # start-up removed them
            report = store.check()  # every blob re-hashed, every manifest whole
            assert report.ok, f"trial {trial}: {report.problems}"
            # What the worker reported must have survived, except the one
            # operation that may have been cut between its commit and its report.
            surprises = 0
            for name, image_id in sorted(expected.items()):
                actual = _resolve(store, name)
                if actual != image_id:
                    surprises += 1
                    if actual is None:
                        del expected[name]
                    else:
                        expected[name] = actual
            assert surprises <= 1, f"trial {trial}: {surprises} reported changes were lost"
            for image_id in set(expected.values()):
                for layer in store.inspect(image_id).layers:
                    assert store._parts.blobs.exists(layer.digest)
    assert found_stale > 0, "no trial was killed mid-ingest; the test did not exercise crashes"


def _resolve(store: Store, name: str) -> str | None:
    try:
        return store.resolve_image(name)
    except errors.NotFound:
        return None


def test_ingest_leftovers_of_an_earlier_release_are_removed_at_start(
    tmp_path: Path, open_store: OpenStore
) -> None:
    """Releases before the shareable blob directory kept ingests in <root>/ingest."""
    root = tmp_path / "store"
    open_store(root).close()
    legacy = root / "ingest"
    legacy.mkdir()
    (legacy / "tmp-1a2b").write_bytes(b"half a layer")
    store = open_store(root)
    try:
        assert store.stale_ingests_removed == 1
        assert not legacy.exists()
    finally:
        store.close()
