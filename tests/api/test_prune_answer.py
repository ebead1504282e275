"""A prune that removes more than one answer holds: the lists are cut to fit
the server's --max-response-bytes, the counts stay whole, and it says so."""

from __future__ import annotations

from pathlib import Path

import grpc

from imagestore.api import convert
from imagestore.store import models
from imagestore.store.models import name_of
from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import start_server
from tests.api.test_service import load
from tests.archives import ImageSpec
from tests.store.builders import layer_tar

IMAGES = 1000  # ~140 kB of IDs and names: more than the 64 KiB answers below


def digest(i: int, kind: str) -> str:
    return f"sha256:{kind}{i:063x}"


def result(images: int, blobs: int) -> models.PruneResult:
    return models.PruneResult(
        deleted_images=tuple(digest(i, "a") for i in range(images)),
        untagged=tuple(name_of(f"docker.io/library/app:{i}") for i in range(images)),
        deleted_blobs=tuple(digest(i, "b") for i in range(blobs)),
        reclaimed=12345,
        stale_ingests=2,
    )


def test_an_answer_that_fits_is_whole() -> None:
    response = convert.prune_response(result(3, 7), max_bytes=64 << 10)
    assert not response.truncated
    assert (
        len(response.deleted_image_ids),
        len(response.untagged),
        len(response.deleted_blobs),
    ) == (3, 3, 7)
    assert (response.deleted_image_count, response.untagged_count, response.deleted_blob_count) == (
        3,
        3,
        7,
    )


def test_lists_are_cut_in_order_and_the_counts_stay_whole() -> None:
    whole = result(50, 400)
    for max_bytes in (400, 4000, 8000, 30000):
        response = convert.prune_response(whole, max_bytes=max_bytes)
        assert response.ByteSize() <= max_bytes
        assert response.truncated
        assert (
            response.deleted_image_count,
            response.untagged_count,
            response.deleted_blob_count,
        ) == (50, 50, 400)
        assert (response.reclaimed_bytes, response.stale_ingests) == (12345, 2)
        # what is listed is a prefix of each list, and a later list only once the earlier is whole
        assert list(response.deleted_image_ids) == list(
            whole.deleted_images[: len(response.deleted_image_ids)]
        )
        assert [n.canonical for n in response.untagged] == [
            n.canonical for n in whole.untagged[: len(response.untagged)]
        ]
        assert list(response.deleted_blobs) == list(
            whole.deleted_blobs[: len(response.deleted_blobs)]
        )
        if response.untagged:
            assert len(response.deleted_image_ids) == 50
        if response.deleted_blobs:
            assert len(response.untagged) == 50
    # just enough room: nothing is cut
    room = convert.prune_response(whole, max_bytes=1 << 20).ByteSize()
    assert not convert.prune_response(whole, max_bytes=room).truncated


def test_a_large_prune_through_the_real_server(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "root", "--listen", "127.0.0.1:0", "--max-response-bytes", str(64 << 10)
    )
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
            layer = layer_tar({"shared": b"1"})
            load(stub, *(ImageSpec(tags=[f"many:{i}"], layers=[layer], labels={"n": str(i)})
                         for i in range(IMAGES)))  # fmt: skip
            dry = stub.Prune(pb.PruneRequest(all=True, dry_run=True))
            pruned = stub.Prune(pb.PruneRequest(all=True))
            for response in (dry, pruned):
                assert response.truncated
                assert response.ByteSize() <= 64 << 10
                assert (response.deleted_image_count, response.untagged_count) == (IMAGES, IMAGES)
                # every image's config and manifest, and the one shared layer
                assert response.deleted_blob_count == 2 * IMAGES + 1
                assert 0 < len(response.deleted_image_ids) <= IMAGES
            assert stub.DiskUsage(pb.DiskUsageRequest()).image_count == 0
    finally:
        assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]
