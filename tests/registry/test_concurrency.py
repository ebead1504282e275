"""Pulls running side by side, and a prune in the middle of a pull."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import start_server
from tests.api.test_service import check_summary
from tests.archives import tar_of
from tests.registry.conftest import FAST_RETRIES, Stub, Transfer, pull, stop_cleanly
from tests.registry.hostile import HostileRegistry, make_image


@pytest.fixture
def hostile() -> Iterator[HostileRegistry]:
    with HostileRegistry().running() as registry:
        yield registry


@pytest.fixture
def other() -> Iterator[HostileRegistry]:
    with HostileRegistry().running() as registry:
        yield registry


def _in_background(
    stub: Stub, image: str, results: list[Transfer[pb.PullResult]]
) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(pull(stub, image)))
    thread.start()
    return thread


def test_two_pulls_sharing_a_layer_download_it_once(stub: Stub, hostile: HostileRegistry) -> None:
    """The second pull comes to the shared layer while the first downloads it: it
    waits for that download ("Waiting") instead of starting its own."""
    shared = tar_of({"shared": bytes(range(256)) * 8192})
    first = make_image([shared, tar_of({"one": b"1"})])
    second = make_image([shared, tar_of({"two": b"2"})])
    hostile.add_image("app/one", "1", first)
    hostile.add_image("app/two", "1", second)
    shared_digest = first.layer_digests[0]
    hostile.faults[shared_digest] = "hold"

    results: list[Transfer[pb.PullResult]] = []
    one = _in_background(stub, f"{hostile.host}/app/one:1", results)
    hostile.wait_until(lambda: hostile.holding == 1)  # the first pull's download is under way
    two = iter(stub.Pull(pb.PullRequest(image=f"{hostile.host}/app/two:1"), timeout=60))
    for message in two:
        progress = message.progress
        if progress.blob.digest == shared_digest and progress.text == "Waiting":
            break
    hostile.release()
    last = list(two)[-1]
    one.join(60)
    assert [tuple(r.last.image_ids) for r in results] == [(first.config_digest,)]
    assert tuple(last.result.image_ids) == (second.config_digest,)
    assert hostile.downloads(shared_digest) == 1
    assert check_summary(stub).ok


def test_a_pull_that_looked_before_another_stored_a_layer_does_not_fetch_it_again(
    tmp_path: Path, hostile: HostileRegistry, other: HostileRegistry
) -> None:
    """A pull looks up which layers the store holds when it starts; if another pull
    (here from another registry) stores one of them before this pull comes to it,
    this pull finds it stored rather than download it a second time. (A small layer:
    one that is read whole is only checked against the store once it is read.)"""
    shared = tar_of({"shared": b"shared" * 4000})
    first = make_image([tar_of({"first": b"first" * 4000}), shared])
    second = make_image([shared])
    hostile.add_image("app/held", "1", first)
    other.add_image("app/shared", "1", second)
    held, shared_digest = first.layer_digests
    hostile.faults[held] = "hold"
    server = start_server(
        tmp_path / "root",
        "--listen",
        "127.0.0.1:0",
        "--max-concurrent-small-downloads",
        "1",
        *FAST_RETRIES,
    )
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub: Stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
            results: list[Transfer[pb.PullResult]] = []
            # one small download at a time from that registry: the shared layer comes
            # after the held one, and the pull looked up the store before either
            waiting = _in_background(stub, f"{hostile.host}/app/held:1", results)
            hostile.wait_until(lambda: hostile.holding == 1)
            pull(stub, f"{other.host}/app/shared:1")  # stores the shared layer meanwhile
            hostile.release()
            waiting.join(60)
            assert [tuple(r.last.image_ids) for r in results] == [(first.config_digest,)]
            assert (other.downloads(shared_digest), hostile.downloads(shared_digest)) == (1, 0)
            assert check_summary(stub).ok
    finally:
        stop_cleanly(server)


def test_a_prune_during_a_pull_deletes_nothing_the_pull_needs(
    stub: Stub, hostile: HostileRegistry
) -> None:
    image = make_image([tar_of({"small": b"s" * 100}), tar_of({"slow": bytes(range(256)) * 8192})])
    hostile.add_image("app/pruned", "1", image)
    hostile.faults[image.layer_digests[1]] = "slow"
    results: list[Transfer[pb.PullResult]] = []
    thread = _in_background(stub, f"{hostile.host}/app/pruned:1", results)
    prunes = 0
    while thread.is_alive():
        pruned = stub.Prune(pb.PruneRequest())  # also sweeps unreferenced blobs
        assert not pruned.deleted_image_ids
        prunes += 1
    thread.join()
    assert prunes > 1
    assert list(results[0].last.image_ids) == [image.config_digest]
    assert check_summary(stub).ok
    assert (
        stub.Inspect(pb.InspectRequest(image=f"{hostile.host}/app/pruned:1")).image.id
        == image.config_digest
    )
