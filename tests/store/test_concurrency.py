"""Many threads ingesting overlapping blobs, committing and removing images,
while prunes run: only the expected errors, nothing live deleted, check passes."""

from __future__ import annotations

import contextlib
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from imagestore import errors
from imagestore.store import check as check_module
from imagestore.store.models import CheckReport, Name
from imagestore.store.store import Store
from tests.store.builders import build_image, layer_tar
from tests.store.conftest import OpenStore

WORKERS = 6
#: seconds before a thread that should have finished is declared stuck (a
#: failure detector for a deadlock, not a wait for a race)
STUCK = 60
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


def test_reads_proceed_while_a_write_transaction_and_a_check_are_in_progress(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = build_image(store, [layer_tar({"a": b"a" * 1000})], names=["example/app:1"])
    writing, hashing, release = threading.Event(), threading.Event(), threading.Event()
    hash_file = check_module.hash_file

    def held_hash(path: Path, *args: Any) -> check_module.Hashed:
        hashing.set()
        release.wait()
        return hash_file(path, *args)

    monkeypatch.setattr(check_module, "hash_file", held_hash)

    def long_write() -> None:
        with store._parts.catalog.transaction() as db:
            db.mark_damaged({"sha256:" + "0" * 64: "corrupt-blob"}, 0)
            writing.set()
            release.wait()

    reports: list[CheckReport] = []
    busy = [
        threading.Thread(target=long_write),
        threading.Thread(target=lambda: reports.append(store.check())),
    ]
    for thread in busy:
        thread.start()
    try:
        assert writing.wait(STUCK)
        assert hashing.wait(STUCK)
        seen: list[object] = []

        def read() -> None:
            seen.append(store.list_images().images[0].id)
            seen.append(store.inspect("example/app:1").summary.repo_tags)
            seen.append(store.history(built.image_id)[0].layer_digest)

        reader = threading.Thread(target=read)
        reader.start()
        reader.join(STUCK)
        assert not reader.is_alive(), "a read waited for the write or for Check"
        tags = (Name("example/app:1", "docker.io/example/app:1"),)
        assert seen == [built.image_id, tags, built.layers[0].digest]
    finally:
        release.set()
        for thread in busy:
            thread.join()
    assert reports[0].blobs_checked == 3
