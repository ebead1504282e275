"""skopeo against imagestore's OCI Distribution endpoint: what it reads is what the
store holds, byte for byte.

The store is filled over gRPC (a docker-archive Load; Pulls from a real
`docker-registry` of an OCI image and a two-platform index), then skopeo
inspects, copies and lists tags through the endpoint. Digests are compared with
what the store reports over gRPC (Inspect, ListImages, ReadBlob); OCI layouts
that skopeo writes are read back (index.json, every blob's hash) and unpacked by
umoci. Names on the endpoint: `docker.io/library/app` is `library/app`;
`127.0.0.1:PORT/umoci/hello` is `127.0.0.1_PORT/umoci/hello` (a path component
cannot hold a `:`).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imagestore.v1 import imagestore_pb2 as pb
from tests.api.test_service import load
from tests.archives import ImageSpec, sha, tar_of
from tests.distribution.conftest import Served, serving, stored_index
from tests.distribution.containerd import host_architecture
from tests.registry.conftest import Published, Stub, pull
from tests.tools import require, run

APP_1 = ImageSpec(
    ["app:1"],
    [tar_of({"etc/os-release": b"ID=skopeo-test\n"}), tar_of({"bin/app": b"\x7fELF" * 300})],
    architecture=host_architecture(),
)
APP_2 = ImageSpec(
    ["app:2"],
    [tar_of({"etc/os-release": b"ID=skopeo-test\n"}), tar_of({"bin/app": b"\x7fELF2" * 300})],
    architecture=host_architecture(),
)


@pytest.fixture(scope="module")
def served(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("store") / "root", published.host) as running:
        load(running.stub, APP_1, APP_2)
        pull(running.stub, published.ref("umoci/hello:oci"), "linux/amd64")
        pull(running.stub, published.ref("umoci/multi:1"), "all")
        yield running


def skopeo_bytes(*args: str | Path) -> bytes:
    """skopeo's stdout as bytes (a manifest must not go through newline translation)."""
    command = [require("skopeo"), "--override-os", "linux", *map(str, args)]
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed: {result.stderr.decode()[-3000:]}")
    return result.stdout


def skopeo_json(*args: str | Path) -> Any:
    return json.loads(skopeo_bytes(*args))


def read_blob(stub: Stub, digest: str) -> bytes:
    return b"".join(r.chunk for r in stub.ReadBlob(pb.ReadBlobRequest(digest=digest), timeout=30))


def stored_tags(stub: Stub, canonical_repository: str) -> set[str]:
    """The tags of a repository, from ListImages."""
    return {
        name.canonical.rpartition(":")[2]
        for image in stub.ListImages(pb.ListImagesRequest()).images
        for name in image.repo_tags
        if name.canonical.rpartition(":")[0] == canonical_repository
    }


def inspect(stub: Stub, name: str, architecture: str = "") -> pb.InspectResponse:
    chosen = pb.Platform(os="linux", architecture=architecture) if architecture else None
    answer: pb.InspectResponse = stub.Inspect(
        pb.InspectRequest(image=name, platform=chosen, include_raw=True)
    )
    return answer


def read_layout(layout: Path) -> dict[str, Any]:
    """index.json of an OCI layout, after checking every blob hashes to its name."""
    for blob in (layout / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, blob
    index: dict[str, Any] = json.loads((layout / "index.json").read_text())
    return index


def layout_blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def copy_out(served: Served, path: str, layout: Path, tag: str, *extra: str) -> dict[str, Any]:
    """``skopeo copy`` of ``path`` on the endpoint to ``tag`` of a new OCI layout: the
    layout's one index.json entry, once every blob there hashed to its name."""
    skopeo_bytes("copy", *extra, "--src-tls-verify=false", served.url(path), f"oci:{layout}:{tag}")
    (entry,) = read_layout(layout)["manifests"]
    found: dict[str, Any] = entry
    return found


def unpack(layout: Path, tag: str, bundle: Path) -> Path:
    """umoci's unpack of a tag of the layout; the root file system's path."""
    run(require("umoci"), "unpack", "--image", f"{layout}:{tag}", bundle)
    return bundle / "rootfs"


# ---- inspect --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("store_name", "path"),
    [
        ("app:1", "library/app:1"),
        ("{upstream_host}/umoci/hello:oci", "{upstream}/umoci/hello:oci"),
    ],
)
def test_inspect_raw_is_the_stored_manifest_byte_for_byte_by_tag_and_by_digest(
    served: Served, store_name: str, path: str
) -> None:
    store_name = store_name.format(upstream_host=served.upstream_host)
    path = path.format(upstream=served.upstream)
    stored = inspect(served.stub, store_name)
    raw = skopeo_bytes("inspect", "--tls-verify=false", "--raw", served.url(path))
    assert raw == stored.raw_manifest
    assert sha(raw) == stored.manifest.digest
    repository = path.rpartition(":")[0]
    by_digest = served.url(f"{repository}@{stored.manifest.digest}")
    assert skopeo_bytes("inspect", "--tls-verify=false", "--raw", by_digest) == raw


def test_inspect_raw_of_a_multi_platform_name_is_the_stored_index(served: Served) -> None:
    index = stored_index(served.stub, f"{served.upstream_host}/umoci/multi:1")
    raw = skopeo_bytes(
        "inspect", "--tls-verify=false", "--raw", served.url(f"{served.upstream}/umoci/multi:1")
    )
    assert sha(raw) == index.index.digest
    assert raw == read_blob(served.stub, index.index.digest)
    listed = [m["digest"] for m in json.loads(raw)["manifests"]]
    assert listed == [child.manifest.digest for child in index.children]


def test_inspect_shows_the_stored_digests_layers_and_config(served: Served) -> None:
    stored = inspect(served.stub, "app:1")
    shown = skopeo_json("inspect", "--tls-verify=false", served.url("library/app:1"))
    assert shown["Digest"] == stored.manifest.digest
    assert shown["Layers"] == [layer.digest for layer in stored.layers]
    assert shown["Architecture"] == host_architecture()
    config = skopeo_bytes(
        "inspect", "--tls-verify=false", "--config", "--raw", served.url("library/app:1")
    )
    assert sha(config) == stored.image.id == APP_1.image_id
    assert config == stored.raw_config


@pytest.mark.parametrize("architecture", ["amd64", "arm64"])
def test_inspect_picks_each_platform_of_a_multi_platform_name(
    served: Served, architecture: str
) -> None:
    store_name = f"{served.upstream_host}/umoci/multi:1"
    stored = inspect(served.stub, store_name, architecture)
    shown = skopeo_json(
        "--override-arch",
        architecture,
        "inspect",
        "--tls-verify=false",
        served.url(f"{served.upstream}/umoci/multi:1"),
    )
    assert shown["Architecture"] == architecture
    assert shown["Layers"] == [layer.digest for layer in stored.layers]
    config = skopeo_bytes(
        "--override-arch",
        architecture,
        "inspect",
        "--tls-verify=false",
        "--config",
        "--raw",
        served.url(f"{served.upstream}/umoci/multi:1"),
    )
    assert sha(config) == stored.image.id


# ---- copy to an OCI layout -------------------------------------------------------------


def test_copy_of_an_oci_image_keeps_its_digest_and_unpacks(served: Served, tmp_path: Path) -> None:
    stored = inspect(served.stub, f"{served.upstream_host}/umoci/hello:oci")
    layout = tmp_path / "layout"
    entry = copy_out(served, f"{served.upstream}/umoci/hello:oci", layout, "hello")
    assert entry["digest"] == stored.manifest.digest
    assert layout_blob(layout, entry["digest"]) == stored.raw_manifest
    rootfs = unpack(layout, "hello", tmp_path / "bundle")
    assert (rootfs / "app" / "hello.sh").read_text() == "#!/bin/sh\necho hello from amd64\n"


def test_copy_of_a_docker_image_keeps_its_config_and_layers(served: Served, tmp_path: Path) -> None:
    """oci: holds OCI manifests only: skopeo rewrites the Docker manifest and config;
    the layers it copied are the stored blobs, and the config keeps their diff_ids."""
    stored = inspect(served.stub, "app:1")
    layout = tmp_path / "layout"
    entry = copy_out(served, "library/app:1", layout, "app")
    manifest = json.loads(layout_blob(layout, entry["digest"]))
    config = json.loads(layout_blob(layout, manifest["config"]["digest"]))
    assert config["rootfs"]["diff_ids"] == list(stored.diff_ids) == [sha(t) for t in APP_1.layers]
    assert [layer["digest"] for layer in manifest["layers"]] == [
        layer.digest for layer in stored.layers
    ]
    rootfs = unpack(layout, "app", tmp_path / "bundle")
    assert (rootfs / "etc" / "os-release").read_bytes() == b"ID=skopeo-test\n"
    assert (rootfs / "bin" / "app").read_bytes() == b"\x7fELF" * 300


def test_copy_all_of_a_multi_platform_name_keeps_the_index_and_every_child(
    served: Served, tmp_path: Path
) -> None:
    index = stored_index(served.stub, f"{served.upstream_host}/umoci/multi:1")
    layout = tmp_path / "layout"
    entry = copy_out(served, f"{served.upstream}/umoci/multi:1", layout, "multi", "--all")
    assert entry["digest"] == index.index.digest
    assert layout_blob(layout, entry["digest"]) == read_blob(served.stub, index.index.digest)
    architectures = set()
    for child in index.children:
        manifest = json.loads(layout_blob(layout, child.manifest.digest))
        config = json.loads(layout_blob(layout, manifest["config"]["digest"]))
        architectures.add(config["architecture"])
        for layer in manifest["layers"]:
            assert layout_blob(layout, layer["digest"]) == read_blob(served.stub, layer["digest"])
    assert architectures == {"amd64", "arm64"}


# ---- tags -----------------------------------------------------------------------------


def test_list_tags_shows_the_stored_tags(served: Served) -> None:
    listed = skopeo_json("list-tags", "--tls-verify=false", served.url("library/app"))
    assert sorted(listed["Tags"]) == ["1", "2"]
    assert set(listed["Tags"]) == stored_tags(served.stub, "docker.io/library/app")
    upstream = skopeo_json(
        "list-tags", "--tls-verify=false", served.url(f"{served.upstream}/umoci/hello")
    )
    assert upstream["Tags"] == ["oci"]
