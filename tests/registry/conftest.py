"""Real registries, images made by umoci and skopeo, and a real imagestore server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
import pytest

from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import Server, start_server
from tests.archives import ImageSpec, docker_archive, sha, tar_of
from tests.registry.distribution import (
    PASSWORD,
    USER,
    Distribution,
    skopeo,
    start_distribution,
)
from tests.tools import require, run

Stub = pb_grpc.ImageStoreServiceStub
#: fast retries and short timeouts, so fault cases finish in well under a second
FAST_RETRIES = (
    "--registry-backoff",
    "0.01",
    "--registry-attempts",
    "3",
    "--registry-idle-timeout",
    "2",
    "--registry-connect-timeout",
    "2",
)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distribution]:
    running = start_distribution(tmp_path_factory.mktemp("registry"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distribution]:
    running = start_distribution(tmp_path_factory.mktemp("auth-registry"), auth=True)
    yield running
    running.stop()


@pytest.fixture
def fresh_registry(tmp_path: Path) -> Iterator[Distribution]:
    """An empty registry of its own, for pushes that must really upload."""
    running = start_distribution(tmp_path / "fresh-registry")
    yield running
    running.stop()


@dataclass
class Published:
    """What skopeo put in the registry, as skopeo itself reports it."""

    host: str
    layout: Path
    #: name → (manifest digest, config digest, diff_ids)
    images: dict[str, tuple[str, str, list[str]]] = field(default_factory=dict)

    def ref(self, name: str) -> str:
        return f"{self.host}/{name}"


def remote_manifest(reference: str, *extra: str) -> tuple[bytes, dict[str, Any]]:
    raw = skopeo("inspect", "--tls-verify=false", *extra, "--raw", f"docker://{reference}")
    return raw.encode(), json.loads(raw)


def describe(reference: str, *extra: str) -> tuple[str, str, list[str]]:
    """(manifest digest, config digest, diff_ids) of a single-platform image."""
    raw, manifest = remote_manifest(reference, *extra)
    config = json.loads(
        skopeo(
            "inspect", "--tls-verify=false", *extra, "--config", "--raw", f"docker://{reference}"
        )
    )
    config_digest = manifest["config"]["digest"]
    return sha(raw), str(config_digest), list(config["rootfs"]["diff_ids"])


def _umoci_layout(root: Path) -> Path:
    """amd64 and arm64 images with one app layer each, plus a multi-arch index."""
    umoci = require("umoci")
    layout = root / "layout"
    run(umoci, "init", "--layout", layout)
    run(umoci, "new", "--image", f"{layout}:base")
    for arch in ("amd64", "arm64"):
        run(
            umoci,
            "config",
            "--image",
            f"{layout}:base",
            "--os",
            "linux",
            "--architecture",
            arch,
            "--tag",
            f"base-{arch}",
        )
        source = root / f"src-{arch}" / "app"
        source.mkdir(parents=True)
        (source / "hello.sh").write_text(f"#!/bin/sh\necho hello from {arch}\n")
        (source / "hello.sh").chmod(0o755)
        run(
            umoci,
            "insert",
            "--image",
            f"{layout}:base-{arch}",
            "--tag",
            f"v1-{arch}",
            source,
            "/app",
        )
        run(
            umoci,
            "config",
            "--image",
            f"{layout}:v1-{arch}",
            "--config.cmd",
            "/app/hello.sh",
            "--config.env",
            f"APP_ARCH={arch}",
        )
    index = json.loads((layout / "index.json").read_text())
    children = []
    for entry in index["manifests"]:
        tag = entry.get("annotations", {}).get("org.opencontainers.image.ref.name")
        if tag in ("v1-amd64", "v1-arm64"):
            arch = tag.removeprefix("v1-")
            platform = {"os": "linux", "architecture": arch}
            if arch == "arm64":
                platform["variant"] = "v8"
            children.append(
                {**{k: v for k, v in entry.items() if k != "annotations"}, "platform": platform}
            )
    document = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": children,
        }
    ).encode()
    digest = sha(document)
    (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).write_bytes(document)
    index["manifests"].append(
        {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest,
            "size": len(document),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }
    )
    (layout / "index.json").write_text(json.dumps(index))
    return layout


@pytest.fixture(scope="session")
def published(registry: Distribution, tmp_path_factory: pytest.TempPathFactory) -> Published:
    root = tmp_path_factory.mktemp("images")
    layout = _umoci_layout(root)
    archive = root / "docker-archive.tar"
    archive.write_bytes(
        docker_archive(
            ImageSpec(
                ["example/da:latest"],
                [tar_of({"etc/da": b"docker archive\n"}), tar_of({"bin/app": b"\x7fELF" * 500})],
            )
        )
    )
    target = f"docker://{registry.host}"
    copies = [
        ("umoci/hello:oci", [f"oci:{layout}:v1-amd64"]),
        ("umoci/hello:v2s2", ["--format", "v2s2", f"oci:{layout}:v1-amd64"]),
        ("umoci/multi:1", ["--all", f"oci:{layout}:multi"]),
        ("py/da:v2s2", [f"docker-archive:{archive}"]),
    ]
    for name, source in copies:
        skopeo("copy", "--dest-tls-verify=false", *source, f"{target}/{name}")
    found = Published(registry.host, layout)
    for name in ("umoci/hello:oci", "umoci/hello:v2s2", "py/da:v2s2"):
        found.images[name] = describe(found.ref(name))
    raw, index = remote_manifest(found.ref("umoci/multi:1"))
    found.images["umoci/multi:1"] = (sha(raw), "", [])
    for child in index["manifests"]:
        arch = child["platform"]["architecture"]
        found.images[f"umoci/multi:1@{arch}"] = describe(
            found.ref(f"umoci/multi@{child['digest']}")
        )
    return found


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = start_server(tmp_path / "root", "--listen", "127.0.0.1:0", *FAST_RETRIES)
    yield running
    stop_cleanly(running)


def stop_cleanly(running: Server) -> None:
    """Stop the server; it must exit 0 and never have logged a traceback."""
    log = "".join(running.stderr_lines)
    assert running.stop() == 0, log[-3000:]
    assert "Traceback" not in "".join(running.stderr_lines), log[-5000:]


@pytest.fixture
def stub(server: Server) -> Iterator[Stub]:
    with grpc.insecure_channel(server.address) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]


R = TypeVar("R", pb.PullResult, pb.PushResult)


@dataclass
class Transfer(Generic[R]):
    """A finished Pull or Push stream: its progress messages and its result (the
    last message; every one before it is progress)."""

    events: list[pb.Progress]
    last: R

    def statuses(self, layer: str | None = None) -> list[str]:
        """Docker's words of each line (of one layer's, by its short ID)."""
        return [e.text for e in self.events if layer is None or e.subject == layer]

    def phases(self, layer: str | None = None) -> list[int]:
        return [e.phase for e in self.events if layer is None or e.subject == layer]


def request_platform(text: str) -> pb.Platform:
    """ "os/arch[/variant]" as a request's Platform."""
    os, _, rest = text.partition("/")
    architecture, _, variant = rest.partition("/")
    return pb.Platform(os=os, architecture=architecture, variant=variant)


def _progress_then_result(
    messages: list[pb.PullResponse] | list[pb.PushResponse],
) -> list[pb.Progress]:
    kinds = [m.WhichOneof("response") for m in messages]
    assert kinds[-1] == "result", kinds
    assert set(kinds[:-1]) <= {"progress"}, kinds
    return [m.progress for m in messages[:-1]]


def pull(
    stub: Stub,
    image: str,
    *platforms: str,
    auth: pb.RegistryAuth | None = None,
    timeout: float = 60,
    all_tags: bool = False,
) -> Transfer[pb.PullResult]:
    """Pull ``image`` for ``platforms`` ("os/arch[/variant]"; "all": every one)."""
    request = pb.PullRequest(
        image=image,
        platforms=[request_platform(p) for p in platforms if p != "all"],
        all_platforms="all" in platforms,
        all_tags=all_tags,
        auth=auth,
    )
    messages = list(stub.Pull(request, timeout=timeout))
    return Transfer(_progress_then_result(messages), messages[-1].result)


def push(
    stub: Stub, image: str, *, platform: str = "", auth: pb.RegistryAuth | None = None
) -> Transfer[pb.PushResult]:
    chosen = request_platform(platform) if platform else None
    messages = list(stub.Push(pb.PushRequest(image=image, platform=chosen, auth=auth), timeout=60))
    return Transfer(_progress_then_result(messages), messages[-1].result)


def good_auth() -> pb.RegistryAuth:
    return pb.RegistryAuth(username=USER, password=PASSWORD)
