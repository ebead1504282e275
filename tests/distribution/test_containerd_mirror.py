"""containerd pulls through imagestore as its mirror, with pull-through on: the
image is on a real upstream ``docker-registry`` only, and the `hosts.toml` for the
upstream's host sends containerd to imagestore first (containerd adds
``?ns=<upstream>``, which names the allowlisted upstream).

The pull counts when ctr lists the image at the upstream's index digest, its
host platform unpacked (the top layer's chain ID committed, which containerd
does only after each layer's diff_id matched), the store then holds it under
the upstream's name, and the upstream's log shows requests from imagestore and
none from containerd: had the mirror failed, containerd would have fallen back to
the upstream itself and its user agent would be there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import Server
from tests.archives import sha
from tests.distribution.conftest import start_registry_server
from tests.distribution.containerd import Containerd, host_architecture, write_hosts_toml
from tests.registry.conftest import (
    FAST_RETRIES,
    Published,
    describe,
    remote_manifest,
    stop_cleanly,
)
from tests.registry.distribution import Distribution, skopeo, start_distribution

NAME = "mirror/multi:1"


@dataclass
class Mirrored:
    upstream: Distribution
    server: Server
    stub: pb_grpc.ImageStoreServiceStub
    #: the upstream's index digest, and its host platform's diff_ids
    index_digest: str
    diff_ids: list[str]


@pytest.fixture
def mirrored(published: Published, tmp_path: Path) -> Iterator[Mirrored]:
    upstream = start_distribution(tmp_path / "upstream", log_level="info")
    server: Server | None = None
    try:
        skopeo(
            "copy",
            "--all",
            "--dest-tls-verify=false",
            f"oci:{published.layout}:multi",
            f"docker://{upstream.host}/{NAME}",
        )
        raw, index = remote_manifest(f"{upstream.host}/{NAME}")
        child = next(
            c for c in index["manifests"] if c["platform"]["architecture"] == host_architecture()
        )
        _, _, diff_ids = describe(f"{upstream.host}/mirror/multi@{child['digest']}")
        server = start_registry_server(
            tmp_path / "root",
            "--registry-pull-through",
            "--registry-upstream",
            upstream.host,
            *FAST_RETRIES,
        )
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
            yield Mirrored(upstream, server, stub, sha(raw), diff_ids)
    finally:
        if server is not None:
            stop_cleanly(server)
        upstream.stop()


def user_agents(upstream: Distribution, offset: int) -> list[str]:
    """The User-Agent of each request the upstream answered since ``offset``."""
    with (upstream.root / "registry.log").open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    pattern = re.compile(r'http\.request\.useragent=(?:"([^"]*)"|(\S+))')
    agents = []
    for line in text.splitlines():
        if "response completed" in line:
            found = pattern.search(line)  # a request without one counts as ""
            agents.append((found[1] or found[2]) if found else "")
    return agents


def test_ctr_pulls_an_upstream_image_through_imagestore_as_its_mirror(
    mirrored: Mirrored, containerd: Containerd, tmp_path: Path
) -> None:
    upstream = mirrored.upstream.host
    assert mirrored.server.registry_address is not None
    hosts = tmp_path / "hosts"
    write_hosts_toml(
        hosts, upstream, f"http://{mirrored.server.registry_address}", f"http://{upstream}"
    )
    offset = mirrored.upstream.log_size()
    reference = f"{upstream}/{NAME}"
    containerd.pull_through_hosts(reference, hosts)
    listed = containerd.images()
    assert listed[reference].digest == mirrored.index_digest
    assert reference in containerd.ready_images()
    assert containerd.unpacked(mirrored.diff_ids), containerd.committed_snapshots()
    stored = mirrored.stub.Inspect(
        pb.InspectRequest(
            image=reference, platform=pb.Platform(os="linux", architecture=host_architecture())
        )
    )
    assert list(stored.diff_ids) == mirrored.diff_ids
    agents = user_agents(mirrored.upstream, offset)
    assert agents, "the upstream logged no request"
    assert all(agent.startswith("imagestore/") for agent in agents), agents
