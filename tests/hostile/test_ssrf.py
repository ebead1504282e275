"""A registry that points imagestore at internal addresses: the SSRF guard, from outside.

The registry is the hostile test registry on loopback, named ``registry.test``:
the server runs in test mode (``--registry-test-resolve``), where that name
resolves to 127.0.0.1 but is classed public, other test names stand for names
that resolve inward or not at all, nothing is looked up in DNS, and no
connection goes anywhere but loopback. So no packet leaves this machine, even
if the guard failed (its test-mode fence would refuse, with another message).

For each URL a registry hands back (a 3xx ``Location`` on a blob GET, the 202
``Location`` of an upload session on push, the Bearer token realm, a 307 from
the token service) and each address form (loopback, unspecified, IPv4-mapped,
integer, link-local, metadata over IPv4 and IPv6, ULA, private, CGNAT, a name
that resolves to loopback or to a private address, ``localhost``) the bounds
enforced are:

- the call fails PERMISSION_DENIED with ErrorInfo reason ``ADDRESS_REFUSED``
  and metadata naming the refused ``address`` and its ``class`` (the
  registry's ``registry_class`` is public);
- a name that does not resolve fails UNAVAILABLE naming the ``host``;
- nothing connected: loopback listeners on the port the URLs name (IPv4 and
  IPv6) count no connection, and no upload reached the registry;
- nothing is stored (only the seed, Check ok, no ingest), and health and
  Inspect answer within 2 s throughout.

Also: the address a name was checked at is the one connected to (a name that
answers public, then loopback, reaches only the first), and
``--registry-allow-internal`` lets a deliberate exception through.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from imagestore.v1 import imagestore_pb2 as pb
from tests.archives import tar_of
from tests.hostile.conftest import Target, rpc_error, start_target
from tests.registry.conftest import pull, push
from tests.registry.hostile import HostileRegistry, Image, Listener, make_image

#: the test names: a remote-looking registry, names resolving inward, one not at all
TEST_NAMES = (
    "registry.test=127.0.0.1/public",
    "inside.test=127.0.0.1",
    "lan.test=127.0.0.1/private",
    "gone.test=",
    # a rebinding name: public at the first lookup, loopback at the next
    "rebind.test=127.0.0.1/public",
    "rebind.test=127.0.0.2",
)
OPTIONS = (
    *(f"--registry-test-resolve={entry}" for entry in TEST_NAMES),
    "--insecure-registry",
    "registry.test",
    "--registry-backoff",
    "0.01",
    "--registry-attempts",
    "2",
    "--registry-connect-timeout",
    "5",
)


@dataclass(frozen=True)
class Form:
    """An address a registry may name, and what the refusal must say about it."""

    host: str
    address: str | None  # None: the name does not resolve
    rank: str | None


FORMS = {
    "loopback": Form("127.0.0.1", "127.0.0.1", "loopback"),
    "loopback-v6": Form("[::1]", "::1", "loopback"),
    "unspecified": Form("0.0.0.0", "0.0.0.0", "loopback"),
    "unspecified-v6": Form("[::]", "::", "loopback"),
    "mapped-loopback": Form("[::ffff:127.0.0.1]", "::ffff:7f00:1", "loopback"),
    "mapped-metadata": Form("[::ffff:169.254.169.254]", "::ffff:a9fe:a9fe", "link-local"),
    "integer": Form("2130706433", "127.0.0.1", "loopback"),
    "localhost": Form("localhost", "127.0.0.1", "loopback"),
    "link-local": Form("169.254.7.7", "169.254.7.7", "link-local"),
    "link-local-v6": Form("[fe80::1]", "fe80::1", "link-local"),
    "metadata": Form("169.254.169.254", "169.254.169.254", "link-local"),
    "metadata-v6": Form("[fd00:ec2::254]", "fd00:ec2::254", "link-local"),
    "ula": Form("[fd12:3456::1]", "fd12:3456::1", "private"),
    "private": Form("10.0.0.1", "10.0.0.1", "private"),
    "cgnat": Form("100.64.0.1", "100.64.0.1", "private"),
    "name-to-loopback": Form("inside.test", "127.0.0.1", "loopback"),
    "name-to-private": Form("lan.test", "127.0.0.1", "private"),
    "dns-failure": Form("gone.test", None, None),
}
KINDS = ("blob-redirect", "upload-location", "token-realm", "token-redirect")


@dataclass
class Remote:
    """The server in test mode, and the listeners every refused URL points at."""

    target: Target
    v4: Listener
    v6: Listener

    @property
    def accepted(self) -> int:
        return self.v4.accepted + self.v6.accepted


def _listeners() -> tuple[Listener, Listener]:
    """Loopback listeners on one port number, IPv4 and IPv6."""
    for _ in range(20):
        v4 = Listener("127.0.0.1")
        try:
            return v4, Listener("::1", v4.port)
        except OSError:  # that port is taken on ::1: try another
            v4.close()
    raise AssertionError("no port free on both 127.0.0.1 and ::1")


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    server, channel, target = start_target(tmp_path_factory.mktemp("ssrf") / "root", *OPTIONS)
    v4, v6 = _listeners()
    try:
        yield Remote(target, v4, v6)
    finally:
        v4.close()
        v6.close()
        channel.close()
        log = "".join(server.stderr_lines)
        assert server.stop() == 0, log[-3000:]
        assert "Traceback" not in log, log[-5000:]


@pytest.fixture
def registry() -> Iterator[HostileRegistry]:
    """A registry of its own per test: nothing it learned (a challenge) carries over."""
    with HostileRegistry().running() as running:
        yield running


def _name(registry: HostileRegistry, repository: str) -> str:
    return f"registry.test:{registry.port}/{repository}"


def _image(label: str) -> Image:
    return make_image([tar_of({f"etc/{label}": label.encode() * 100})])


def _attempt(remote: Remote, registry: HostileRegistry, kind: str, url: str) -> grpc.RpcError:
    """Make the registry hand back ``url`` as ``kind`` and run the call that meets it."""
    stub = remote.target.stub
    image = _image(f"{kind}-{url}")
    registry.add_image("team/app", "1", image)
    if kind == "blob-redirect":
        registry.faults[image.layer_digests[0]] = f"redirect:{url}"
    elif kind == "upload-location":
        registry.upload_location = url
    elif kind == "token-realm":
        registry.token_auth, registry.token_realm = "", url
    else:  # the realm is the registry's own (by its test name), which redirects
        registry.token_auth, registry.token_redirect = "", f"{url}/token"
        registry.token_realm = f"http://{_name(registry, 'token')}"
    if kind != "upload-location":
        with pytest.raises(grpc.RpcError) as caught:
            pull(stub, _name(registry, "team/app:1"), timeout=60)
        return caught.value
    name = _name(registry, "team/pushed:1")
    stub.Tag(pb.TagRequest(source="example/seed:1", target=name), timeout=30)
    try:
        with pytest.raises(grpc.RpcError) as caught:
            push(stub, name)
    finally:
        stub.Remove(pb.RemoveRequest(images=[name]), timeout=30)
    return caught.value


def _handed_back(registry: HostileRegistry, kind: str) -> int:
    """How often the registry answered with the URL under test."""
    if kind == "blob-redirect":
        return sum(registry.downloads(digest) for digest in registry.faults)
    if kind == "upload-location":
        return registry.requests[("POST", "upload")]
    if kind == "token-realm":
        return len(registry.all_authorizations)  # the manifest GET, answered 401 + realm
    return registry.requests[("GET", "/token")]


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("kind", KINDS)
def test_a_registry_cannot_send_us_inward(
    remote: Remote, registry: HostileRegistry, kind: str, form: str
) -> None:
    expected = FORMS[form]
    url = f"https://{expected.host}:{remote.v4.port}/v2/elsewhere"
    connections = remote.accepted
    with remote.target.watch():
        error = _attempt(remote, registry, kind, url)
    code, reason, metadata = rpc_error(error)
    if expected.address is None:
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "REGISTRY_UNAVAILABLE")
        assert "does not resolve" in str(error.details())
        assert metadata["host"] == expected.host
    else:
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ADDRESS_REFUSED")
        assert metadata["address"] == expected.address
        assert metadata["class"] == expected.rank
        assert metadata["registry_class"] == "public"
        assert "fence" not in metadata  # the guard refused, not the test-mode fence
    assert _handed_back(registry, kind) >= 1  # the registry did hand the URL back
    assert remote.accepted == connections, "something connected to the address named"
    assert registry.requests[("PATCH", "upload")] == 0
    assert registry.requests[("PUT", "upload")] == 0
    remote.target.assert_clean()


def test_a_name_is_connected_to_at_the_address_it_was_checked_at(
    remote: Remote, registry: HostileRegistry
) -> None:
    """rebind.test answers public (127.0.0.1) once, then loopback (127.0.0.2): one
    lookup per connection, so the blob comes from the first and the second
    address never sees a connection."""
    image = _image("rebind")
    registry.add_image("team/app", "1", image)
    with HostileRegistry().running() as cdn, Listener("127.0.0.2", cdn.port) as rebound:
        layer = image.layer_digests[0]
        cdn.blobs[layer] = image.layers[0]
        registry.faults[layer] = f"redirect:http://rebind.test:{cdn.port}/v2/cdn/blobs/{layer}"
        with remote.target.watch():
            pulled = pull(remote.target.stub, _name(registry, "team/app:1"), timeout=60)
        assert list(pulled.last.image_ids) == [image.config_digest]
        assert cdn.downloads(layer) == 1
        assert rebound.accepted == 0
    remote.target.stub.Remove(pb.RemoveRequest(images=[_name(registry, "team/app:1")]))
    remote.target.stub.Prune(pb.PruneRequest(all=False), timeout=30)
    remote.target.assert_clean()


@pytest.fixture
def server_options() -> tuple[str, ...]:
    return (*OPTIONS, "--registry-allow-internal", "127.0.0.1/32")


def test_an_allowed_network_is_a_deliberate_exception(
    target: Target, registry: HostileRegistry, tmp_path: Path
) -> None:
    image = _image("allowed")
    registry.add_image("team/app", "1", image)
    layer = image.layer_digests[0]
    with HostileRegistry().running() as cdn:
        cdn.blobs[layer] = image.layers[0]
        registry.faults[layer] = f"redirect:http://127.0.0.1:{cdn.port}/v2/cdn/blobs/{layer}"
        pulled = pull(target.stub, _name(registry, "team/app:1"), timeout=60)
        assert list(pulled.last.image_ids) == [image.config_digest]
        assert cdn.downloads(layer) == 1
        # the exception is that network only: loopback over IPv6 stays refused
        other = _image("not-allowed")
        registry.add_image("team/other", "1", other)
        registry.faults[other.layer_digests[0]] = f"redirect:http://[::1]:{cdn.port}/x"
        with pytest.raises(grpc.RpcError) as caught:
            pull(target.stub, _name(registry, "team/other:1"), timeout=60)
    code, reason, metadata = rpc_error(caught.value)
    assert (code, reason, metadata["address"]) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "ADDRESS_REFUSED",
        "::1",
    )


#: URLs yarl cannot read (a bad IPv6 literal, a port that is not a number, one too large)
MALFORMED = {
    "ipv6": "http://[::1/v2/elsewhere",
    "port-word": "http://registry.test:port/v2/elsewhere",
    "port-big": "http://registry.test:99999/v2/elsewhere",
}


@pytest.mark.parametrize("form", list(MALFORMED))
@pytest.mark.parametrize("kind", KINDS)
def test_a_url_handed_back_that_cannot_be_read_is_an_invalid_response(
    remote: Remote, registry: HostileRegistry, kind: str, form: str
) -> None:
    connections = remote.accepted
    with remote.target.watch():
        error = _attempt(remote, registry, kind, MALFORMED[form])
    code, reason, _ = rpc_error(error)
    assert (code, reason) == (grpc.StatusCode.DATA_LOSS, "REGISTRY_RESPONSE_INVALID"), error
    assert _handed_back(registry, kind) >= 1
    assert remote.accepted == connections
    remote.target.assert_clean()
