"""Many threads ingesting overlapping blobs, committing and removing images,
while prunes run: only the expected errors, nothing live deleted, check passes."""

from __future__ import annotations

import contextlib
import random
import threading
from pathlib import Path

import pytest
from imagestore import errors

from tests.store.builders import build_image, layer_tar
from tests.store.conftest import OpenStore

WORKERS = 6
ROUNDS = 60


@pytest.mark.slow
def test_commits_removes_and_prunes_in_parallel_keep_the_store_whole(
    tmp_path: Path, open_store: OpenStore
) -> None:
    shared = [layer_tar({f"shared{i}": bytes([i]) * 40_000}) for i in range(3)]
    unexpected: list[BaseException] = []
    aborted = 0
    stop = threading.Event()
    with open_store(tmp_path / "root") as store:

        def builder(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(ROUNDS):
                    name = f"c/app:{rng.randrange(4)}"
                    if rng.random() < 0.75:
                        layers = [
                            rng.choice(shared),
                            layer_tar({"x": rng.randbytes(rng.randrange(9))}),
                        ]
                        build_image(store, layers, names=[name])
                    else:
                        with contextlib.suppress(errors.NotFound):
                            store.remove([name])
            except BaseException as exc:
                unexpected.append(exc)

        def pruner() -> None:
            nonlocal aborted
            try:
                while not stop.wait(0.002):  # prune often, but let others take the locks
                    try:
                        store.prune()
                    except errors.Aborted:
                        aborted += 1
            except BaseException as exc:
                unexpected.append(exc)

        builders = [threading.Thread(target=builder, args=(i,)) for i in range(WORKERS)]
        pruners = [threading.Thread(target=pruner) for _ in range(2)]
        for thread in builders + pruners:
            thread.start()
        for thread in builders:
            thread.join()
        stop.set()
        for thread in pruners:
            thread.join()

        assert unexpected == []
        report = store.check()
        assert report.ok, report.problems
        for tag in range(4):
            try:
                image_id = store.resolve_image(f"c/app:{tag}")
            except errors.NotFound:
                continue
            for layer in store.inspect(image_id).layers:
                assert store._parts.blobs.verify(layer.digest)
        store.prune()
        assert store.check().ok
        with store._parts.catalog.reading() as db:
            assert db.unnamed_indexes() == []
