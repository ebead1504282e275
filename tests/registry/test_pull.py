"""Pull from the real registry images that skopeo and umoci made."""

from __future__ import annotations

import grpc
import pytest

from imagestore.v1 import imagestore_pb2 as pb
from tests.api.test_service import check_summary, error_info
from tests.registry.conftest import Published, Stub, good_auth, pull, request_platform
from tests.registry.distribution import Distribution, skopeo


def _check_clean(stub: Stub) -> None:
    summary = check_summary(stub)
    assert summary.ok, summary


#: Docker's words of a layer line -> the phase beside them
LAYER_PHASES = {
    "Pulling fs layer": pb.PHASE_WAITING,
    "Waiting": pb.PHASE_WAITING,
    "Downloading": pb.PHASE_DOWNLOADING,
    "Verifying Checksum": pb.PHASE_VERIFYING,
    "Download complete": pb.PHASE_DOWNLOADED,
    "Pull complete": pb.PHASE_COMPLETE,
    "Already exists": pb.PHASE_ALREADY_EXISTS,
}


@pytest.mark.parametrize("name", ["umoci/hello:oci", "umoci/hello:v2s2", "py/da:v2s2"])
def test_a_pulled_image_has_the_config_digest_and_diff_ids_skopeo_reports(
    stub: Stub, published: Published, name: str
) -> None:
    manifest_digest, config_digest, diff_ids = published.images[name]
    first = pull(stub, published.ref(name))
    assert list(first.last.image_ids) == [config_digest]
    assert first.last.digest == manifest_digest
    assert first.last.status == f"Downloaded newer image for {published.ref(name)}"
    assert first.last.updated
    assert first.last.name.familiar == published.ref(name)
    assert first.last.name.canonical == published.ref(name)  # a host: already canonical
    for status in (
        "Pulling fs layer",
        "Downloading",
        "Verifying Checksum",
        "Download complete",
        "Pull complete",
    ):
        assert status in first.statuses(), first.statuses()
    assert f"Digest: {manifest_digest}" in first.statuses()
    assert all(e.phase != pb.PHASE_UNSPECIFIED for e in first.events)
    head, summary = first.events[0], first.events[-1]
    assert (head.phase, head.text) == (pb.PHASE_RESOLVING, f"Pulling from {name.split(':')[0]}")
    assert head.subject == name.split(":")[1]
    assert (summary.phase, summary.HasField("blob")) == (pb.PHASE_SUMMARY, False)
    layer_lines = [e for e in first.events if e.text in LAYER_PHASES]
    assert {e.blob.digest for e in layer_lines} == set(layer_digests(stub, published.ref(name)))
    for line in layer_lines:
        assert line.phase == LAYER_PHASES[line.text], line
        assert line.subject == line.blob.digest.removeprefix("sha256:")[:12]
        assert line.blob.size > 0
        assert line.blob.media_type.endswith(("tar+gzip", "tar.gzip"))
    downloading = [e for e in layer_lines if e.phase == pb.PHASE_DOWNLOADING]
    assert all(e.HasField("total") and e.total == e.blob.size for e in downloading)
    assert all(0 < e.current <= e.total for e in downloading)

    details = stub.Inspect(pb.InspectRequest(image=published.ref(name)))
    assert details.image.id == config_digest
    assert list(details.diff_ids) == diff_ids
    assert details.manifest.digest == manifest_digest
    repository = published.ref(name).split(":")[0] if name.count(":") == 1 else ""
    digests = [n.familiar for n in details.image.repo_digests]
    assert f"{published.host}/{name.split(':')[0]}@{manifest_digest}" in digests, repository

    again = pull(stub, published.ref(name))
    assert again.last.status == f"Image is up to date for {published.ref(name)}"
    assert not again.last.updated
    assert "Downloading" not in again.statuses()
    layers = {e.subject for e in again.events if e.phase == pb.PHASE_ALREADY_EXISTS}
    assert len(layers) == len(diff_ids)
    _check_clean(stub)


def test_an_oci_and_a_converted_docker_manifest_are_one_image(
    stub: Stub, published: Published
) -> None:
    oci = pull(stub, published.ref("umoci/hello:oci"))
    docker = pull(stub, published.ref("umoci/hello:v2s2"))
    assert oci.last.image_ids == docker.last.image_ids
    assert oci.last.digest != docker.last.digest
    assert "Downloading" not in docker.statuses()  # same layer blobs: already there


def test_the_requested_platform_of_an_index_is_pulled_and_the_name_keeps_the_index(
    stub: Stub, published: Published
) -> None:
    index_digest = published.images["umoci/multi:1"][0]
    _, arm_config, arm_diff_ids = published.images["umoci/multi:1@arm64"]
    _, amd_config, _ = published.images["umoci/multi:1@amd64"]
    name = published.ref("umoci/multi:1")

    arm = pull(stub, name, "linux/arm64")
    assert list(arm.last.image_ids) == [arm_config]
    assert arm.last.digest == index_digest
    details = stub.Inspect(
        pb.InspectRequest(image=name, platform=request_platform("linux/arm64/v8"))
    )
    assert (details.image.id, details.image.platform.architecture) == (arm_config, "arm64")
    assert list(details.diff_ids) == arm_diff_ids
    with pytest.raises(grpc.RpcError) as absent:
        stub.Inspect(pb.InspectRequest(image=name, platform=request_platform("linux/amd64")))
    assert absent.value.code() == grpc.StatusCode.NOT_FOUND
    _check_clean(stub)  # absent, unselected children are fine

    both = pull(stub, name, "all")
    assert set(both.last.image_ids) == {arm_config, amd_config}
    assert (
        stub.Inspect(
            pb.InspectRequest(image=name, platform=request_platform("linux/amd64"))
        ).image.id
        == amd_config
    )
    _check_clean(stub)


def test_the_servers_own_platform_is_the_default(stub: Stub, published: Published) -> None:
    _, amd_config, _ = published.images["umoci/multi:1@amd64"]
    pulled = pull(stub, published.ref("umoci/multi:1"))
    assert list(pulled.last.image_ids) == [amd_config]  # these machines are amd64


def test_a_platform_the_index_lacks_is_not_found_and_names_those_offered(
    stub: Stub, published: Published
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        pull(stub, published.ref("umoci/multi:1"), "linux/s390x")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no matching manifest for linux/s390x" in str(caught.value.details())
    assert "linux/arm64" in str(caught.value.details())
    assert not list(stub.ListImages(pb.ListImagesRequest(all=True)).images)


def test_an_image_of_one_platform_asked_for_another_is_pulled_with_dockers_warning(
    stub: Stub, published: Published
) -> None:
    """docker pulls it all the same and warns; save and push refuse it."""
    name = published.ref("umoci/hello:oci")  # umoci made it for this amd64 machine
    _, config_digest, _ = published.images["umoci/hello:oci"]
    warning = (
        f"WARNING: image with reference {name} was found but does not match the specified"
        " platform: wanted linux/arm64, actual: linux/amd64"
    )
    pulled = pull(stub, name, "linux/arm64")
    assert list(pulled.last.image_ids) == [config_digest]
    assert warning in pulled.statuses()
    assert warning not in pull(stub, name, "linux/amd64").statuses()
    assert warning not in pull(stub, name).statuses()  # none asked: the server's own
    request = pb.SaveRequest(images=[name], platform=request_platform("linux/arm64"))
    with pytest.raises(grpc.RpcError) as saved:
        b"".join(message.chunk for message in stub.Save(request, timeout=60))
    assert saved.value.code() == grpc.StatusCode.NOT_FOUND
    assert saved.value.details() == warning.removeprefix("WARNING: ")
    assert error_info(saved.value).reason == "PLATFORM_NOT_FOUND"


def test_an_unknown_tag_is_not_found(stub: Stub, published: Published) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        pull(stub, published.ref("umoci/hello:nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "manifest unknown" in str(caught.value.details())
    assert error_info(caught.value).reason == "MANIFEST_UNKNOWN"


def test_pull_by_digest_records_the_digest_name(stub: Stub, published: Published) -> None:
    manifest_digest, config_digest, _ = published.images["umoci/hello:oci"]
    reference = f"{published.host}/umoci/hello@{manifest_digest}"
    pulled = pull(stub, reference)
    assert list(pulled.last.image_ids) == [config_digest]
    assert stub.Inspect(pb.InspectRequest(image=reference)).image.id == config_digest


def test_basic_auth_good_and_bad_credentials(
    stub: Stub, published: Published, auth_registry: Distribution
) -> None:
    target = f"{auth_registry.host}/private/hello:1"
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        "ci:ci-secret",
        f"oci:{published.layout}:v1-amd64",
        f"docker://{target}",
    )
    for auth in (None, pb.RegistryAuth(username="ci", password="wrong")):
        with pytest.raises(grpc.RpcError) as caught:
            pull(stub, target, auth=auth)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "wrong" not in str(caught.value.details())
    pulled = pull(stub, target, auth=good_auth())
    assert list(pulled.last.image_ids) == [published.images["umoci/hello:oci"][1]]


def layer_digests(stub: Stub, image: str) -> list[str]:
    """The layer blobs of a stored image, as Inspect reports them."""
    return [layer.digest for layer in stub.Inspect(pb.InspectRequest(image=image)).layers]


def test_pull_all_tags_pulls_each_tag_the_registry_lists(stub: Stub, published: Published) -> None:
    repository = f"{published.host}/alltags/hello"
    sources = {"a-oci": "umoci/hello:oci", "b-v2s2": "umoci/hello:v2s2"}
    for tag, source in sources.items():
        skopeo(
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            f"docker://{published.ref(source)}",
            f"docker://{repository}:{tag}",
        )
    pulled = pull(stub, repository, all_tags=True)
    result = pulled.last
    assert (result.name.familiar, result.name.canonical, result.digest) == (
        repository,
        repository,
        "",
    )
    # in the registry's order, which need not be sorted
    order = [t.name.canonical.rsplit(":", 1)[1] for t in result.tags]
    assert sorted(order) == sorted(sources)
    assert [t.name.canonical for t in result.tags] == [f"{repository}:{tag}" for tag in order]
    for pulled_tag in result.tags:
        manifest_digest, config_digest, _ = published.images[
            sources[pulled_tag.name.familiar.rsplit(":", 1)[1]]
        ]
        assert (pulled_tag.digest, list(pulled_tag.image_ids)) == (manifest_digest, [config_digest])
    assert [t.updated for t in result.tags] == [True, True]  # the second adds a name
    assert result.updated
    assert list(result.image_ids) == [published.images["umoci/hello:oci"][1]]
    assert result.status == f"Downloaded newer image for {repository}"
    heads = [e for e in pulled.events if e.phase == pb.PHASE_RESOLVING]
    assert [e.subject for e in heads] == order  # "<tag>: Pulling from …", per tag
    for tag in sources:
        assert stub.Inspect(pb.InspectRequest(image=f"{repository}:{tag}")).image.id

    again = pull(stub, repository, all_tags=True).last
    assert not again.updated
    assert [t.updated for t in again.tags] == [False, False]
    assert again.status == f"Image is up to date for {repository}"


@pytest.mark.parametrize("suffix", [":oci", "@sha256:" + "0" * 64])
def test_pull_all_tags_of_a_tag_or_digest_is_invalid(
    stub: Stub, published: Published, suffix: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        pull(stub, f"{published.host}/umoci/hello{suffix}", all_tags=True)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tag can't be used with --all-tags/-a" in str(caught.value.details())
    assert error_info(caught.value).reason == "REFERENCE_INVALID"


def test_a_request_platform_without_an_os_is_invalid(stub: Stub, published: Published) -> None:
    request = pb.PullRequest(
        image=published.ref("umoci/multi:1"), platforms=[pb.Platform(architecture="arm64")]
    )
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Pull(request, timeout=60))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).reason == "PLATFORM_INVALID"
