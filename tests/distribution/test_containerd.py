"""containerd pulls from imagestore's OCI Distribution endpoint, as a node would:
directly (`ctr images pull --plain-http`) and through a `hosts.toml` mirror.

The store is filled over gRPC; each test gets a fresh containerd (tests/distribution/
containerd.py), so every blob it needs comes over the endpoint. An image pulled
counts when ctr lists it under the store's manifest or index digest and its layers
are unpacked into the snapshotter (the top layer's chain ID is committed, which
containerd does only after each layer's diff_id matched the config's).

The mirror tests pull names the store holds and no upstream has: had the mirror
failed, containerd's fallback to the upstream would find nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imagestore.v1 import imagestore_pb2 as pb
from tests.api.test_service import load
from tests.archives import ImageSpec, tar_of
from tests.distribution.conftest import Served, serving, stored_index
from tests.distribution.containerd import Containerd, host_architecture, write_hosts_toml
from tests.registry.conftest import Published, Stub, pull

#: a docker.io name no registry but the store has
LOADED = ImageSpec(
    ["imagestore-e2e/ctr-app:1"],
    [
        tar_of({"etc/os-release": b"ID=ctr-test\n"}),
        tar_of({"bin/app": b"\x7fELF ctr" * 400, "etc/app.conf": b"answer=42\n"}),
    ],
    architecture=host_architecture(),
)
#: the store's tag for the upstream's two-platform index, under the upstream's host,
#: where the upstream has nothing
MIRRORED = "mirrored/multi:1"


@pytest.fixture(scope="module")
def served(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("store") / "root", published.host) as running:
        load(running.stub, LOADED)
        pull(running.stub, published.ref("umoci/multi:1"), "all")
        running.stub.Tag(
            pb.TagRequest(source=published.ref("umoci/multi:1"), target=published.ref(MIRRORED))
        )
        yield running


def stored_manifest(stub: Stub, name: str) -> pb.InspectResponse:
    """The host platform's image a name reaches, as the store describes it."""
    chosen = pb.Platform(os="linux", architecture=host_architecture())
    answer: pb.InspectResponse = stub.Inspect(pb.InspectRequest(image=name, platform=chosen))
    return answer


def assert_pulled(daemon: Containerd, reference: str, digest: str, diff_ids: list[str]) -> None:
    """ctr lists ``reference`` at ``digest``, all its content local and unpacked."""
    listed = daemon.images()
    assert reference in listed, listed
    assert listed[reference].digest == digest
    assert reference in daemon.ready_images()
    assert daemon.unpacked(diff_ids), (diff_ids, daemon.committed_snapshots())


def test_ctr_pulls_a_loaded_image_over_plain_http_and_unpacks(
    served: Served, containerd: Containerd
) -> None:
    stored = stored_manifest(served.stub, "imagestore-e2e/ctr-app:1")
    reference = f"{served.address}/imagestore-e2e/ctr-app:1"
    containerd.pull_plain_http(reference)
    assert_pulled(containerd, reference, stored.manifest.digest, list(stored.diff_ids))
    assert containerd.images()[reference].media_type == stored.manifest.media_type


def test_ctr_pulls_a_multi_platform_index_and_unpacks_the_host_platform(
    served: Served, containerd: Containerd
) -> None:
    name = f"{served.upstream_host}/umoci/multi:1"
    stored = stored_manifest(served.stub, name)
    reference = f"{served.address}/{served.upstream}/umoci/multi:1"
    containerd.pull_plain_http(reference)
    digest = stored_index(served.stub, name).index.digest
    assert_pulled(containerd, reference, digest, list(stored.diff_ids))


def test_ctr_pulls_a_docker_io_name_through_a_hosts_toml_mirror(
    served: Served, containerd: Containerd, tmp_path: Path
) -> None:
    hosts = tmp_path / "hosts"
    write_hosts_toml(hosts, "docker.io", f"http://{served.address}", "https://registry-1.docker.io")
    stored = stored_manifest(served.stub, "imagestore-e2e/ctr-app:1")
    reference = "docker.io/imagestore-e2e/ctr-app:1"
    containerd.pull_through_hosts(reference, hosts)
    assert_pulled(containerd, reference, stored.manifest.digest, list(stored.diff_ids))


def test_ctr_pulls_another_registrys_name_through_a_mirror_with_ns(
    served: Served, containerd: Containerd, tmp_path: Path
) -> None:
    """containerd asks the mirror for `/v2/mirrored/multi/…?ns=<upstream>`: the store's
    name under that upstream answers."""
    hosts = tmp_path / "hosts"
    upstream = served.upstream_host
    write_hosts_toml(hosts, upstream, f"http://{served.address}", f"http://{upstream}")
    name = f"{upstream}/{MIRRORED}"
    stored = stored_manifest(served.stub, name)
    containerd.pull_through_hosts(name, hosts)
    assert_pulled(
        containerd, name, stored_index(served.stub, name).index.digest, list(stored.diff_ids)
    )
