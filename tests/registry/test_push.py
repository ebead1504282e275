"""Push to the real registry; skopeo reads back what imagestore pushed."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import grpc
import pytest

from imagestore.v1 import imagestore_pb2 as pb
from tests.api.conftest import Server, wait_until
from tests.api.test_service import check_summary, error_info, load
from tests.archives import ImageSpec, sha, tar_of
from tests.registry.conftest import Published, Stub, good_auth, pull, push, remote_manifest
from tests.registry.distribution import Distribution, skopeo, start_distribution

#: (method, URI, status) of a request the registry logged
Request = tuple[str, str, int]


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
    assert (pushed.last.name.familiar, pushed.last.name.canonical) == (target, target)
    head, summary = pushed.events[0], pushed.events[-1]
    assert (head.phase, head.text) == (
        pb.PHASE_RESOLVING,
        f"The push refers to repository [{fresh_registry.host}/copied/hello]",
    )
    assert (summary.phase, summary.text) == (
        pb.PHASE_SUMMARY,
        f"v1: digest: {manifest_digest} size: {pushed.last.size}",
    )
    preparing = [e for e in pushed.events if e.phase == pb.PHASE_PREPARING]
    assert {e.text for e in preparing} == {"Preparing"}
    layer_ids = {e.subject for e in preparing}
    assert len(layer_ids) == len(diff_ids)
    stored_layers = {layer.digest for layer in stub.Inspect(pb.InspectRequest(image=target)).layers}
    assert {e.blob.digest for e in preparing} == stored_layers
    for layer in layer_ids:
        assert pushed.statuses(layer)[-1] == "Pushed", pushed.statuses(layer)
        assert pushed.phases(layer)[-1] == pb.PHASE_PUSHED
        assert "Pushing" in pushed.statuses(layer)
    for line in pushed.events[1:-1]:
        assert line.subject == line.blob.digest.removeprefix("sha256:")[:12], line
        if line.phase == pb.PHASE_PUSHING:
            assert (line.text, line.total) == ("Pushing", line.blob.size)

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
    digests = [n.familiar for n in details.image.repo_digests]
    assert f"{fresh_registry.host}/copied/hello@{manifest_digest}" in digests

    again = push(stub, target)
    assert {(e.phase, e.text) for e in again.events if e.subject in layer_ids} == {
        (pb.PHASE_PREPARING, "Preparing"),
        (pb.PHASE_EXISTS_REMOTELY, "Layer already exists"),
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
    layer_events = [e for e in mounted.events if e.phase == pb.PHASE_MOUNTED]
    assert len(layer_events) == 2
    assert {e.text for e in layer_events} == {"Mounted from first/app"}
    assert all(e.subject and e.blob.digest for e in layer_events)
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
    assert error_info(caught.value).reason == "INDEX_INCOMPLETE"

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
    assert "write it again" in str(caught.value.details())
    # the push marked the blob: loading the image again repairs it, no Check needed
    load(stub, ImageSpec([target], [layer]))
    assert check_summary(stub).ok
    push(stub, target)


# ---- mount sources ---------------------------------------------------------------------


@pytest.fixture
def logged_registry(tmp_path: Path) -> Iterator[Distribution]:
    """An empty registry that logs every request it completes."""
    running = start_distribution(tmp_path / "logged-registry", log_level="info")
    yield running
    running.stop()


def _pushed_to(registry: Distribution, offset: int, repository: str) -> list[Request]:
    """The requests the registry logged since ``offset``, once it has logged the
    manifest PUT that ends a push to ``repository`` (the line is written just
    after the answer, so the client may be done first: wait for it, bounded)."""

    def logged() -> bool:
        return any(
            method == "PUT" and uri.startswith(f"/v2/{repository}/manifests/")
            for method, uri, _ in registry.requests_since(offset)
        )

    wait_until(logged)
    return registry.requests_since(offset)


def _uploads(requests: list[Request]) -> list[Request]:
    """Blob bytes sent: PATCH or PUT on an upload session."""
    return [r for r in requests if r[0] in ("PATCH", "PUT") and "/blobs/uploads/" in r[1]]


def _mounts(requests: list[Request]) -> list[tuple[str, int]]:
    """(source repository, status) of each mount request."""
    return [
        (parse_qs(urlsplit(uri).query)["from"][0], status)
        for method, uri, status in requests
        if method == "POST" and "mount=" in uri
    ]


def _blobs(stub: Stub, name: str) -> list[str]:
    details = stub.Inspect(pb.InspectRequest(image=name))
    return [layer.digest for layer in details.layers] + [details.image.id]


def test_a_push_mounts_from_where_the_blobs_went_not_from_a_local_guess(
    stub: Stub, logged_registry: Distribution
) -> None:
    host = logged_registry.host
    first = f"{host}/first/app:1"
    load(stub, ImageSpec([first], [tar_of({"a": b"mount me" * 1000}), tar_of({"b": b"me too"})]))
    push(stub, first)
    # a local name on that registry, never pushed; it sorts first (the old guess)
    stub.Tag(pb.TagRequest(source=first, target=f"{host}/aaa/never-pushed:1"))
    third = f"{host}/third/app:1"
    stub.Tag(pb.TagRequest(source=first, target=third))
    offset = logged_registry.log_size()
    pushed = push(stub, third)
    requests = _pushed_to(logged_registry, offset, "third/app")
    assert _uploads(requests) == []
    assert _mounts(requests) == [("first/app", 201)] * 3  # two layers and the config
    layers = [e for e in pushed.events if e.phase == pb.PHASE_MOUNTED]
    assert {e.text for e in layers} == {"Mounted from first/app"}
    assert len(layers) == 2


def test_a_push_tries_each_known_source_before_uploading(
    stub: Stub, logged_registry: Distribution
) -> None:
    host = logged_registry.host
    first, second, third = (f"{host}/{n}/app:1" for n in ("first", "second", "third"))
    load(stub, ImageSpec([first], [tar_of({"c": b"known twice" * 1000})]))
    push(stub, first)
    stub.Tag(pb.TagRequest(source=first, target=second))
    push(stub, second)  # mounted from first/app; now the most recent source
    for digest in _blobs(stub, second):  # the registry forgets second/app's blobs
        request = urllib.request.Request(
            f"http://{host}/v2/second/app/blobs/{digest}", method="DELETE"
        )
        with urllib.request.urlopen(request) as answer:
            assert answer.status == 202
    stub.Tag(pb.TagRequest(source=first, target=third))
    offset = logged_registry.log_size()
    push(stub, third)
    requests = _pushed_to(logged_registry, offset, "third/app")
    assert _uploads(requests) == []
    mounts = _mounts(requests)
    assert sorted(mounts) == sorted([("second/app", 202), ("first/app", 201)] * 2)
    cancelled = [r for r in requests if r[0] == "DELETE" and "/blobs/uploads/" in r[1]]
    assert [status for _, _, status in cancelled] == [204, 204]  # each 202's session


def test_a_pull_records_where_its_blobs_came_from(
    stub: Stub, logged_registry: Distribution
) -> None:
    host = logged_registry.host
    source, target = f"{host}/src/app:1", f"{host}/dst/app:1"
    load(stub, ImageSpec([source], [tar_of({"d": b"pulled, then pushed" * 500})]))
    push(stub, source)
    stub.Remove(pb.RemoveRequest(images=[source]))
    stub.Prune(pb.PruneRequest(all=True))  # the blobs, and what was known of them, go
    assert not list(stub.ListImages(pb.ListImagesRequest(all=True)).images)
    pull(stub, source)
    stub.Tag(pb.TagRequest(source=source, target=target))
    offset = logged_registry.log_size()
    push(stub, target)
    requests = _pushed_to(logged_registry, offset, "dst/app")
    assert _uploads(requests) == []
    assert _mounts(requests) == [("src/app", 201)] * 2
