"""Pulls running side by side, and a prune in the middle of a pull."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from imagestore.v1 import imagestore_pb2 as pb
from tests.api.test_service import check_summary
from tests.archives import tar_of
from tests.registry.conftest import Stub, Transfer, pull
from tests.registry.hostile import HostileRegistry, make_image


@pytest.fixture
def hostile() -> Iterator[HostileRegistry]:
    with HostileRegistry().running() as registry:
        yield registry


def _in_background(
    stub: Stub, image: str, results: list[Transfer[pb.PullResult]]
) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(pull(stub, image)))
    thread.start()
    return thread


def test_two_pulls_sharing_a_layer_download_it_once(stub: Stub, hostile: HostileRegistry) -> None:
    shared = tar_of({"shared": bytes(range(256)) * 8192})  # 2 MiB, served slowly
    first = make_image([shared, tar_of({"one": b"1"})])
    second = make_image([shared, tar_of({"two": b"2"})])
    hostile.add_image("app/one", "1", first)
    hostile.add_image("app/two", "1", second)
    shared_digest = first.layer_digests[0]
    hostile.faults[shared_digest] = "slow"

    results: list[Transfer[pb.PullResult]] = []
    threads = [
        _in_background(stub, f"{hostile.host}/app/one:1", results),
        _in_background(stub, f"{hostile.host}/app/two:1", results),
    ]
    for thread in threads:
        thread.join(60)
    assert len(results) == 2
    assert {tuple(r.last.image_ids) for r in results} == {
        (first.config_digest,),
        (second.config_digest,),
    }
    assert hostile.downloads(shared_digest) == 1
    assert check_summary(stub).ok


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
