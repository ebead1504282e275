"""The metrics listener: transfers counted by outcome, the store's sizes, registry
requests and retries, the probes, and imagestore's User-Agent at registries.

A real server process scraped over HTTP, pulling from and pushing to the
test registry of tests/registry/hostile.py (which knows each blob's size)."""

from __future__ import annotations

import logging
import signal
import socket
import struct
import threading
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from imagestore.api.metrics import Metrics, MetricsListener
from imagestore.store.store import Store
from imagestore.telemetry import MAX_REGISTRY_HOSTS, NO_ANSWER, OTHER_HOST, Telemetry
from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from imagestore.version import __version__
from tests.api.conftest import Server, start_server, wait_until
from tests.api.test_service import load
from tests.archives import ImageSpec, tar_of
from tests.registry.conftest import FAST_RETRIES, Stub, pull, push, stop_cleanly
from tests.registry.distribution import free_port
from tests.registry.hostile import HostileRegistry, Image, make_image

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Scraped:
    """One scrape of /metrics, as sample name + labels → value."""

    samples: Samples

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, frozenset(labels.items()))]

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


def get(port: int, path: str) -> tuple[int, str, str]:
    """(status, body, content type) of GET ``path`` on the metrics listener at ``port``."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode(), answer.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), error.headers["Content-Type"]


def scrape(port: int) -> Scraped:
    status, text, _ = get(port, "/metrics")
    assert status == 200, text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Scraped(samples)


@dataclass
class MetricsServer:
    server: Server
    port: int

    def get(self, path: str) -> tuple[int, str, str]:
        return get(self.port, path)

    def scrape(self) -> Scraped:
        return scrape(self.port)


@pytest.fixture
def hostile() -> Iterator[HostileRegistry]:
    with HostileRegistry().running() as registry:
        yield registry


def _start(root: Path, *extra: str) -> MetricsServer:
    # the listener takes port 0 too, but its port is then only in the log: pick one
    port = free_port()
    running = start_server(
        root, "--listen", "127.0.0.1:0", "--metrics-listen", f"127.0.0.1:{port}", *extra
    )
    return MetricsServer(running, port)


@pytest.fixture
def metered(tmp_path: Path) -> Iterator[MetricsServer]:
    running = _start(tmp_path / "root", *FAST_RETRIES)
    yield running
    stop_cleanly(running.server)


@pytest.fixture
def stub(metered: MetricsServer) -> Iterator[Stub]:
    with grpc.insecure_channel(metered.server.address) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]


def _image(seed: str) -> Image:
    return make_image(
        [
            tar_of({f"etc/{seed}": seed.encode() * 3000}),
            tar_of({f"bin/{seed}": bytes(range(256)) * 50}),
        ]
    )


def test_transfers_are_counted_by_outcome_and_the_store_gauges_match_it(
    metered: MetricsServer, stub: Stub, hostile: HostileRegistry
) -> None:
    image = _image("pulled")
    hostile.add_image("app/one", "1", image)
    layer_bytes = sum(len(layer) for layer in image.layers)
    before = metered.scrape()
    for outcome in ("downloaded", "present"):
        assert before.value("imagestore_pull_layers_total", outcome=outcome) == 0
    for operation in ("pull", "push", "load"):
        assert before.value("imagestore_transfers_in_progress", operation=operation) == 0

    pull(stub, f"{hostile.host}/app/one:1")
    pulled = metered.scrape()
    assert pulled.value("imagestore_pull_layers_total", outcome="downloaded") == 2
    assert pulled.value("imagestore_pull_bytes_total", outcome="downloaded") == layer_bytes
    assert pulled.value("imagestore_pull_layers_total", outcome="present") == 0

    pull(stub, f"{hostile.host}/app/one:1")  # every layer is here already
    again = metered.scrape()
    assert again.value("imagestore_pull_layers_total", outcome="downloaded") == 2
    assert again.value("imagestore_pull_layers_total", outcome="present") == 2
    assert again.value("imagestore_pull_bytes_total", outcome="present") == layer_bytes

    # the registry has these layers (it answers HEAD for any repository)
    stub.Tag(pb.TagRequest(source=f"{hostile.host}/app/one:1", target=f"{hostile.host}/app/two:1"))
    push(stub, f"{hostile.host}/app/two:1")
    assert metered.scrape().value("imagestore_push_layers_total", outcome="present") == 2

    tars = [tar_of({"srv/a": b"a" * 7000}), tar_of({"srv/b": b"b" * 9000})]
    spec = ImageSpec([f"{hostile.host}/app/loaded:1"], tars)
    load(stub, spec)
    loaded = metered.scrape()
    assert loaded.value("imagestore_load_layers_total", outcome="stored") == 2
    assert loaded.value("imagestore_load_bytes_total", outcome="stored") == sum(map(len, tars))

    known = set(hostile.blobs)
    push(stub, f"{hostile.host}/app/loaded:1")
    uploaded_layers = set(hostile.blobs) - known - {spec.image_id}  # the config is no layer
    assert len(uploaded_layers) == 2
    pushed = metered.scrape()
    assert pushed.value("imagestore_push_layers_total", outcome="uploaded") == 2
    assert pushed.value("imagestore_push_bytes_total", outcome="uploaded") == sum(
        len(hostile.blobs[digest]) for digest in uploaded_layers
    )
    assert pushed.value("imagestore_push_layers_total", outcome="mounted") == 0

    info = stub.GetServerInfo(pb.GetServerInfoRequest())
    assert info.image_count == 2
    assert pushed.value("imagestore_store_images") == info.image_count
    assert pushed.value("imagestore_store_blobs") == info.blob_count
    assert pushed.value("imagestore_store_bytes") == info.stored_bytes
    for operation in ("pull", "push", "load"):
        assert pushed.value("imagestore_transfers_in_progress", operation=operation) == 0

    host = hostile.host
    assert pushed.value("imagestore_registry_requests_total", host=host, status="200") > 0
    assert pushed.value("imagestore_registry_requests_total", host=host, status="201") > 0
    requests = sum(
        value
        for (name, labels), value in pushed.samples.items()
        if name == "imagestore_registry_requests_total" and ("host", host) in labels
    )
    histogram = "imagestore_registry_request_duration_seconds"
    assert pushed.value(f"{histogram}_count", host=host) == requests
    assert pushed.value(f"{histogram}_bucket", host=host, le="+Inf") == requests
    assert pushed.value(f"{histogram}_sum", host=host) > 0
    assert ("imagestore_registry_retries_total", frozenset({("host", host)})) not in pushed.samples

    # the process and Python collectors are there
    names = pushed.names()
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= names
    assert "python_gc_collections_total" in names


def test_a_retried_request_is_counted_under_its_host(
    metered: MetricsServer, stub: Stub, hostile: HostileRegistry
) -> None:
    image = _image("retried")
    hostile.add_image("app/flaky", "1", image)
    hostile.faults[image.layer_digests[0]] = "fail:1"
    pull(stub, f"{hostile.host}/app/flaky:1")
    scraped = metered.scrape()
    host = hostile.host
    assert scraped.value("imagestore_registry_retries_total", host=host) == 1
    assert scraped.value("imagestore_registry_requests_total", host=host, status="500") == 1
    assert scraped.value("imagestore_pull_layers_total", outcome="downloaded") == 2


def test_the_probes_and_a_pull_in_progress_through_a_graceful_shutdown(
    tmp_path: Path, hostile: HostileRegistry
) -> None:
    image = _image("held")
    hostile.add_image("app/held", "1", image)
    hostile.faults[image.layer_digests[0]] = "hold"
    metered = _start(tmp_path / "root", *FAST_RETRIES, "--grace-period", "60")
    try:
        assert metered.get("/healthz")[:2] == (200, "ok\n")
        assert metered.get("/readyz")[:2] == (200, "ready\n")
        assert metered.get("/other")[0] == 404
        assert metered.get("/metrics/")[0] == 404
        status, _, content_type = metered.get("/metrics?name[]=x")
        assert status == 200
        assert content_type.startswith("text/plain; version=0.0.4")

        outcome: list[pb.PullResult | grpc.RpcError] = []

        def pull_in_background() -> None:
            with grpc.insecure_channel(metered.server.address) as channel:
                stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
                try:
                    outcome.append(pull(stub, f"{hostile.host}/app/held:1").last)
                except grpc.RpcError as error:
                    outcome.append(error)

        puller = threading.Thread(target=pull_in_background)
        puller.start()
        try:
            hostile.wait_until(lambda: hostile.holding == 1)
            held = metered.scrape()
            assert held.value("imagestore_transfers_in_progress", operation="pull") == 1

            metered.server.process.send_signal(signal.SIGTERM)
            # shutdown begins: not ready any more, yet alive and still scraped
            wait_until(lambda: metered.get("/readyz")[0] == 503)
            assert metered.get("/readyz")[1] == "not ready\n"
            assert metered.get("/healthz")[0] == 200
            still = metered.scrape()
            assert still.value("imagestore_transfers_in_progress", operation="pull") == 1
        finally:
            hostile.release()
            puller.join(60)
        [result] = outcome
        assert isinstance(result, pb.PullResult), result
    finally:
        stop_cleanly(metered.server)


def test_the_listener_runs_in_process_on_port_zero(tmp_path: Path) -> None:
    with Store.open(tmp_path / "root") as store:
        metrics = Metrics(Telemetry(), store)
        listener = metrics.serve("127.0.0.1", 0)
        try:
            assert listener.port > 0
            port = listener.port
            assert get(port, "/readyz")[0] == 503  # not serving yet
            metrics.ready.set()
            assert get(port, "/readyz")[0] == 200
            scraped = scrape(port)
            assert scraped.value("imagestore_store_images") == 0
            assert scraped.value("imagestore_store_bytes") == 0
            openmetrics = "application/openmetrics-text; version=1.0.0"
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/metrics", headers={"Accept": openmetrics}
            )
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.headers["Content-Type"].startswith(openmetrics)
                assert answer.read().endswith(b"# EOF\n")
            metrics.ready.clear()
            assert get(port, "/readyz")[0] == 503
        finally:
            listener.close()
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://127.0.0.1:{listener.port}/healthz", timeout=10)


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[MetricsListener]:
    """A metrics listener in this process, on a free port."""
    with Store.open(tmp_path / "root") as store:
        serving = Metrics(Telemetry(), store).serve("127.0.0.1", 0)
        try:
            yield serving
        finally:
            serving.close()


def test_a_request_target_that_does_not_parse_is_answered_400(
    listener: MetricsListener, capfd: pytest.CaptureFixture[str]
) -> None:
    with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as client:
        client.sendall(b"GET http://[/metrics HTTP/1.0\r\n\r\n")
        answer = client.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.0 400 "), answer
    assert get(listener.port, "/healthz")[0] == 200
    assert capfd.readouterr().err == ""


def test_a_scraper_that_resets_its_connection_is_one_debug_record(
    listener: MetricsListener, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Not socketserver's traceback on stderr, which would break the JSON log."""
    caplog.set_level(logging.DEBUG, logger="imagestore.metrics")
    with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as client:
        client.sendall(b"GET /metr")  # the handler waits for the rest of the line
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # closed with linger 0: a reset, which the waiting handler reads

    def reset_logged() -> bool:
        return any("connection reset" in r.getMessage().lower() for r in caplog.records)

    wait_until(reset_logged)
    [record] = [r for r in caplog.records if r.name == "imagestore.metrics"]
    assert record.levelno == logging.DEBUG
    assert capfd.readouterr().err == ""


def test_closing_cuts_off_a_scraper_that_stalls(listener: MetricsListener) -> None:
    """close() runs on the server's event loop at shutdown: a scraper that sent
    half a request must not hold it until the handler's 30 s timeout."""
    with (
        socket.create_connection(("127.0.0.1", listener.port), timeout=10) as stalled,
        socket.create_connection(("127.0.0.1", listener.port), timeout=10) as later,
    ):
        stalled.sendall(b"GET /metr")
        # accepted in order: once the later connection is answered, the stalled
        # one has its handler, waiting for the rest of its request line
        later.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert later.makefile("rb").read().startswith(b"HTTP/1.0 200 ")
        closer = threading.Thread(target=listener.close)
        closer.start()
        try:
            assert stalled.recv(100) == b""  # cut (the timeout would raise TimeoutError)
        finally:
            closer.join(60)
        assert not closer.is_alive()


def test_registry_hosts_beyond_the_cap_share_one_label() -> None:
    telemetry = Telemetry()
    hosts = [f"registry-{n}.example:5000" for n in range(MAX_REGISTRY_HOSTS)]
    assert [telemetry.registry_host(host) for host in hosts] == hosts
    assert telemetry.registry_host("one-more.example") == OTHER_HOST
    assert telemetry.registry_host(hosts[0]) == hosts[0]


def test_statuses_http_does_not_name_share_their_class_label() -> None:
    """A registry may answer 100 to 999: each number must not become a series."""
    telemetry = Telemetry()
    for status in ("200", "404", "599", "555", "299", NO_ANSWER):
        telemetry.registry_request("r.example", status, 0.01)
    labels = {
        sample.labels["status"]
        for family in telemetry.registry.collect()
        if family.name == "imagestore_registry_requests"
        for sample in family.samples
    }
    assert labels == {"200", "404", "5xx", "2xx", NO_ANSWER}


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class _UserAgents(HostileRegistry):
    """The test registry, noting each request's path and User-Agent."""

    seen: list[tuple[str, str]] = field(default_factory=list)

    @web.middleware
    async def _bearer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.seen.append((request.path, request.headers.get("User-Agent", "")))
        return await super()._bearer(request, handler)


def test_every_registry_request_says_imagestore_and_its_version(tmp_path: Path) -> None:
    image = _image("agent")
    recorder = _UserAgents(token_auth="")  # anonymous Bearer tokens: token requests too
    with recorder.running() as registry:
        registry.add_image("app/agent", "1", image)
        running = start_server(tmp_path / "root", "--listen", "127.0.0.1:0", *FAST_RETRIES)
        try:
            with grpc.insecure_channel(running.address) as channel:
                stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
                pull(stub, f"{registry.host}/app/agent:1")
                stub.Tag(
                    pb.TagRequest(
                        source=f"{registry.host}/app/agent:1", target=f"{registry.host}/app/b:1"
                    )
                )
                push(stub, f"{registry.host}/app/b:1")
        finally:
            stop_cleanly(running)
    paths = {path for path, _ in recorder.seen}
    assert {"/v2/", "/token", f"/v2/app/agent/blobs/{image.layer_digests[0]}"} <= paths
    assert "/v2/app/b/manifests/1" in paths
    assert {agent for _, agent in recorder.seen} == {f"imagestore/{__version__}"}
