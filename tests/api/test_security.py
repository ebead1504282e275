"""TLS, mutual TLS, bearer tokens, listeners, metrics and graceful shutdown,
each against the real server process."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import PROJECT, Server, start_server, wait_until
from tests.api.test_service import error_info, load
from tests.archives import ImageSpec
from tests.hostile.test_listener import assert_refused, serve
from tests.pki import make_pki
from tests.store.builders import layer_tar


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


def list_images(
    channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = ()
) -> pb.ListImagesResponse:
    stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
    response: pb.ListImagesResponse = stub.ListImages(
        pb.ListImagesRequest(), metadata=metadata, timeout=10
    )
    return response


@pytest.fixture
def running(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    server = start_server(tmp_path / "root", "--listen", "127.0.0.1:0", *request.param)
    yield server
    assert server.stop() == 0


def _tls_channel(
    server: Server, pki: Path, ca: str = "ca.crt", client: bool = False
) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(pki / ca).read_bytes(),
        private_key=(pki / "client.key").read_bytes() if client else None,
        certificate_chain=(pki / "client.crt").read_bytes() if client else None,
    )
    return grpc.secure_channel(server.address, credentials)


def test_tls_serves_a_trusting_client_and_refuses_others(pki: Path, tmp_path: Path) -> None:
    tls = ["--tls-cert", str(pki / "server.crt"), "--tls-key", str(pki / "server.key")]
    server = start_server(tmp_path / "root", "--listen", "127.0.0.1:0", *tls)
    try:
        with _tls_channel(server, pki) as channel:
            assert list(list_images(channel).images) == []
        for bad in (
            _tls_channel(server, pki, ca="other.crt"),
            grpc.insecure_channel(server.address),
        ):
            with bad, pytest.raises(grpc.RpcError) as failure:
                list_images(bad)
            assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        assert server.stop() == 0


def test_mutual_tls_needs_a_client_certificate(pki: Path, tmp_path: Path) -> None:
    tls = ["--tls-cert", str(pki / "server.crt"), "--tls-key", str(pki / "server.key")]
    tls += ["--tls-client-ca", str(pki / "ca.crt")]
    server = start_server(tmp_path / "root", "--listen", "127.0.0.1:0", *tls)
    try:
        with _tls_channel(server, pki, client=True) as channel:
            assert list(list_images(channel).images) == []
        with _tls_channel(server, pki) as anonymous, pytest.raises(grpc.RpcError) as failure:
            list_images(anonymous)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        assert server.stop() == 0


def test_token_auth_refuses_without_the_token_but_health_stays_open(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret-token\nsecond-token\n")
    server = start_server(
        tmp_path / "root", "--listen", "127.0.0.1:0", "--auth-token-file", str(tokens)
    )
    try:
        with grpc.insecure_channel(server.address) as channel:
            for metadata in (
                (),
                (("authorization", "Bearer wrong"),),
                (("authorization", "s3cret-token"),),
            ):
                with pytest.raises(grpc.RpcError) as failure:
                    list_images(channel, metadata)
                assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert error_info(failure.value).reason == "BEARER_TOKEN_INVALID"
            for token in ("s3cret-token", "second-token"):
                list_images(channel, (("authorization", f"Bearer {token}"),))
            health = health_pb2_grpc.HealthStub(channel)
            answer = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        assert server.stop() == 0


def test_a_reachable_listener_without_tls_is_refused_in_one_line(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "imagestore", "serve", "--root", str(tmp_path / "r")]
    result = subprocess.run(
        [*command, "--listen", "0.0.0.0:0"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "without TLS" in result.stderr
    assert "--insecure" in result.stderr
    server = start_server(tmp_path / "root", "--listen", "0.0.0.0:0", "--insecure")
    assert server.stop() == 0


def test_metrics_reachable_from_other_machines_need_insecure_even_with_tls(
    tmp_path: Path, pki: Path
) -> None:
    """TLS secures the gRPC listener only: the metrics listener is plain HTTP."""
    tls = ["--tls-cert", str(pki / "server.crt"), "--tls-key", str(pki / "server.key")]
    attempt = serve(
        tmp_path / "r", "--listen", "127.0.0.1:0", *tls, "--metrics-listen", "0.0.0.0:0"
    )
    assert attempt.result.stderr.strip().count("\n") == 0, attempt.result.stderr
    assert_refused(attempt, "refusing to serve metrics on 0.0.0.0:0: plain HTTP", "--insecure")


def test_a_unix_socket_is_private_to_its_owner(tmp_path: Path) -> None:
    path = tmp_path / "imagestore.sock"
    server = start_server(tmp_path / "root", "--listen", f"unix://{path}")
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with grpc.insecure_channel(f"unix://{path}") as channel:
            assert list(list_images(channel).images) == []
    finally:
        assert server.stop() == 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_metrics_count_rpcs_by_method_and_code(tmp_path: Path) -> None:
    port = _free_port()
    server = start_server(
        tmp_path / "root", "--listen", "127.0.0.1:0", "--metrics-listen", f"127.0.0.1:{port}"
    )
    try:
        with grpc.insecure_channel(server.address) as channel:
            list_images(channel)
            stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.RpcError):
                stub.Inspect(pb.InspectRequest(image="ghost"))
        method = "/imagestore.v1.ImageStoreService"
        inspected = f'imagestore_rpcs_total{{code="NOT_FOUND",method="{method}/Inspect"}} 1.0'

        def scrape() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
                return str(page.read().decode())

        # the count lands when the call's end is logged, just after the client has its answer
        wait_until(lambda: inspected in scrape())
        text = scrape()
        assert f'imagestore_rpcs_total{{code="OK",method="{method}/ListImages"}} 1.0' in text
        assert "imagestore_store_bytes 0.0" in text
        assert "imagestore_rpc_duration_seconds_bucket" in text
    finally:
        assert server.stop() == 0


def test_sigterm_lets_a_running_save_finish(tmp_path: Path) -> None:
    server = start_server(tmp_path / "root", "--listen", "127.0.0.1:0", "--grace-period", "30")
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
        load(stub, ImageSpec(["big:1"], [layer_tar({"big": os.urandom(24 << 20)})]))
        stream = stub.Save(pb.SaveRequest(images=["big:1"]))
        received = len(next(stream).chunk)
        server.process.send_signal(signal.SIGTERM)
        received += sum(len(r.chunk) for r in stream)  # the stream completes
        assert received > 20 << 20
        assert server.process.wait(60) == 0
    assert "shutting down" in "".join(server.stderr_lines)
    server.stop()
