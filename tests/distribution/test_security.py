"""The endpoint's gates and bounds on the real server: tokens (Bearer and
Basic), TLS and mutual TLS with the gRPC server's files, refusal of a plain
non-loopback listener, the request cap (429), the send timeout, header bounds."""

from __future__ import annotations

import base64
import hashlib
import http.client
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imagestore.store.store import Store
from tests.api.conftest import PROJECT, Server, wait_until
from tests.distribution.conftest import (
    Client,
    HeldDownload,
    big_layer,
    start_registry_server,
)
from tests.pki import make_pki
from tests.store.builders import Built, build_image

TOKEN = "registry-test-token"
#: large enough that the server's writes wait for a reader with a tiny buffer
HELD_BLOB = 16 << 20


@dataclass
class Gated:
    server: Server
    image: Built


def seed(root: Path, size: int = 4096) -> Built:
    with Store.open(root) as store:
        return build_image(store, [big_layer(size, seed=3)], names=["gated:1"])


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gated]:
    tmp_path = tmp_path_factory.mktemp("tokens")
    root = tmp_path / "root"
    image = seed(root)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN}\nanother-token\n")
    server = start_registry_server(root, "--auth-token-file", str(tokens))
    yield Gated(server, image)
    assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        (f"Bearer {TOKEN}", 200),
        ("Bearer another-token", 200),
        (basic("anyone", TOKEN), 200),  # docker login / skopeo --creds: the token as password
        (basic("", TOKEN), 200),
        ("Bearer wrong", 401),
        (basic(TOKEN, "wrong"), 401),  # the user name is not the token
        ("Basic not-base64!", 401),
        (f"Token {TOKEN}", 401),
    ],
)
def test_a_token_is_needed_for_every_path(
    token_server: Gated, authorization: str | None, status: int
) -> None:
    assert token_server.server.registry_address is not None
    client = Client(token_server.server.registry_address)
    headers = {"Authorization": authorization} if authorization else {}
    digest = token_server.image.layers[0].digest
    for path in ("/v2/", "/v2/library/gated/tags/list", f"/v2/library/gated/blobs/{digest}"):
        answer = client.request("GET", path, headers)
        assert answer.status == status, (path, answer.body)
        if status == 401:
            assert answer.headers["WWW-Authenticate"] == 'Basic realm="imagestore"'
            assert answer.error_codes() == ["UNAUTHORIZED"]


def test_tls_and_client_certificates_as_for_grpc(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    root = tmp_path / "root"
    image = seed(root)
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKEN + "\n")
    server = start_registry_server(
        root,
        "--tls-cert", str(pki / "server.crt"),
        "--tls-key", str(pki / "server.key"),
        "--tls-client-ca", str(pki / "ca.crt"),
        "--auth-token-file", str(tokens),
    )  # fmt: skip
    try:
        assert server.registry_address is not None
        trusted = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        with_certificate = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        with_certificate.load_cert_chain(pki / "client.crt", pki / "client.key")
        authorized = {"Authorization": f"Bearer {TOKEN}"}
        client = Client(server.registry_address, with_certificate, authorized)
        digest = image.layers[0].digest
        blob = client.get(f"/v2/library/gated/blobs/{digest}")
        assert blob.status == 200
        assert "sha256:" + hashlib.sha256(blob.body).hexdigest() == digest
        no_token = Client(server.registry_address, with_certificate).get("/v2/")
        assert no_token.status == 401  # mTLS and the token both apply
        with pytest.raises((ssl.SSLError, ConnectionResetError)):  # no client certificate
            Client(server.registry_address, trusted, authorized).get("/v2/")
        with pytest.raises((OSError, http.client.HTTPException)):  # plain HTTP: no answer
            Client(server.registry_address, None, authorized).get("/v2/")
    finally:
        assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]


def serve_fails(tmp_path: Path, *extra: str) -> str:
    """Run `imagestore serve` expecting it to refuse to start; its stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "imagestore", "serve", "--config", "", "--root",
         str(tmp_path / "root"), "--listen", "127.0.0.1:0", *extra],
        cwd=PROJECT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    return done.stderr


def test_a_plain_listener_other_machines_reach_needs_insecure(tmp_path: Path) -> None:
    stderr = serve_fails(tmp_path, "--registry-listen", "0.0.0.0:0")
    assert "refusing to listen on 0.0.0.0:0 (--registry-listen) without TLS" in stderr
    assert "--insecure" in stderr


def test_a_port_in_use_fails_the_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stderr = serve_fails(tmp_path, "--registry-listen", f"127.0.0.1:{port}")
    assert f"cannot listen on 127.0.0.1:{port} (--registry-listen): address already in use" in (
        stderr
    )


def test_limits_are_checked_at_start(tmp_path: Path) -> None:
    stderr = serve_fails(tmp_path, "--registry-listen", "127.0.0.1:0",
                         "--registry-max-concurrent-requests", "0")  # fmt: skip
    assert "--registry-max-concurrent-requests must be at least 1 (got 0)" in stderr


def test_requests_beyond_the_cap_get_429_and_the_held_one_completes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    image = seed(root, HELD_BLOB)
    server = start_registry_server(root, "--registry-max-concurrent-requests", "1")
    try:
        assert server.registry_address is not None
        digest = image.layers[0].digest
        held = HeldDownload(server.registry_address, f"/v2/library/gated/blobs/{digest}")
        held.read_head()  # the server now waits to write the rest
        assert held.status == 200
        client = Client(server.registry_address)
        refused = client.get("/v2/")
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "1"
        assert refused.error_codes() == ["TOOMANYREQUESTS"]
        body = held.read_rest()
        assert len(body) == int(held.headers["content-length"])
        assert "sha256:" + hashlib.sha256(body).hexdigest() == digest
        wait_until(lambda: client.get("/v2/").status == 200)  # the slot came back
    finally:
        assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]


def test_a_client_that_stops_reading_is_cut_off(tmp_path: Path) -> None:
    root = tmp_path / "root"
    image = seed(root, HELD_BLOB)
    server = start_registry_server(root, "--registry-send-timeout", "1s")
    try:
        assert server.registry_address is not None
        digest = image.layers[0].digest
        held = HeldDownload(
            server.registry_address,
            f"/v2/library/gated/blobs/{digest}",
            {"X-Request-Id": "stalled-reader"},
        )

        def cut() -> bool:
            return any(
                "request_id=stalled-reader" in line and "the client stopped reading" in line
                for line in server.stderr_lines
            )

        wait_until(cut, timeout=30)
        held.read_head()
        body = held.read_rest()  # the connection ended short of the body
        assert len(body) < int(held.headers["content-length"])
        assert Client(server.registry_address).get("/v2/").status == 200
    finally:
        assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]


def test_request_heads_are_bounded(tmp_path: Path) -> None:
    root = tmp_path / "root"
    seed(root)
    server = start_registry_server(root, "--registry-max-header-bytes", "2048")
    try:
        assert server.registry_address is not None
        client = Client(server.registry_address)
        assert client.get("/v2/", X_Padding="x" * 1000).status == 200
        assert client.get("/v2/", X_Padding="x" * 3000).status == 400
        assert client.get("/v2/" + "a/" * 1100 + "tags/list").status == 400  # the request line
        long_name = client.get("/v2/" + "a/" * 300 + "tags/list")  # fits the line, not a name
        assert (long_name.status, long_name.error_codes()) == (400, ["NAME_INVALID"])
        many = {f"X-Field-{i}": "1" for i in range(200)}
        assert client.request("GET", "/v2/", many).status == 400
    finally:
        assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]
    # a refused head is its 400, not a traceback per request (a client could fill the log)
    assert not any("Traceback" in line for line in server.stderr_lines), server.stderr_lines
