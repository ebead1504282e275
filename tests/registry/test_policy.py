"""Where the registry client will and will not go, without a network."""

from __future__ import annotations

import asyncio

import pytest
from imagestore import errors
from imagestore.api.servicer import check_credentials_transport
from imagestore.dockerconfig import ANONYMOUS, Credentials
from imagestore.registry.client import Host, RegistryClient, Repository
from imagestore.registry.options import RegistryOptions
from yarl import URL

BLOB = URL("https://registry.example/v2/app/blobs/sha256:" + "a" * 64)


def _redirect(location: str, *, registry: str = "https://registry.example") -> URL:
    client = RegistryClient(RegistryOptions())
    repo = Repository(client, "registry.example", Host(URL(registry)), "app", ANONYMOUS, "pull")
    return asyncio.run(client.check_redirect(repo, BLOB, location, "blob"))


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.1:8080/steal",
        "https://localhost/x",
        "https://[::1]/x",
        "https://169.254.169.254/latest/meta-data/",
    ],
)
def test_a_remote_registry_cannot_redirect_to_local_addresses(location: str) -> None:
    with pytest.raises(errors.DataLoss, match="local address"):
        _redirect(location)


def test_https_is_never_downgraded_to_http_for_a_remote_host() -> None:
    with pytest.raises(errors.DataLoss, match="https to http"):
        _redirect("http://cdn.example/blob")


def test_redirects_to_another_https_host_and_relative_ones_are_followed() -> None:
    assert _redirect("https://203.0.113.7/blob?sig=1") == URL("https://203.0.113.7/blob?sig=1")
    assert _redirect("/v2/app/blobs/other") == URL("https://registry.example/v2/app/blobs/other")


def test_a_loopback_registry_may_redirect_to_loopback() -> None:
    target = _redirect("http://127.0.0.1:9000/blob", registry="http://127.0.0.1:5000")
    assert target.port == 9000


def test_plain_http_is_allowed_for_loopback_and_listed_insecure_registries_only() -> None:
    client = RegistryClient(
        RegistryOptions(insecure_registries=("10.1.0.0/16", "lab.example:5000"))
    )
    assert client.plain_http_allowed("127.0.0.1:5000")
    assert client.plain_http_allowed("localhost:5000")
    assert client.plain_http_allowed("10.1.2.3:443")
    assert client.plain_http_allowed("lab.example:5000")
    assert not client.plain_http_allowed("lab.example:5001")
    assert not client.plain_http_allowed("10.2.0.1")
    assert not client.plain_http_allowed("registry.example")
    assert client.endpoints("docker.io", for_push=False) == ["https://registry-1.docker.io"]


@pytest.mark.parametrize(
    ("peer", "secure", "allowed"),
    [
        ("ipv4:127.0.0.1:40000", False, True),
        ("ipv6:[::1]:40000", False, True),
        ("unix:/run/imagestore.sock", False, True),
        ("ipv4:10.1.2.3:40000", False, False),
        ("ipv6:[2001:db8::1]:40000", False, False),
        ("ipv4:10.1.2.3:40000", True, True),
    ],
)
def test_credentials_travel_only_over_tls_or_from_this_machine(
    peer: str, secure: bool, allowed: bool
) -> None:
    credentials = Credentials(username="u", password="p")
    if allowed:
        check_credentials_transport(credentials, secure, peer)
    else:
        with pytest.raises(errors.FailedPrecondition, match="only accepted over TLS"):
            check_credentials_transport(credentials, secure, peer)
    check_credentials_transport(ANONYMOUS, False, "ipv4:10.1.2.3:40000")  # nothing to protect
