"""skopeo pushes into imagestore's endpoint (``--registry-allow-push``): from an
OCI layout (one image, and a two-platform index with ``--all``) and from a
docker-archive. Each pushed image is then visible over gRPC with the digests
skopeo sent, and skopeo copies it back out byte for byte."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import Server
from tests.archives import ImageSpec, docker_archive, sha, tar_of
from tests.distribution.conftest import start_push_server
from tests.distribution.test_push import (
    OCI_INDEX,
    OCI_MANIFEST,
    Image,
    descriptor,
    index_entry,
    make_image,
)
from tests.distribution.test_skopeo import read_layout, skopeo_bytes, skopeo_json

Stub = pb_grpc.ImageStoreServiceStub


@dataclass
class Target:
    server: Server
    stub: Stub
    address: str

    def url(self, path: str) -> str:
        return f"docker://{self.address}/{path}"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    server = start_push_server(tmp_path_factory.mktemp("push-skopeo") / "root")
    try:
        with grpc.insecure_channel(server.address) as channel:
            assert server.registry_address is not None
            stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
            yield Target(server, stub, server.registry_address)
    finally:
        assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]


def write_layout(layout: Path, blobs: list[bytes], top: dict[str, object], tag: str) -> None:
    """An OCI image layout holding ``blobs``, its index.json naming ``top`` as ``tag``."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    for blob in blobs:
        (layout / "blobs" / "sha256" / sha(blob)[7:]).write_bytes(blob)
    entry = {**top, "annotations": {"org.opencontainers.image.ref.name": tag}}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))


def inspect(stub: Stub, name: str, architecture: str = "") -> pb.InspectResponse:
    chosen = pb.Platform(os="linux", architecture=architecture) if architecture else None
    answer: pb.InspectResponse = stub.Inspect(
        pb.InspectRequest(image=name, platform=chosen, include_raw=True)
    )
    return answer


def copy(*args: str) -> None:
    skopeo_bytes("copy", "--src-tls-verify=false", "--dest-tls-verify=false", *args)


def test_an_oci_layout_copied_in_keeps_its_digests_and_copies_back_out(
    target: Target, tmp_path: Path
) -> None:
    image = make_image("skopeo-oci", layers=3)
    write_layout(tmp_path / "in", [*image.blobs, image.manifest],
                 descriptor(OCI_MANIFEST, image.manifest), "1")  # fmt: skip
    copy(f"oci:{tmp_path / 'in'}:1", target.url("demo/app:1"))
    shown = inspect(target.stub, "demo/app:1")
    assert shown.manifest.digest == image.digest
    assert shown.raw_manifest == image.manifest
    assert shown.image.id == sha(image.config)
    assert [layer.digest for layer in shown.layers] == [sha(layer) for layer in image.layers]
    copy(target.url("demo/app:1"), f"oci:{tmp_path / 'out'}:1")
    (entry,) = read_layout(tmp_path / "out")["manifests"]
    assert entry["digest"] == image.digest


def test_a_docker_archive_copied_in_is_an_image_with_its_diff_ids(
    target: Target, tmp_path: Path
) -> None:
    spec = ImageSpec(
        ["app:1"],
        [tar_of({"etc/release": b"ID=pushed\n"}), tar_of({"bin/app": b"\x7fELF" * 400})],
        labels={"pushed": "yes"},
    )
    archive = tmp_path / "app.tar"
    archive.write_bytes(docker_archive(spec))
    copy(f"docker-archive:{archive}", target.url("library/app:1"))
    shown = inspect(target.stub, "app:1")
    assert shown.image.id == spec.image_id  # the config is sent as it is
    assert list(shown.diff_ids) == [sha(layer) for layer in spec.layers]
    assert shown.image.labels["pushed"] == "yes"
    raw = skopeo_bytes("inspect", "--tls-verify=false", "--raw", target.url("library/app:1"))
    assert (sha(raw), raw) == (shown.manifest.digest, shown.raw_manifest)
    # dir: keeps the manifest as served (oci: would rewrite a Docker one)
    copy(target.url("library/app:1"), f"dir:{tmp_path / 'out'}")
    assert (tmp_path / "out" / "manifest.json").read_bytes() == shown.raw_manifest
    assert (tmp_path / "out" / spec.image_id[7:]).read_bytes() == spec.config()


def test_an_index_copied_in_with_all_keeps_every_platform(target: Target, tmp_path: Path) -> None:
    children: list[tuple[Image, str]] = [
        (make_image("skopeo-amd", "amd64"), "amd64"),
        (make_image("skopeo-arm", "arm64"), "arm64"),
    ]
    entries = [index_entry(image, architecture) for image, architecture in children]
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    blobs = [blob for image, _ in children for blob in (*image.blobs, image.manifest)]
    write_layout(tmp_path / "in", [*blobs, index], descriptor(OCI_INDEX, index), "1")
    copy("--all", f"oci:{tmp_path / 'in'}:1", target.url("demo/multi:1"))
    raw = skopeo_bytes("inspect", "--tls-verify=false", "--raw", target.url("demo/multi:1"))
    assert raw == index
    for image, architecture in children:
        shown = inspect(target.stub, "demo/multi:1", architecture)
        assert (shown.manifest.digest, shown.image.id) == (image.digest, sha(image.config))
    listed = skopeo_json("list-tags", "--tls-verify=false", target.url("demo/multi"))
    assert listed["Tags"] == ["1"]
    copy("--all", target.url("demo/multi:1"), f"oci:{tmp_path / 'out'}:1")
    (entry,) = read_layout(tmp_path / "out")["manifests"]
    assert entry["digest"] == sha(index)
