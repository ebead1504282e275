"""Push to the real registry; skopeo reads back what imagestore pushed."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from imagestore.v1 import imagestore_pb2 as pb

from tests.api.conftest import Server
from tests.api.test_service import error_info, load
from tests.archives import ImageSpec, sha, tar_of
from tests.registry.conftest import Published, Stub, good_auth, pull, push, remote_manifest
from tests.registry.distribution import Distribution, skopeo


@pytest.mark.parametrize("name", ["umoci/hello:oci", "umoci/hello:v2s2"])
def test_a_pushed_image_keeps_its_digest_and_skopeo_reads_it(
    stub: Stub, published: Published, fresh_registry: Distribution, tmp_path: Path, name: str
) -> None:
    manifest_digest, config_digest, diff_ids = published.images[name]
    pull(stub, published.ref(name))
    target = f"{fresh_registry.host}/copied/hello:v1"
    stub.Tag(pb.TagRequest(source=published.ref(name), target=target))

    pushed = push(stub, target)
    assert pushed.last.digest == manifest_digest
    assert pushed.last.tag == "v1"
    assert (
        f"The push refers to repository [{fresh_registry.host}/copied/hello]" in pushed.statuses()
    )
    layer_ids = {e.id for e in pushed.events if e.status == "Preparing"}
    assert len(layer_ids) == len(diff_ids)
    for layer in layer_ids:
        assert pushed.statuses(layer)[-1] == "Pushed", pushed.statuses(layer)
        assert "Pushing" in pushed.statuses(layer)
    assert f"v1: digest: {manifest_digest} size: {pushed.last.size}" in pushed.statuses()

    raw, manifest = remote_manifest(target)
    assert sha(raw) == manifest_digest
    assert manifest["config"]["digest"] == config_digest
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{target}"))
    assert inspected["Digest"] == manifest_digest
    assert inspected["Layers"] == [layer["digest"] for layer in manifest["layers"]]

    out = tmp_path / "out"
    skopeo("copy", "--src-tls-verify=false", f"docker://{target}", f"oci:{out}:copy")
    copied = json.loads((out / "index.json").read_text())["manifests"][0]["digest"]
    if name.endswith(":oci"):  # skopeo converts a Docker manifest on its way to OCI
        assert copied == manifest_digest
    copied_manifest = json.loads(
        (out / "blobs" / "sha256" / copied.removeprefix("sha256:")).read_text()
    )
    assert len(copied_manifest["layers"]) == len(diff_ids)

    details = stub.Inspect(pb.InspectRequest(image=target))
    assert f"{fresh_registry.host}/copied/hello@{manifest_digest}" in details.image.repo_digests

    again = push(stub, target)
    assert {e.status for e in again.events if e.id in layer_ids} == {
        "Preparing",
        "Layer already exists",
    }


def test_a_push_to_another_repository_of_the_same_registry_mounts(
    stub: Stub, published: Published, fresh_registry: Distribution
) -> None:
    source = f"{fresh_registry.host}/first/app:1"
    second = f"{fresh_registry.host}/second/app:1"
    loaded = load(
        stub, ImageSpec([source], [tar_of({"a": b"layer a" * 1000}), tar_of({"b": b"b"})])
    )
    push(stub, source)
    stub.Tag(pb.TagRequest(source=source, target=second))
    mounted = push(stub, second)
    layer_events = [e for e in mounted.events if e.id and e.status.startswith("Mounted from")]
    assert len(layer_events) == 2
    assert {e.status for e in layer_events} == {"Mounted from first/app"}
    assert "Pushing" not in mounted.statuses()
    raw, _ = remote_manifest(second)
    assert sha(raw) == mounted.last.digest
    assert (
        loaded.images[0].id
        == json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{second}"))["Digest"]
        or True
    )  # the ID is the config digest, not the manifest: checked below
    config = skopeo("inspect", "--tls-verify=false", "--config", "--raw", f"docker://{second}")
    assert sha(config.encode()) == loaded.images[0].id


def test_an_index_is_pushed_whole_or_one_platform_at_a_time(
    stub: Stub, published: Published, fresh_registry: Distribution
) -> None:
    index_digest = published.images["umoci/multi:1"][0]
    arm_manifest = published.images["umoci/multi:1@arm64"][0]
    name = published.ref("umoci/multi:1")
    pull(stub, name, "linux/arm64")
    target = f"{fresh_registry.host}/multi/app:1"
    stub.Tag(pb.TagRequest(source=name, target=target))

    with pytest.raises(grpc.RpcError) as caught:
        push(stub, target)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "linux/amd64" in str(caught.value.details())
    assert error_info(caught.value).reason == "FAILED_PRECONDITION"

    one = push(stub, target, platform="linux/arm64")
    assert one.last.digest == arm_manifest
    raw, _ = remote_manifest(target)
    assert sha(raw) == arm_manifest

    pull(stub, name, "all")
    whole = push(stub, target)
    assert whole.last.digest == index_digest
    raw, index = remote_manifest(target)
    assert sha(raw) == index_digest
    assert len(index["manifests"]) == 2


def test_push_with_basic_auth(stub: Stub, auth_registry: Distribution) -> None:
    target = f"{auth_registry.host}/pushed/app:1"
    load(stub, ImageSpec([target], [tar_of({"x": b"auth push"})]))
    with pytest.raises(grpc.RpcError) as caught:
        push(stub, target, auth=pb.RegistryAuth(username="ci", password="wrong"))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    pushed = push(stub, target, auth=good_auth())
    raw = skopeo(
        "inspect", "--tls-verify=false", "--creds", "ci:ci-secret", "--raw", f"docker://{target}"
    )
    assert sha(raw.encode()) == pushed.last.digest


def test_pushing_a_name_that_is_not_stored_is_not_found(
    stub: Stub, fresh_registry: Distribution
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        push(stub, f"{fresh_registry.host}/nothing/here:1")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "An image does not exist locally with the tag" in str(caught.value.details())


def test_a_corrupted_stored_layer_is_not_pushed(
    stub: Stub, server: Server, fresh_registry: Distribution
) -> None:
    target = f"{fresh_registry.host}/corrupt/app:1"
    layer = tar_of({"data": b"will be damaged" * 1000})
    load(stub, ImageSpec([target], [layer]))
    details = stub.Inspect(pb.InspectRequest(image=target))
    blob = server.root / "blobs" / "sha256" / details.layers[0].digest.removeprefix("sha256:")
    damaged = bytearray(blob.read_bytes())
    damaged[-20] ^= 0xFF
    blob.chmod(0o644)
    blob.write_bytes(bytes(damaged))
    with pytest.raises(grpc.RpcError) as caught:
        push(stub, target)
    assert caught.value.code() == grpc.StatusCode.DATA_LOSS
    assert "run check" in str(caught.value.details())
    assert not stub.Check(pb.CheckRequest()).ok
