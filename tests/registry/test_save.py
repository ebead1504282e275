"""Save of a multi-platform image pulled from a real registry, through the real
server: the index leaves whole and comes back whole; a partly pulled index is
refused naming what is absent, unless a platform is chosen; skopeo reads the
saved archive and finds the registry's own index digest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import grpc
import pytest

from imagestore.v1 import imagestore_pb2 as pb
from tests.api.test_service import check_summary, error_info, load_result
from tests.registry.conftest import Published, Stub, pull, request_platform
from tests.registry.distribution import skopeo

MULTI = "umoci/multi:1"


def _save(stub: Stub, name: str, platform: str = "") -> bytes:
    chosen = request_platform(platform) if platform else None
    request = pb.SaveRequest(images=[name], platform=chosen)
    return b"".join(message.chunk for message in stub.Save(request, timeout=60))


def _load(stub: Stub, archive: bytes) -> pb.LoadResult:
    chunks = [archive[i : i + (1 << 20)] for i in range(0, len(archive), 1 << 20)]
    requests = (pb.LoadRequest(chunk=c) for c in chunks)
    return load_result(list(stub.Load(requests, timeout=60)))


def test_a_multi_platform_image_round_trips_through_save_and_load(
    stub: Stub, published: Published, tmp_path: Path
) -> None:
    name = published.ref(MULTI)
    index_digest = published.images[MULTI][0]
    pull(stub, name, "all")
    archive = _save(stub, name)
    path = tmp_path / "multi.tar"
    path.write_bytes(archive)
    raw = skopeo("inspect", "--raw", f"oci-archive:{path}")
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == index_digest
    stub.Remove(pb.RemoveRequest(images=[name], force=True), timeout=30)
    stub.Prune(pb.PruneRequest(all=True), timeout=30)
    loaded = _load(stub, archive)
    named = [[n.familiar for n in image.names] for image in loaded.images]
    assert sorted(named) == [[], [f"{published.host}/{MULTI}"]]  # the name, once
    for arch in ("amd64", "arm64"):
        _, config, diff_ids = published.images[f"{MULTI}@{arch}"]
        inspected = stub.Inspect(
            pb.InspectRequest(image=name, platform=request_platform(f"linux/{arch}"))
        )
        assert (inspected.image.id, list(inspected.diff_ids)) == (config, diff_ids)
    assert check_summary(stub).ok
    assert len(json.loads(raw)["manifests"]) == 2


def test_a_partly_pulled_index_is_saved_only_by_platform(stub: Stub, published: Published) -> None:
    name = published.ref(MULTI)
    pull(stub, name, "linux/arm64")
    with pytest.raises(grpc.RpcError) as refused:
        _save(stub, name)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "linux/amd64" in error_info(refused.value).metadata["missing"]
    archive = _save(stub, name, platform="linux/arm64")
    _, arm_config, _ = published.images[f"{MULTI}@arm64"]
    stub.Remove(pb.RemoveRequest(images=[name], force=True), timeout=30)
    loaded = _load(stub, archive)
    assert [(i.id, [n.familiar for n in i.names]) for i in loaded.images] == [
        (arm_config, [f"{published.host}/{MULTI}"])
    ]
