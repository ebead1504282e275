"""Where the registry client will and will not go, without a network.

The address classes and their encodings, the guard's decisions for address
hosts and for resolved names (test-mode names: nothing is looked up), the
redirect rules that need no address, proxy settings read from an environment,
and the credentials-over-plain-text rule.
"""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from yarl import URL

from imagestore import errors
from imagestore.addresses import AddressClass, address_class, parse_address
from imagestore.api.servicer import check_credentials_transport
from imagestore.dockerconfig import ANONYMOUS, Credentials
from imagestore.registry.client import RegistryClient
from imagestore.registry.guard import AddressGuard, GuardedResolver, RefusalError
from imagestore.registry.options import RegistryOptions
from imagestore.registry.proxies import Proxies

PUBLIC, PRIVATE, LINK_LOCAL, LOOPBACK = (
    AddressClass.PUBLIC,
    AddressClass.PRIVATE,
    AddressClass.LINK_LOCAL,
    AddressClass.LOOPBACK,
)

# ---- address classes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "address", "rank"),
    [
        ("203.0.113.7", "203.0.113.7", PUBLIC),
        ("2001:db8::1", "2001:db8::1", PUBLIC),
        ("10.1.2.3", "10.1.2.3", PRIVATE),
        ("172.16.0.1", "172.16.0.1", PRIVATE),
        ("192.168.1.1", "192.168.1.1", PRIVATE),
        ("100.64.0.1", "100.64.0.1", PRIVATE),  # carrier-grade NAT
        ("fd12:3456::1", "fd12:3456::1", PRIVATE),  # unique local
        ("169.254.1.1", "169.254.1.1", LINK_LOCAL),
        ("169.254.169.254", "169.254.169.254", LINK_LOCAL),
        ("fe80::1%eth0", "fe80::1", LINK_LOCAL),
        ("fd00:ec2::254", "fd00:ec2::254", LINK_LOCAL),  # AWS metadata, inside fc00::/7
        ("100.100.100.200", "100.100.100.200", LINK_LOCAL),  # Alibaba metadata, inside CGNAT
        ("127.0.0.1", "127.0.0.1", LOOPBACK),
        ("127.9.9.9", "127.9.9.9", LOOPBACK),
        ("::1", "::1", LOOPBACK),
        ("0.0.0.0", "0.0.0.0", LOOPBACK),
        ("::", "::", LOOPBACK),
        ("224.0.0.1", "224.0.0.1", LOOPBACK),  # multicast: never a registry's business
        # encodings of an IPv4 address inside IPv6
        ("::ffff:127.0.0.1", "::ffff:7f00:1", LOOPBACK),  # mapped
        ("[::ffff:169.254.169.254]", "::ffff:a9fe:a9fe", LINK_LOCAL),
        ("::ffff:10.0.0.1", "::ffff:a00:1", PRIVATE),
        ("::127.0.0.1", "::7f00:1", LOOPBACK),  # compatible (deprecated)
        ("::ffff:0:127.0.0.1", "::ffff:0:7f00:1", LOOPBACK),  # translated (SIIT)
        ("64:ff9b::a9fe:a9fe", "64:ff9b::a9fe:a9fe", LINK_LOCAL),  # NAT64
        ("64:ff9b:1:7f00:0:100::", "64:ff9b:1:7f00:0:100::", LOOPBACK),  # local NAT64 /48
        ("2002:7f00:1::", "2002:7f00:1::", LOOPBACK),  # 6to4
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", None, LOOPBACK),  # Teredo, client 127.0.0.1
        # the IPv4 spellings inet_aton accepts
        ("2130706433", "127.0.0.1", LOOPBACK),
        ("0x7f.1", "127.0.0.1", LOOPBACK),
        ("0177.0.0.1", "127.0.0.1", LOOPBACK),
        ("127.1", "127.0.0.1", LOOPBACK),
        ("0xA9FEA9FE", "169.254.169.254", LINK_LOCAL),
        ("012.0.0.1", "10.0.0.1", PRIVATE),
        ("127.0.0.1.", "127.0.0.1", LOOPBACK),
    ],
)
def test_every_spelling_of_an_address_gets_the_class_of_where_it_leads(
    host: str, address: str | None, rank: AddressClass
) -> None:
    parsed = parse_address(host)
    assert parsed is not None
    if address is not None:
        assert parsed == ipaddress.ip_address(address)
    assert address_class(parsed) == rank


@pytest.mark.parametrize("name", ["registry.example", "1.2.3.4.5", "08.1.1.1", "4294967296"])
def test_names_and_impossible_numbers_are_not_addresses(name: str) -> None:
    assert parse_address(name) is None


# ---- the guard on address hosts --------------------------------------------------


def _check(url: str, limit: AddressClass, guard: AddressGuard | None = None) -> None:
    (guard or AddressGuard()).check_url(URL(url), limit)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/steal",
        "http://0.0.0.0:8080/",
        "http://[::]:8080/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[fe80::1%25eth0]/",
        "http://[fd12::1]/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://localhost/x",
        "http://registry.localhost/x",
    ],
)
def test_a_public_registry_cannot_send_us_to_an_internal_address(url: str) -> None:
    with pytest.raises(errors.AddressRefused) as caught:
        _check(url, PUBLIC)
    assert caught.value.reason == "ADDRESS_REFUSED"
    assert caught.value.status == "PERMISSION_DENIED"
    assert caught.value.metadata["registry_class"] == "public"
    assert caught.value.metadata["class"] in ("private", "link-local", "loopback")
    assert caught.value.metadata["address"]


def test_each_class_reaches_its_own_and_more_public_addresses_only() -> None:
    _check("https://203.0.113.7/blob", PUBLIC)
    _check("https://registry.example/blob", PUBLIC)  # a name: checked as it resolves
    _check("http://10.0.0.1/", PRIVATE)
    _check("http://203.0.113.7/", PRIVATE)
    with pytest.raises(errors.AddressRefused):
        _check("http://169.254.169.254/", PRIVATE)
    with pytest.raises(errors.AddressRefused):
        _check("http://[::ffff:127.0.0.1]/", LINK_LOCAL)
    for url in ("http://127.0.0.1:9000/", "http://[::]:9000/", "http://169.254.169.254/"):
        _check(url, LOOPBACK)  # a loopback registry may send us anywhere


def test_a_non_canonical_spelling_is_refused_even_where_its_class_is_allowed() -> None:
    with pytest.raises(errors.AddressRefused, match="non-canonical"):
        _check("http://2130706433:5000/", LOOPBACK)


def test_allowed_networks_count_as_public() -> None:
    guard = AddressGuard(allow_internal=["10.20.0.0/16", "fd00:1::/32"])
    _check("http://10.20.3.4/", PUBLIC, guard)
    _check("http://[::ffff:10.20.3.4]/", PUBLIC, guard)
    _check("http://[fd00:1::5]/", PUBLIC, guard)
    with pytest.raises(errors.AddressRefused):
        _check("http://10.21.0.1/", PUBLIC, guard)


def test_a_bad_network_is_a_clear_start_up_error() -> None:
    with pytest.raises(errors.InvalidArgument, match="--registry-allow-internal"):
        AddressGuard(allow_internal=["10.0.0.0/33"])


# ---- the guard on names (test-mode lookups: nothing leaves this process) ---------


def _resolve(guard: AddressGuard, name: str, limit: AddressClass) -> list[str]:
    async def scenario() -> list[str]:
        return [r["host"] for r in await GuardedResolver(guard, limit).resolve(name, 443)]

    return asyncio.run(scenario())


def test_a_name_is_checked_where_it_resolves_and_only_checked_addresses_are_returned() -> None:
    guard = AddressGuard(
        test_hosts=[
            "registry.test=127.0.0.1/public",
            "lan.test=127.0.0.2/private",
            "inside.test=127.0.0.3",
            "gone.test=",
        ]
    )
    assert _resolve(guard, "registry.test", PUBLIC) == ["127.0.0.1"]
    assert _resolve(guard, "lan.test", PRIVATE) == ["127.0.0.2"]
    for name, rank in (("lan.test", "private"), ("inside.test", "loopback")):
        with pytest.raises(RefusalError) as caught:
            _resolve(guard, name, PUBLIC)
        assert caught.value.error.metadata["class"] == rank
        assert caught.value.error.metadata["host"] == name
    with pytest.raises(OSError, match="does not resolve") as failed:
        _resolve(guard, "gone.test", LOOPBACK)
    assert not isinstance(failed.value, RefusalError)  # no address: no connection either
    with pytest.raises(OSError, match="does not resolve"):
        _resolve(guard, "never-listed.example", LOOPBACK)  # test mode looks nothing up


def test_each_lookup_is_answered_once_so_the_checked_address_is_the_one_used() -> None:
    # a rebinding name: public first, loopback next; each resolve is one lookup
    guard = AddressGuard(test_hosts=["rebind.test=127.0.0.1/public", "rebind.test=127.0.0.2"])
    assert _resolve(guard, "rebind.test", PUBLIC) == ["127.0.0.1"]
    with pytest.raises(RefusalError):
        _resolve(guard, "rebind.test", PUBLIC)
    assert _resolve(guard, "rebind.test", PUBLIC) == ["127.0.0.1"]


def test_test_mode_fences_every_connection_to_loopback() -> None:
    guard = AddressGuard(test_hosts=["registry.test=127.0.0.1/public"])
    with pytest.raises(errors.AddressRefused, match="loopback only") as caught:
        _check("http://203.0.113.7/", PUBLIC, guard)  # public, but not this machine
    assert caught.value.metadata["fence"] == "test mode"
    with pytest.raises(errors.InvalidArgument, match="not a loopback address"):
        AddressGuard(test_hosts=["registry.test=203.0.113.7/public"])


def test_the_registry_class_comes_from_the_host_as_named() -> None:
    guard = AddressGuard(
        test_hosts=["registry.test=127.0.0.1/public", "lan.test=127.0.0.2/private"]
    )

    def rank(host: str, direct: bool = True) -> AddressClass:
        return asyncio.run(guard.registry_class(host, direct=direct))

    assert rank("127.0.0.1") == LOOPBACK
    assert rank("localhost") == LOOPBACK
    assert rank("10.0.0.1") == PRIVATE
    assert rank("registry.test") == PUBLIC
    assert rank("lan.test") == PRIVATE
    assert rank("lan.test", direct=False) == PUBLIC  # through a proxy: not resolved here
    assert rank("nowhere.test") == PUBLIC  # does not resolve: the strictest


# ---- redirects: what needs no address --------------------------------------------

BLOB = URL("https://registry.example/v2/app/blobs/sha256:" + "a" * 64)


def _redirect(location: str, hops: int = 1) -> URL:
    return RegistryClient(RegistryOptions()).transport.redirect_target(BLOB, location, hops, "blob")


def test_https_is_never_downgraded_to_http_for_a_remote_host() -> None:
    with pytest.raises(errors.DataLoss, match="https to http"):
        _redirect("http://cdn.example/blob")


def test_redirects_to_other_schemes_and_past_the_limit_are_refused() -> None:
    with pytest.raises(errors.DataLoss, match="unusable location"):
        _redirect("file:///etc/passwd")
    with pytest.raises(errors.Unavailable, match="more than 10 redirects"):
        _redirect("https://cdn.example/blob", hops=11)


def test_redirects_to_another_https_host_and_relative_ones_are_followed() -> None:
    assert _redirect("https://203.0.113.7/blob?sig=1") == URL("https://203.0.113.7/blob?sig=1")
    assert _redirect("/v2/app/blobs/other") == URL("https://registry.example/v2/app/blobs/other")


def test_plain_http_is_allowed_for_loopback_and_listed_insecure_registries_only() -> None:
    client = RegistryClient(
        RegistryOptions(insecure_registries=("10.1.0.0/16", "lab.example:5000"))
    )
    assert client.trust.plain_http_allowed("127.0.0.1:5000")
    assert client.trust.plain_http_allowed("localhost:5000")
    assert client.trust.plain_http_allowed("10.1.2.3:443")
    assert client.trust.plain_http_allowed("lab.example:5000")
    assert not client.trust.plain_http_allowed("lab.example:5001")
    assert not client.trust.plain_http_allowed("10.2.0.1")
    assert not client.trust.plain_http_allowed("registry.example")
    assert client.endpoints("docker.io", for_push=False) == ["https://registry-1.docker.io"]


# ---- proxies, read explicitly ------------------------------------------------------


def test_proxy_variables_are_read_as_curl_and_urllib_read_them() -> None:
    proxies = Proxies(
        {
            "HTTPS_PROXY": "http://upper.example:3128",
            "https_proxy": "http://user:secret@lower.example:3128",  # lower case wins
            "ALL_PROXY": "proxy.example:8080",  # no scheme: http
            "NO_PROXY": "internal.example, .corp.example,10.0.0.0/8,lab.example:5000",
        }
    )
    chosen = proxies.for_url(URL("https://registry.example/v2/"))
    assert chosen is not None
    assert chosen.url == URL("http://lower.example:3128")
    assert chosen.authorization == "Basic dXNlcjpzZWNyZXQ="  # user:secret
    plain = proxies.for_url(URL("http://registry.example/v2/"))
    assert plain is not None
    assert plain.url == URL("http://proxy.example:8080")
    for bypassed in (
        "https://internal.example/v2/",
        "https://a.corp.example/v2/",
        "https://10.1.2.3/v2/",
        "http://lab.example:5000/v2/",
    ):
        assert proxies.for_url(URL(bypassed)) is None, bypassed
    assert proxies.for_url(URL("http://lab.example:5001/v2/")) is not None
    assert Proxies({}).for_url(URL("https://registry.example/")) is None
    assert Proxies({"https_proxy": "socks5://s.example:1080"}).by_scheme == {}


# ---- credentials over the wire -------------------------------------------------------


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
