"""An up-to-date pull asks the registry for its manifest and nothing else.

The config is read from the store (re-hashed) when the store holds it; the
layers were already skipped. A config the store holds damaged, whether the
pull finds it so or Check marked it, is fetched again and repaired.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from imagestore.v1 import imagestore_pb2 as pb
from tests.api.conftest import Server
from tests.api.test_service import check_summary
from tests.archives import tar_of
from tests.registry.conftest import Stub, pull
from tests.registry.hostile import OCI_INDEX, Image, make_image, make_index
from tests.registry.recording import RecordingRegistry


@pytest.fixture(params=["anonymous", "bearer"])
def registry(request: pytest.FixtureRequest) -> Iterator[RecordingRegistry]:
    """Open, or with Bearer tokens (anonymous ones, as Docker Hub hands out)."""
    token_auth = "" if request.param == "bearer" else None
    running = RecordingRegistry(token_auth=token_auth)
    with running.running():
        yield running


def _image(architecture: str = "amd64") -> Image:
    return make_image(
        [tar_of({"etc/a": architecture.encode() * 500}), tar_of({"bin/b": b"b" * 3000})],
        architecture=architecture,
    )


def _blob_gets(log: list[tuple[str, str]]) -> list[str]:
    return [path for method, path in log if method == "GET" and "/blobs/" in path]


def test_a_second_pull_of_a_tag_asks_only_for_the_manifest(
    stub: Stub, registry: RecordingRegistry
) -> None:
    image = _image()
    registry.add_image("app", "1", image)
    first = pull(stub, f"{registry.host}/app:1")
    assert first.last.updated
    assert sorted(_blob_gets(registry.log)) == sorted(
        f"/v2/app/blobs/{d}" for d in [image.config_digest, *image.layer_digests]
    )
    mark = len(registry.log)
    again = pull(stub, f"{registry.host}/app:1")
    assert registry.since(mark) == [("GET", "/v2/app/manifests/1")]
    assert not again.last.updated
    assert again.last.digest == image.digest


def test_a_second_pull_by_digest_asks_only_for_the_manifest(
    stub: Stub, registry: RecordingRegistry
) -> None:
    image = _image()
    registry.add_image("app", "1", image)
    pull(stub, f"{registry.host}/app@{image.digest}")
    mark = len(registry.log)
    again = pull(stub, f"{registry.host}/app@{image.digest}")
    assert registry.since(mark) == [("GET", f"/v2/app/manifests/{image.digest}")]
    assert not again.last.updated


def test_a_second_pull_of_an_index_asks_for_no_blob(
    stub: Stub, registry: RecordingRegistry
) -> None:
    amd, arm = _image("amd64"), _image("arm64")
    registry.add_image("multi", "amd", amd)
    registry.add_image("multi", "arm", arm)
    registry.add_manifest("multi", "1", make_index([(amd, "amd64"), (arm, "arm64")]), OCI_INDEX)
    pull(stub, f"{registry.host}/multi:1", "all")
    mark = len(registry.log)
    again = pull(stub, f"{registry.host}/multi:1", "all")
    # the index only: its children, configs and layers are read from the store
    assert registry.since(mark) == [("GET", "/v2/multi/manifests/1")]
    assert not again.last.updated


@pytest.mark.parametrize("found_by", ["the pull", "check"])
def test_a_damaged_stored_config_is_fetched_again_and_repaired(
    stub: Stub, server: Server, registry: RecordingRegistry, found_by: str
) -> None:
    image = _image()
    registry.add_image("app", "1", image)
    pull(stub, f"{registry.host}/app:1")
    config = server.root / "blobs" / "sha256" / image.config_digest.removeprefix("sha256:")
    damaged = bytearray(config.read_bytes())
    damaged[5] ^= 0xFF  # the same size: only its hash tells
    config.chmod(0o644)
    config.write_bytes(bytes(damaged))
    if found_by == "check":  # marked damaged before the pull looks
        assert not check_summary(stub).ok
    mark = len(registry.log)
    pull(stub, f"{registry.host}/app:1")
    assert registry.since(mark) == [
        ("GET", "/v2/app/manifests/1"),
        ("GET", f"/v2/app/blobs/{image.config_digest}"),
    ]
    assert config.read_bytes() == image.config
    assert check_summary(stub).ok
    inspected = stub.Inspect(pb.InspectRequest(image=f"{registry.host}/app:1"))
    assert inspected.image.id == image.config_digest
