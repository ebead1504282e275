"""Challenges, Docker config files and credential helpers; server-side
credentials and mirrors against the real registry."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from imagestore import errors
from imagestore.dockerconfig import ANONYMOUS, Credentials, DockerConfig
from imagestore.registry.auth import Challenge, parse_challenges
from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import Server, start_server
from tests.archives import tar_of
from tests.registry.conftest import FAST_RETRIES, Published, Stub, pull, stop_cleanly
from tests.registry.distribution import PASSWORD, USER, Distribution, skopeo
from tests.registry.hostile import HostileRegistry, make_image


def test_a_bearer_challenge_is_parsed_with_quoted_commas_and_escapes() -> None:
    header = (
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:a/b:pull,push", Basic realm="q\\"uoted"'
    )
    assert parse_challenges(header) == [
        Challenge(
            "bearer",
            {
                "realm": "https://auth.example/token",
                "service": "registry.example",
                "scope": "repository:a/b:pull,push",
            },
        ),
        Challenge("basic", {"realm": 'q"uoted'}),
    ]


def test_credentials_never_show_their_secret() -> None:
    credentials = Credentials(username="me", password="hunter2")
    assert "hunter2" not in repr(credentials)
    assert "hunter2" not in credentials.cache_key
    assert credentials.cache_key != Credentials(username="me", password="other").cache_key


def _config(tmp_path: Path, document: dict[str, object]) -> DockerConfig:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document))
    return DockerConfig(path)


def test_auths_entries_apply_only_to_the_registries_they_name(tmp_path: Path) -> None:
    auth = base64.b64encode(b"user:pass").decode()
    config = _config(
        tmp_path,
        {
            "auths": {
                "registry.example:5000": {"auth": auth},
                "https://index.docker.io/v1/": {"auth": auth},
            }
        },
    )
    assert config.lookup("registry.example:5000") == Credentials("user", "pass")
    assert config.lookup("docker.io") == Credentials("user", "pass")
    assert config.lookup("elsewhere.example") == ANONYMOUS


@pytest.fixture
def helper_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `docker-credential-test` program that answers for one server."""
    folder = tmp_path / "bin"
    folder.mkdir()
    program = folder / "docker-credential-test"
    program.write_text(
        "#!/bin/sh\n"
        "read server\n"
        'if [ "$server" = "helped.example" ]; then\n'
        '  echo \'{"ServerURL":"helped.example","Username":"bot","Secret":"s3cret"}\'\n'
        "else\n"
        "  echo 'credentials not found in native keychain'; exit 1\n"
        "fi\n"
    )
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return program


def test_a_credential_helper_is_asked_for_its_registry(
    tmp_path: Path, helper_on_path: Path
) -> None:
    config = _config(tmp_path, {"credHelpers": {"helped.example": "test"}})
    assert config.lookup("helped.example") == Credentials("bot", "s3cret")
    assert config.lookup("other.example") == ANONYMOUS


def test_the_creds_store_answers_for_registries_listed_in_auths(
    tmp_path: Path, helper_on_path: Path
) -> None:
    config = _config(
        tmp_path, {"credsStore": "test", "auths": {"helped.example": {}, "none.example": {}}}
    )
    assert config.lookup("helped.example") == Credentials("bot", "s3cret")
    assert config.lookup("none.example") == ANONYMOUS  # "credentials not found"


def test_a_missing_helper_is_a_clear_error(tmp_path: Path) -> None:
    config = _config(tmp_path, {"credHelpers": {"x.example": "absent-helper"}})
    with pytest.raises(errors.FailedPrecondition, match="docker-credential-absent-helper"):
        config.lookup("x.example")


def test_server_side_credentials_are_used_for_the_registry_they_name(
    tmp_path: Path, published: Published, auth_registry: Distribution
) -> None:
    target = f"{auth_registry.host}/server-side/hello:1"
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        f"{USER}:{PASSWORD}",
        f"oci:{published.layout}:v1-amd64",
        f"docker://{target}",
    )
    config = tmp_path / "registries.json"
    secret = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config.write_text(json.dumps({"auths": {auth_registry.host: {"auth": secret}}}))
    server = start_server(
        tmp_path / "root",
        "--listen",
        "127.0.0.1:0",
        *FAST_RETRIES,
        "--registry-config",
        str(config),
    )
    try:
        with _stub(server) as stub:
            pulled = pull(stub, target)
            assert list(pulled.last.image_ids) == [published.images["umoci/hello:oci"][1]]
            assert PASSWORD not in "".join(server.stderr_lines)
    finally:
        stop_cleanly(server)


def test_docker_hub_names_go_to_the_mirror(
    tmp_path: Path, published: Published, registry: Distribution
) -> None:
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        f"oci:{published.layout}:v1-amd64",
        f"docker://{registry.host}/library/mirrored:1",
    )
    server = start_server(
        tmp_path / "root",
        "--listen",
        "127.0.0.1:0",
        *FAST_RETRIES,
        "--registry-mirror",
        f"http://{registry.host}",
    )
    try:
        with _stub(server) as stub:
            pulled = pull(stub, "mirrored:1")
            assert list(pulled.last.image_ids) == [published.images["umoci/hello:oci"][1]]
            assert pulled.last.status == "Downloaded newer image for mirrored:1"
            assert "Pulling from library/mirrored" in pulled.statuses()
    finally:
        stop_cleanly(server)


@contextmanager
def _stub(server: Server) -> Iterator[Stub]:
    with grpc.insecure_channel(server.address) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]


@pytest.fixture
def token_registry() -> Iterator[HostileRegistry]:
    with HostileRegistry().running() as registry:
        registry.add_image("tokens/app", "1", make_image([tar_of({"a": b"token"})]))
        yield registry


def test_anonymous_bearer_tokens_are_fetched_once_and_cached(
    stub: Stub, token_registry: HostileRegistry
) -> None:
    token_registry.token_auth = ""
    pull(stub, f"{token_registry.host}/tokens/app:1")
    pull(stub, f"{token_registry.host}/tokens/app:1")
    assert token_registry.tokens_issued == 1


def test_a_token_the_registry_stops_taking_is_replaced(
    stub: Stub, token_registry: HostileRegistry
) -> None:
    token_registry.token_auth = ""
    pull(stub, f"{token_registry.host}/tokens/app:1")
    token_registry.revoked.add(1)  # the cached token is now refused with a 401
    again = pull(stub, f"{token_registry.host}/tokens/app:1")
    assert again.last.status.startswith("Image is up to date")
    assert token_registry.tokens_issued == 2


def test_a_token_service_that_wants_credentials_gets_them(
    stub: Stub, token_registry: HostileRegistry
) -> None:
    token_registry.token_auth = "robot:token-secret"
    with pytest.raises(grpc.RpcError) as caught:
        pull(stub, f"{token_registry.host}/tokens/app:1")
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    auth = pb.RegistryAuth(username="robot", password="token-secret")
    pulled = pull(stub, f"{token_registry.host}/tokens/app:1", auth=auth)
    assert len(pulled.last.image_ids) == 1
    assert token_registry.tokens_issued == 1


def test_an_identity_token_is_exchanged_with_oauth2(
    stub: Stub, token_registry: HostileRegistry
) -> None:
    token_registry.token_auth = "robot:token-secret"  # GET with Basic would need these
    token_registry.refresh_token = "refresh-123"
    with pytest.raises(grpc.RpcError) as caught:
        pull(stub, f"{token_registry.host}/tokens/app:1", auth=pb.RegistryAuth(identity_token="x"))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    auth = pb.RegistryAuth(username="robot", identity_token="refresh-123")
    pulled = pull(stub, f"{token_registry.host}/tokens/app:1", auth=auth)
    assert len(pulled.last.image_ids) == 1


def test_authorization_does_not_follow_a_redirect_to_another_host(
    stub: Stub, token_registry: HostileRegistry
) -> None:
    token_registry.token_auth = ""
    image = make_image([tar_of({"cdn": b"served elsewhere"})])
    token_registry.add_image("tokens/cdn", "1", image)
    with HostileRegistry().running() as cdn:
        layer = image.layer_digests[0]
        cdn.blobs[layer] = image.layers[0]
        token_registry.faults[layer] = f"redirect:http://{cdn.host}/v2/cdn/blobs/{layer}"
        pulled = pull(stub, f"{token_registry.host}/tokens/cdn:1")
        assert list(pulled.last.image_ids) == [image.config_digest]
        assert cdn.authorizations == [""]
    assert any(a.startswith("Bearer ") for a in token_registry.authorizations)


def test_https_proxy_and_no_proxy_are_honoured(tmp_path: Path) -> None:
    """A registry name that resolves nowhere is reachable only through the proxy
    (here the hostile registry, which also serves proxied requests)."""
    image = make_image([tar_of({"p": b"through the proxy"})])
    with HostileRegistry().running() as proxy:
        proxy.add_image("proxied/app", "1", image)
        name = "registry.invalid:5000/proxied/app:1"
        for no_proxy, works in (("", True), ("registry.invalid", False)):
            env = {"HTTP_PROXY": f"http://{proxy.host}", "HTTPS_PROXY": f"http://{proxy.host}"}
            env["NO_PROXY"] = no_proxy
            server = start_server(
                tmp_path / f"root-{works}",
                "--listen", "127.0.0.1:0", *FAST_RETRIES,
                "--insecure-registry", "registry.invalid:5000",
                env=env,
            )  # fmt: skip
            try:
                with _stub(server) as stub:
                    if works:
                        pulled = pull(stub, name)
                        assert list(pulled.last.image_ids) == [image.config_digest]
                    else:
                        with pytest.raises(grpc.RpcError) as caught:
                            pull(stub, name)
                        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            finally:
                stop_cleanly(server)
        assert proxy.downloads(image.layer_digests[0]) == 1


# ---- where credentials may go ---------------------------------------------------------


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_a_mirror_gets_its_own_server_side_credentials_never_the_requests(
    tmp_path: Path,
) -> None:
    """A docker.io pull with request credentials, through a mirror that asks for
    Basic credentials at its token service and records every Authorization."""
    image = make_image([tar_of({"m": b"from the mirror"})])
    hub = pb.RegistryAuth(username="hub-user", password="hub-secret")
    with HostileRegistry().running() as mirror:
        mirror.add_image("library/mirrored", "1", image)
        mirror.token_auth = ""  # anonymous tokens: a client with credentials sends them
        config = tmp_path / "registries.json"
        secret = base64.b64encode(b"mirror-bot:mirror-secret").decode()
        config.write_text(json.dumps({"auths": {mirror.host: {"auth": secret}}}))
        for configured in (False, True):
            if configured:  # now the mirror wants the credentials configured for it
                mirror.token_auth = "mirror-bot:mirror-secret"
            mirror.token_authorizations.clear()
            extra = ("--registry-config", str(config)) if configured else ()
            server = start_server(
                tmp_path / f"root-{configured}",
                "--listen", "127.0.0.1:0", *FAST_RETRIES,
                "--registry-mirror", f"http://{mirror.host}", *extra,
            )  # fmt: skip
            try:
                with _stub(server) as stub:
                    pulled = pull(stub, "mirrored:1", auth=hub)
                    assert list(pulled.last.image_ids) == [image.config_digest]
            finally:
                stop_cleanly(server)
            wanted = _basic("mirror-bot", "mirror-secret") if configured else ""
            assert mirror.token_authorizations == [wanted]
        seen = mirror.token_authorizations + mirror.all_authorizations
        assert not any(
            a.startswith("Basic ") and a != _basic("mirror-bot", "mirror-secret") for a in seen
        )
        assert _basic("hub-user", "hub-secret") not in seen


def test_netrc_credentials_never_reach_a_redirect_target(tmp_path: Path) -> None:
    """~/.netrc names the CDN a blob redirect leads to; the CDN sees no Authorization
    (aiohttp's trust_env would have sent it the netrc pair)."""
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text("machine 127.0.0.1 login netrc-user password netrc-secret\n")
    netrc.chmod(0o600)
    image = make_image([tar_of({"n": b"behind a redirect"})])
    layer = image.layer_digests[0]
    with HostileRegistry().running() as registry, HostileRegistry().running() as cdn:
        registry.add_image("netrc/app", "1", image)
        cdn.blobs[layer] = image.layers[0]
        registry.faults[layer] = f"redirect:http://{cdn.host}/v2/cdn/blobs/{layer}"
        server = start_server(
            tmp_path / "root",
            "--listen", "127.0.0.1:0", *FAST_RETRIES,
            env={"HOME": str(home), "NETRC": str(netrc)},
        )  # fmt: skip
        try:
            with _stub(server) as stub:
                # the registry by name (localhost), the CDN by the address netrc names
                pulled = pull(stub, f"localhost:{registry.port}/netrc/app:1")
                assert list(pulled.last.image_ids) == [image.config_digest]
        finally:
            stop_cleanly(server)
        assert cdn.authorizations == [""]


def test_a_token_service_redirect_keeps_basic_credentials_at_the_realms_origin(
    stub: Stub, token_registry: HostileRegistry
) -> None:
    token_registry.token_auth = ""
    with HostileRegistry().running() as elsewhere:
        elsewhere.token_auth = ""  # issues tokens to anyone (the registry takes them)
        token_registry.token_redirect = f"http://{elsewhere.host}/token"
        auth = pb.RegistryAuth(username="robot", password="token-secret")
        pulled = pull(stub, f"{token_registry.host}/tokens/app:1", auth=auth)
        assert len(pulled.last.image_ids) == 1
        assert token_registry.token_authorizations == [_basic("robot", "token-secret")]
        assert elsewhere.token_authorizations == [""]


def test_a_refresh_token_request_is_never_redirected(
    stub: Stub, token_registry: HostileRegistry
) -> None:
    token_registry.token_auth = "robot:token-secret"
    token_registry.refresh_token = "refresh-123"
    with HostileRegistry().running() as elsewhere:
        elsewhere.refresh_token = "refresh-123"
        token_registry.token_redirect = f"http://{elsewhere.host}/token"  # a 307: POST again
        auth = pb.RegistryAuth(username="robot", identity_token="refresh-123")
        with pytest.raises(grpc.RpcError) as caught:
            pull(stub, f"{token_registry.host}/tokens/app:1", auth=auth)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "never redirected" in str(caught.value.details())
        assert token_registry.requests[("POST", "/token")] == 1
        assert elsewhere.requests[("POST", "/token")] == 0
        assert elsewhere.token_authorizations == []
