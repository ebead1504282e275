"""A registry serving HTTPS with a private CA: trusted through --registry-ca,
Docker's certs.d, or --insecure-registry; refused otherwise (no silent fallback)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import start_server
from tests.pki import make_pki
from tests.registry.conftest import FAST_RETRIES, Published, pull, stop_cleanly
from tests.registry.distribution import Distribution, skopeo, start_distribution


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Distribution, Path]]:
    pki = make_pki(tmp_path_factory.mktemp("registry-pki"))
    running = start_distribution(
        tmp_path_factory.mktemp("tls-registry"), tls=(pki / "server.crt", pki / "server.key")
    )
    yield running, pki
    running.stop()


def _pull_with(tmp_path: Path, image: str, *options: str) -> list[str]:
    server = start_server(tmp_path / "root", "--listen", "127.0.0.1:0", *FAST_RETRIES, *options)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
            return list(pull(stub, image).last.image_ids)
    finally:
        stop_cleanly(server)


@pytest.fixture(scope="module")
def tls_image(tls_registry: tuple[Distribution, Path], published: Published) -> str:
    registry, _ = tls_registry
    image = f"{registry.host}/secure/hello:1"
    skopeo(
        "copy", "--dest-tls-verify=false", f"oci:{published.layout}:v1-amd64", f"docker://{image}"
    )
    return image


def test_an_untrusted_certificate_is_refused_not_downgraded(tmp_path: Path, tls_image: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _pull_with(tmp_path, tls_image, "--registry-certs-dir", str(tmp_path / "none"))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "not trusted" in str(caught.value.details())


def test_registry_ca_makes_the_certificate_trusted(
    tmp_path: Path, tls_image: str, tls_registry: tuple[Distribution, Path], published: Published
) -> None:
    _, pki = tls_registry
    ids = _pull_with(tmp_path, tls_image, "--registry-ca", str(pki / "ca.crt"))
    assert ids == [published.images["umoci/hello:oci"][1]]


def test_docker_certs_d_makes_the_certificate_trusted(
    tmp_path: Path, tls_image: str, tls_registry: tuple[Distribution, Path], published: Published
) -> None:
    registry, pki = tls_registry
    folder = tmp_path / "certs.d" / registry.host
    folder.mkdir(parents=True)
    shutil.copy(pki / "ca.crt", folder / "ca.crt")
    ids = _pull_with(tmp_path, tls_image, "--registry-certs-dir", str(tmp_path / "certs.d"))
    assert ids == [published.images["umoci/hello:oci"][1]]


def test_an_insecure_registry_skips_verification(
    tmp_path: Path, tls_image: str, tls_registry: tuple[Distribution, Path], published: Published
) -> None:
    registry, _ = tls_registry
    ids = _pull_with(tmp_path, tls_image, "--insecure-registry", registry.host)
    assert ids == [published.images["umoci/hello:oci"][1]]
