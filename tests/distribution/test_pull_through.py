"""Pull-through on the registry endpoint (``--registry-pull-through``), against a
real upstream ``docker-registry`` holding images published with skopeo.

What the store lacks is pulled from an allowlisted upstream and served with the
upstream's bytes, and it is then an image over gRPC with a PULL event; a
registry that is not allowlisted is never contacted (its own log shows no
request), by path or by ``ns=``. Concurrency, staleness and the size cap go
through :class:`GatedProxy`, a small proxy in front of the upstream that counts
the requests it forwards, can hold some until the test releases them, and can
be stopped: the test then knows every request the server sent upstream, and
holds a pull open until the requests it wants concurrent are all in flight
(the endpoint's in-flight gauge says so, scraped from the metrics listener).
"""

from __future__ import annotations

import http.client
import json
import random
import re
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest

from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import Server, wait_until
from tests.api.test_events import journal
from tests.api.test_metrics import Scraped, scrape
from tests.api.test_service import load
from tests.archives import ImageSpec, docker_archive, sha, tar_of
from tests.distribution.conftest import ACCEPT_ALL, Answer, Client, start_registry_server
from tests.distribution.test_endpoint import OCI_INDEX
from tests.registry.conftest import FAST_RETRIES, Published, stop_cleanly
from tests.registry.distribution import Distribution, free_port, skopeo, start_distribution

STALE = '110 - "Response is Stale"'
#: layers of the size-cap images: random bytes, so gzip keeps them at this size
CAP_LAYER = 1 << 20


# ---- an upstream, and a proxy in front of it ---------------------------------------


class GatedProxy:
    """An HTTP proxy to ``target`` on a loopback port of its own: it counts the
    requests it forwards by (method, path), holds those whose path is in
    ``hold`` until :meth:`release`, sends the answers of those in ``split`` in
    two halves with the release between them (``half_sent`` is set once the
    first half is out), flips the last byte of those in ``corrupt``, answers
    those in ``refuse`` itself with their status (404 NAME_UNKNOWN, 401
    UNAUTHORIZED, 500 UNKNOWN), and refuses connections once stopped."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.requests: Counter[tuple[str, str]] = Counter()
        self.hold: set[str] = set()
        self.split: set[str] = set()
        self.corrupt: set[str] = set()
        self.refuse: dict[str, int] = {}
        self.held = 0
        self.gate = threading.Event()
        self.half_sent = threading.Event()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def forward(self) -> None:
                path = self.path.split("?", 1)[0]
                with proxy._lock:
                    proxy.requests[(self.command, path)] += 1
                    held = path in proxy.hold
                    proxy.held += held
                if held:
                    proxy.gate.wait(60)
                if path in proxy.refuse:
                    self.refused(proxy.refuse[path])
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                upstream = http.client.HTTPConnection(proxy.target, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                finally:
                    upstream.close()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                if path in proxy.corrupt and data:
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                if self.command == "HEAD":
                    pass
                elif path in proxy.split:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    proxy.half_sent.set()
                    proxy.gate.wait(60)
                    self.wfile.write(data[len(data) // 2 :])
                else:
                    self.wfile.write(data)
                self.close_connection = True

            def refused(self, status: int) -> None:
                code = {404: "NAME_UNKNOWN", 401: "UNAUTHORIZED"}.get(status, "UNKNOWN")
                body = json.dumps({"errors": [{"code": code, "message": "refused"}]}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def do_GET(self) -> None:
                self.forward()

            def do_HEAD(self) -> None:
                self.forward()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.host = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def count(self, method: str, path: str) -> int:
        with self._lock:
            return self.requests[(method, path)]

    def release(self) -> None:
        self.gate.set()

    def stop(self) -> None:
        self.gate.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


@dataclass
class Upstream:
    """The upstream registry and what was published there."""

    registry: Distribution
    layout: Path

    @property
    def host(self) -> str:
        return self.registry.host

    def publish(self, source: str, name: str, *extra: str) -> None:
        """skopeo copy ``source`` (``oci:…``, ``docker-archive:…``) to ``name`` here."""
        skopeo("copy", "--dest-tls-verify=false", *extra, source, f"docker://{self.host}/{name}")

    def publish_amd64(self, name: str) -> None:
        self.publish(f"oci:{self.layout}:v1-amd64", name)

    def raw(self, path: str, accept: str = ACCEPT_ALL) -> tuple[bytes, str]:
        """The upstream's body and Content-Type for ``/v2/…`` ``path``."""
        request = urllib.request.Request(
            f"http://{self.host}/v2/{path}", headers={"Accept": accept}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.read(), answer.headers["Content-Type"]


@contextmanager
def logging_upstream(root: Path, layout: Path) -> Iterator[Upstream]:
    """A registry of this module's own, logging every request, empty; stopped after."""
    running = start_distribution(root, log_level="info")
    try:
        yield Upstream(running, layout)
    finally:
        running.stop()


@pytest.fixture(scope="module")
def upstream(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """The allowlisted upstream, holding the images the tests pull through."""
    with logging_upstream(tmp_path_factory.mktemp("upstream"), published.layout) as found:
        found.publish_amd64("pt/hello:1")
        found.publish_amd64("pt/bydigest:1")
        found.publish_amd64("pt/ns:1")
        found.publish(f"oci:{published.layout}:multi", "pt/multi:1", "--all")
        found.publish_amd64("library/hub:1")
        yield found


@pytest.fixture(scope="module")
def outsider(published: Published, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """A registry that is on no allowlist, holding an image."""
    with logging_upstream(tmp_path_factory.mktemp("outsider"), published.layout) as found:
        found.publish_amd64("pt/hello:1")
        yield found


# ---- servers --------------------------------------------------------------------------


@dataclass
class Through:
    """A server pulling through, its endpoint client, gRPC stub and metrics port."""

    server: Server
    client: Client
    stub: pb_grpc.ImageStoreServiceStub
    metrics_port: int

    def scrape(self) -> Scraped:
        return scrape(self.metrics_port)

    def in_flight(self) -> float:
        return self.scrape().value("imagestore_endpoint_requests_in_flight")

    def manifest(self, path: str, method: str = "GET") -> Answer:
        return self.client.request(method, f"/v2/{path}", {"Accept": ACCEPT_ALL})

    def log(self) -> str:
        return "".join(self.server.stderr_lines)


def endpoint_path(host: str, name: str) -> str:
    """A name of registry ``host`` (host:port) as a path on the endpoint."""
    return f"{host.replace(':', '_')}/{name}"


def start_through(
    root: Path, *upstreams: str, ttl: str = "1h", extra: tuple[str, ...] = ()
) -> Through:
    port = free_port()
    allowed = [arg for host in upstreams for arg in ("--registry-upstream", host)]
    server = start_registry_server(
        root,
        "--registry-pull-through",
        *allowed,
        "--registry-pull-through-ttl", ttl,
        "--metrics-listen", f"127.0.0.1:{port}",
        *FAST_RETRIES,
        *extra,
    )  # fmt: skip
    assert server.registry_address is not None
    channel = grpc.insecure_channel(server.address)
    stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
    return Through(server, Client(server.registry_address), stub, port)


@pytest.fixture(scope="module")
def through(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Through]:
    """Pull-through from the upstream, by its host and as Docker Hub's upstream."""
    running = start_through(
        tmp_path_factory.mktemp("through") / "root",
        upstream.host,
        f"docker.io=http://{upstream.host}",
    )
    try:
        yield running
    finally:
        stop_cleanly(running.server)


@pytest.fixture
def proxy(upstream: Upstream) -> Iterator[GatedProxy]:
    running = GatedProxy(upstream.host)
    yield running
    running.stop()


@pytest.fixture
def proxied(proxy: GatedProxy, tmp_path: Path) -> Iterator[Through]:
    """Pull-through from the upstream behind the proxy, revalidating every tag (TTL 0);
    a response the proxy holds is not given up on while a busy machine runs the test."""
    running = start_through(
        tmp_path / "root", proxy.host, ttl="0", extra=("--registry-idle-timeout", "60")
    )
    try:
        yield running
    finally:
        stop_cleanly(running.server)


# ---- helpers ------------------------------------------------------------------------------


def manifest_document(answer: Answer) -> dict[str, object]:
    document = answer.json()
    assert isinstance(document, dict)
    return document


def blobs_of(manifest: dict[str, object]) -> list[str]:
    config = manifest["config"]
    layers = manifest["layers"]
    assert isinstance(config, dict)
    assert isinstance(layers, list)
    return [str(config["digest"]), *(str(layer["digest"]) for layer in layers)]


def inspect_digest(stub: pb_grpc.ImageStoreServiceStub, name: str) -> str:
    answer = stub.Inspect(pb.InspectRequest(image=name))
    return str(answer.manifest.digest)


def named(through: Through, name: str, digest: str | None = None) -> str:
    """What ``name`` points at once it is stored (pointing at ``digest``, when given).
    A manifest is answered before its pull ends (its layers may still be on their
    way): the name comes with the pull's last step."""
    found: list[str] = []

    def stored() -> bool:
        try:
            found.append(inspect_digest(through.stub, name))
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return False
        return digest is None or found[-1] == digest

    wait_until(stored, 30)
    return found[-1]


def pull_events(stub: pb_grpc.ImageStoreServiceStub) -> list[tuple[str, str]]:
    return [
        (e.name.canonical, e.target_digest)
        for e in journal(stub)
        if pb.EventKind.Name(e.kind) == "EVENT_KIND_PULL"
    ]


def get_all(client: Client, paths: list[str]) -> list[Answer]:
    """GET each path at once, one thread and connection each."""
    with ThreadPoolExecutor(len(paths)) as pool:
        return list(pool.map(lambda p: client.request("GET", p, {"Accept": ACCEPT_ALL}), paths))


# ---- pulled through, by tag and by digest ------------------------------------------------


def test_a_tag_the_store_lacks_is_pulled_through_with_the_upstreams_bytes(
    through: Through, upstream: Upstream
) -> None:
    path = endpoint_path(upstream.host, "pt/hello")
    expected, media_type = upstream.raw("pt/hello/manifests/1")
    answer = through.manifest(f"{path}/manifests/1")
    assert answer.status == 200, answer.body
    assert answer.body == expected
    assert answer.headers["Content-Type"] == media_type
    assert answer.headers["Docker-Content-Digest"] == sha(expected)
    for digest in blobs_of(manifest_document(answer)):
        blob = through.client.get(f"/v2/{path}/blobs/{digest}")
        assert blob.status == 200
        assert blob.body == upstream.raw(f"pt/hello/blobs/{digest}")[0]
        assert sha(blob.body) == digest
    name = f"{upstream.host}/pt/hello:1"
    assert named(through, name) == sha(expected)
    assert (name, sha(expected)) in pull_events(through.stub)


def test_a_manifest_by_digest_is_pulled_through(through: Through, upstream: Upstream) -> None:
    expected, _ = upstream.raw("pt/bydigest/manifests/1")
    digest = sha(expected)
    path = endpoint_path(upstream.host, "pt/bydigest")
    head = through.manifest(f"{path}/manifests/{digest}", "HEAD")
    assert head.status == 200
    assert head.headers["Docker-Content-Digest"] == digest
    answer = through.manifest(f"{path}/manifests/{digest}")
    assert answer.body == expected
    assert named(through, f"{upstream.host}/pt/bydigest@{digest}") == digest
    # by digest only: the tag stays unknown to the store
    with pytest.raises(grpc.RpcError) as missing:
        through.stub.Inspect(pb.InspectRequest(image=f"{upstream.host}/pt/bydigest:1"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_docker_hub_name_comes_from_the_configured_docker_io_upstream(
    through: Through, upstream: Upstream
) -> None:
    expected, _ = upstream.raw("library/hub/manifests/1")
    answer = through.manifest("hub/manifests/1")
    assert answer.status == 200, answer.body
    assert answer.body == expected
    assert named(through, "docker.io/library/hub:1") == sha(expected)


def test_skopeo_copies_an_index_through_every_platform_pulled_on_demand(
    through: Through, upstream: Upstream, tmp_path: Path
) -> None:
    """The index's host platform comes with the index; the other child is
    pulled when skopeo asks for it by digest."""
    index_bytes, _ = upstream.raw("pt/multi/manifests/1")
    source = f"docker://{through.client.address}/{endpoint_path(upstream.host, 'pt/multi')}:1"
    skopeo("copy", "--all", "--src-tls-verify=false", source, f"oci:{tmp_path / 'multi'}:1")
    layout = json.loads((tmp_path / "multi" / "index.json").read_text())
    assert layout["manifests"][0]["digest"] == sha(index_bytes)
    children = json.loads(index_bytes)["manifests"]
    for child in children:
        copied = tmp_path / "multi" / "blobs" / "sha256" / child["digest"].removeprefix("sha256:")
        assert sha(copied.read_bytes()) == child["digest"]
        name = f"{upstream.host}/pt/multi@{child['digest']}"
        assert named(through, name) == child["digest"]


# ---- the allowlist ------------------------------------------------------------------------


def test_a_registry_not_allowlisted_is_never_contacted(
    through: Through, outsider: Upstream
) -> None:
    offset = outsider.registry.log_size()
    path = endpoint_path(outsider.host, "pt/hello")
    for _ in range(2):
        answer = through.manifest(f"{path}/manifests/1")
        assert answer.status == 404
        assert answer.error_codes() == ["NAME_UNKNOWN"]
    by_ns = through.manifest(f"pt/hello/manifests/1?ns={outsider.host}")
    assert by_ns.status == 404
    listed = through.client.get(f"/v2/{path}/tags/list")
    assert listed.status == 404
    assert listed.error_codes() == ["NAME_UNKNOWN"]
    assert outsider.registry.requests_since(offset) == []
    refusals = [
        line for line in through.server.stderr_lines if "is not an allowed upstream" in line
    ]
    assert len(refusals) == 1, refusals
    assert outsider.host in refusals[0]


# ---- tag lists ------------------------------------------------------------------------------


def test_tags_list_lists_upstreams_tags_beside_the_stores(
    through: Through, upstream: Upstream
) -> None:
    """Nothing of the repository is stored: its tags are upstream's, as
    ``skopeo list-tags`` shows them, asked once within the TTL; a tag made in
    the store joins them, in order, page by page."""
    for tag in ("1", "2", "3"):
        upstream.publish_amd64(f"pt/tagged:{tag}")
    path = endpoint_path(upstream.host, "pt/tagged")
    offset = upstream.registry.log_size()
    listed = through.client.get(f"/v2/{path}/tags/list")
    assert (listed.status, listed.json()) == (200, {"name": path, "tags": ["1", "2", "3"]})
    address = through.server.registry_address
    seen = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{address}/{path}"))
    assert seen["Tags"] == ["1", "2", "3"]
    upstream.publish_amd64("pt/tagged:4")  # within the TTL (1h): not asked again
    assert through.client.get(f"/v2/{path}/tags/list").json() == listed.json()
    asked = [r for r in upstream.registry.requests_since(offset) if "/tags/list" in r[1]]
    assert asked == [("GET", "/v2/pt/tagged/tags/list?n=1000", 200)]
    images = through.stub.ListImages(pb.ListImagesRequest(all=True)).images
    assert not [n for i in images for n in i.repo_tags if "pt/tagged" in n.canonical]
    assert through.manifest(f"{path}/manifests/2").status == 200
    source = f"{upstream.host}/pt/tagged:2"
    named(through, source)
    through.stub.Tag(pb.TagRequest(source=source, target=f"{upstream.host}/pt/tagged:local"))
    pages = [through.client.get(f"/v2/{path}/tags/list?n=3{after}") for after in ("", "&last=3")]
    assert [page.json() for page in pages] == [
        {"name": path, "tags": ["1", "2", "3"]},
        {"name": path, "tags": ["local"]},
    ]
    assert pages[0].headers["Link"] == f'</v2/{path}/tags/list?n=3&last=3>; rel="next"'
    assert "Link" not in pages[1].headers


def test_tags_list_is_the_stores_when_upstream_will_not_list_them(
    proxied: Through, proxy: GatedProxy, upstream: Upstream
) -> None:
    """401 (Docker Hub's answer for a repository it does not have) or 404 for the
    list: the store's tags, with no warning; 500 (after the retries): the store's
    tags with the warning."""
    upstream.publish_amd64("pt/unlisted:1")
    path = endpoint_path(proxy.host, "pt/unlisted")
    assert proxied.manifest(f"{path}/manifests/1").status == 200
    named(proxied, f"{proxy.host}/pt/unlisted:1")
    listed = {"name": path, "tags": ["1"]}
    answers = {}
    for status in (401, 404, 500):
        proxy.refuse["/v2/pt/unlisted/tags/list"] = status
        answer = proxied.client.get(f"/v2/{path}/tags/list")
        answers[status] = (answer.status, answer.json(), answer.headers.get("Warning"))
    assert answers == {
        401: (200, listed, None),
        404: (200, listed, None),
        500: (200, listed, STALE),
    }
    assert proxy.count("GET", "/v2/pt/unlisted/tags/list") >= 3  # TTL 0: asked each time


def test_tags_list_of_an_unlisted_repository_is_unavailable_while_upstream_is_down(
    proxied: Through, proxy: GatedProxy, upstream: Upstream
) -> None:
    """Nothing of the repository in the store, and upstream down: 503, not 404."""
    path = endpoint_path(proxy.host, "pt/notyet")
    proxy.stop()
    answer = proxied.client.get(f"/v2/{path}/tags/list")
    assert answer.status == 503
    assert answer.error_codes() == ["UNAVAILABLE"]
    assert "Retry-After" in answer.headers


def test_tags_list_of_a_repository_nobody_knows_is_name_unknown(
    through: Through, upstream: Upstream
) -> None:
    listed = through.client.get(f"/v2/{endpoint_path(upstream.host, 'pt/nobody')}/tags/list")
    assert listed.status == 404
    assert listed.error_codes() == ["NAME_UNKNOWN"]


def test_upstreams_last_tag_list_is_served_stale_when_upstream_goes_down(
    proxied: Through, proxy: GatedProxy, upstream: Upstream
) -> None:
    """TTL 0: upstream is asked at every request; once it is down, its last list
    is served beside the store's tags, with the warning."""
    upstream.publish_amd64("pt/downlist:1")
    path = endpoint_path(proxy.host, "pt/downlist")
    assert proxied.manifest(f"{path}/manifests/1").status == 200
    named(proxied, f"{proxy.host}/pt/downlist:1")
    upstream.publish_amd64("pt/downlist:2")
    fresh = proxied.client.get(f"/v2/{path}/tags/list")
    proxy.stop()
    stale = proxied.client.get(f"/v2/{path}/tags/list")
    listed = {"name": path, "tags": ["1", "2"]}
    assert (fresh.status, fresh.json(), fresh.headers.get("Warning")) == (200, listed, None)
    assert (stale.status, stale.json(), stale.headers.get("Warning")) == (200, listed, STALE)
    assert "listing the tags of" in proxied.log()


def test_ns_names_an_allowlisted_upstream(through: Through, upstream: Upstream) -> None:
    expected, _ = upstream.raw("pt/ns/manifests/1")
    answer = through.manifest(f"pt/ns/manifests/1?ns={upstream.host}")
    assert answer.status == 200, answer.body
    assert answer.body == expected
    assert named(through, f"{upstream.host}/pt/ns:1") == sha(expected)


def test_an_upstream_without_the_tag_is_the_usual_404(through: Through, upstream: Upstream) -> None:
    answer = through.manifest(f"{endpoint_path(upstream.host, 'pt/hello')}/manifests/absent")
    assert answer.status == 404
    assert answer.error_codes() == ["MANIFEST_UNKNOWN"]


# ---- once per manifest and blob --------------------------------------------------------


def test_concurrent_requests_for_one_manifest_pull_it_once(
    proxied: Through, proxy: GatedProxy, upstream: Upstream
) -> None:
    upstream.publish_amd64("pt/concurrent:1")
    expected, _ = upstream.raw("pt/concurrent/manifests/1")
    counted = proxied.scrape()
    proxy.hold.add("/v2/pt/concurrent/manifests/1")
    path = f"/v2/{endpoint_path(proxy.host, 'pt/concurrent')}/manifests/1"
    with ThreadPoolExecutor(8) as pool:
        answers = [
            pool.submit(proxied.client.request, "GET", path, {"Accept": ACCEPT_ALL})
            for _ in range(8)
        ]
        wait_until(lambda: proxy.held == 1 and proxied.in_flight() == 8, 30)
        proxy.release()
        bodies = [answer.result().body for answer in answers]
    assert bodies == [expected] * 8
    # the answers go once the manifests are stored; the layers may still be downloading
    name = f"{proxy.host}/pt/concurrent:1"
    wait_until(lambda: (name, sha(expected)) in pull_events(proxied.stub), 30)
    assert proxy.count("GET", "/v2/pt/concurrent/manifests/1") == 1
    for digest in blobs_of(json.loads(expected)):
        assert proxy.count("GET", f"/v2/pt/concurrent/blobs/{digest}") == 1
    # one request started the pull; the other seven joined it (or, on a machine
    # too busy for them to look before it ended, found the image stored)
    scraped = proxied.scrape()

    def more(outcome: str) -> float:
        name = "imagestore_pull_through_total"
        return scraped.value(name, outcome=outcome) - counted.value(name, outcome=outcome)

    assert more("miss-pulled") == 1
    assert more("miss-joined") + more("hit") == 7


def test_blob_requests_share_the_download_in_flight(
    proxied: Through, proxy: GatedProxy, upstream: Upstream
) -> None:
    """The manifest is answered while upstream holds the layer back; eight
    requests for the layer then wait on its one download."""
    upstream.publish_amd64("pt/blobs:1")
    expected, _ = upstream.raw("pt/blobs/manifests/1")
    layer = blobs_of(json.loads(expected))[-1]
    proxy.hold.add(f"/v2/pt/blobs/blobs/{layer}")
    path = endpoint_path(proxy.host, "pt/blobs")
    assert proxied.manifest(f"{path}/manifests/1").body == expected
    wait_until(lambda: proxy.held == 1, 30)  # the pull is downloading the layer
    with ThreadPoolExecutor(8) as pool:
        blobs = [pool.submit(proxied.client.get, f"/v2/{path}/blobs/{layer}") for _ in range(8)]
        wait_until(lambda: proxied.in_flight() == 8, 30)
        proxy.release()
        answers = [blob.result() for blob in blobs]
    assert [a.status for a in answers] == [200] * 8
    assert all(sha(a.body) == layer for a in answers)
    assert proxy.count("GET", f"/v2/pt/blobs/blobs/{layer}") == 1


# ---- served while it downloads ---------------------------------------------------------------

#: big enough that the pull writes (and a client may read) part of it before the rest comes
STREAMED_LAYER = 3 << 20


def publish_big_layer(upstream: Upstream, tmp_path: Path, name: str) -> tuple[bytes, str]:
    """An image of one random 3 MiB layer (seeded by ``name``) at ``name``
    (``repository:tag``) upstream: its manifest, its layer."""
    archive = tmp_path / "streamed.tar"
    layer = tar_of({"data": random.Random(name).randbytes(STREAMED_LAYER)})
    archive.write_bytes(docker_archive(ImageSpec([name], [layer])))
    upstream.publish(f"docker-archive:{archive}", name)
    repository, tag = name.rsplit(":", 1)
    manifest, _ = upstream.raw(f"{repository}/manifests/{tag}")
    return manifest, blobs_of(json.loads(manifest))[-1]


@contextmanager
def streaming_blob(through: Through, path: str) -> Iterator[tuple[http.client.HTTPResponse, int]]:
    """A GET of ``/v2/{path}`` answered 200: the response to read from, and its length."""
    connection = through.client.connection()
    try:
        connection.request("GET", f"/v2/{path}")
        response = connection.getresponse()
        assert response.status == 200
        yield response, int(response.headers["Content-Length"])
    finally:
        connection.close()


def test_a_layer_streams_to_the_client_while_it_downloads(
    proxied: Through, proxy: GatedProxy, upstream: Upstream, tmp_path: Path
) -> None:
    """The proxy sends half the layer and holds the rest: by then the manifest is
    answered and the client has the layer's first bytes (had the server waited
    for the whole pull, each would hang until the client's 30 s timeout)."""
    expected, layer = publish_big_layer(upstream, tmp_path, "pt/streamed:1")
    proxy.split.add(f"/v2/pt/streamed/blobs/{layer}")
    path = endpoint_path(proxy.host, "pt/streamed")
    manifest = proxied.manifest(f"{path}/manifests/1")
    assert manifest.status == 200
    assert manifest.body == expected
    with streaming_blob(proxied, f"{path}/blobs/{layer}") as (response, size):
        first = response.read(256 << 10)
        assert len(first) == 256 << 10
        assert not proxy.gate.is_set()  # the rest of the layer is still upstream
        assert proxied.stub.ListImages(pb.ListImagesRequest()).images == []  # not named yet
        proxy.release()
        body = first + response.read()
    assert len(body) == size
    assert sha(body) == layer
    assert named(proxied, f"{proxy.host}/pt/streamed:1") == sha(expected)
    assert proxy.count("GET", f"/v2/pt/streamed/blobs/{layer}") == 1

    def logged_bytes() -> int | None:
        lines = [line for line in proxied.server.stderr_lines if f"blobs/{layer} " in line]
        found = re.search(r"bytes_out=(\d+)", lines[-1]) if lines else None
        return int(found[1]) if found else None

    wait_until(lambda: logged_bytes() is not None, 30)  # written just after the response
    assert (logged_bytes() or 0) > size  # the body sent by sendfile, and the headers


def answered_with_layer_held(
    through: Through,
    proxy: GatedProxy,
    repository: str,
    reference: str,
    manifest: bytes,
    layer: str,
) -> str:
    """The endpoint's path of upstream ``repository`` once its manifest
    ``reference`` was answered through the proxy, which holds ``layer`` back: the
    pull is downloading it, and it stays held until the proxy is released."""
    proxy.hold.add(f"/v2/{repository}/blobs/{layer}")
    path = endpoint_path(proxy.host, repository)
    assert through.manifest(f"{path}/manifests/{reference}").body == manifest
    wait_until(lambda: proxy.held == 1, 30)
    return path


def skopeo_inspect(through: Through, reference: str) -> dict[str, object]:
    """``skopeo inspect`` of ``reference`` (a path on the endpoint, with its tag or digest)."""
    address = through.server.registry_address
    found = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{address}/{reference}"))
    assert isinstance(found, dict)
    return found


def test_a_tag_answered_while_its_layers_download_is_listed_and_inspectable(
    proxied: Through, proxy: GatedProxy, upstream: Upstream, tmp_path: Path
) -> None:
    """Tag 2's manifest is answered while upstream holds its layer back, before
    the pull names the tag, and upstream lists no tags: the tag is in tags/list
    already, alone in a repository that held nothing, then page by page between
    tags 1 and 3 pulled meanwhile; ``skopeo inspect`` of it (its manifest, the
    tags list, the config) works, and its manifest has referrers."""
    manifests = {
        tag: publish_big_layer(upstream, tmp_path, f"pt/listed:{tag}") for tag in ("1", "2", "3")
    }
    expected, held = manifests["2"]
    proxy.refuse["/v2/pt/listed/tags/list"] = 404  # upstream lists none: the store's alone
    path = answered_with_layer_held(proxied, proxy, "pt/listed", "2", expected, held)
    alone = proxied.client.get(f"/v2/{path}/tags/list")
    inspected = skopeo_inspect(proxied, f"{path}:2")
    for tag in ("1", "3"):
        assert proxied.manifest(f"{path}/manifests/{tag}").status == 200
        assert named(proxied, f"{proxy.host}/pt/listed:{tag}") == sha(manifests[tag][0])
    pages = [proxied.client.get(f"/v2/{path}/tags/list?n=1{after}") for after in ("", "&last=1")]
    every = proxied.client.get(f"/v2/{path}/tags/list")
    referrers = proxied.client.get(f"/v2/{path}/referrers/{sha(expected)}")
    assert not proxy.gate.is_set()  # all of it answered while the layer was held
    proxy.release()
    assert (alone.status, alone.json()) == (200, {"name": path, "tags": ["2"]})
    assert inspected["Digest"] == sha(expected)
    assert inspected["RepoTags"] == ["2"]
    assert inspected["Layers"] == [held]
    assert every.json() == {"name": path, "tags": ["1", "2", "3"]}
    assert [page.json() for page in pages] == [{"name": path, "tags": [t]} for t in ("1", "2")]
    assert [page.headers.get("Link") for page in pages] == [
        f'</v2/{path}/tags/list?n=1&last=1>; rel="next"',
        f'</v2/{path}/tags/list?n=1&last=2>; rel="next"',
    ]
    assert referrers.status == 200
    assert referrers.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    assert named(proxied, f"{proxy.host}/pt/listed:2") == sha(expected)
    assert proxied.client.get(f"/v2/{path}/tags/list").json() == every.json()


def test_a_digest_answered_while_its_layers_download_makes_its_repository_known(
    proxied: Through, proxy: GatedProxy, upstream: Upstream, tmp_path: Path
) -> None:
    """A manifest asked for by digest, in a repository that holds nothing and
    whose tags upstream does not list, is answered while its layer is held
    upstream: the repository is then known, with no tags, and ``skopeo
    inspect`` of the digest works."""
    expected, held = publish_big_layer(upstream, tmp_path, "pt/listed-digest:1")
    digest = sha(expected)
    proxy.refuse["/v2/pt/listed-digest/tags/list"] = 404  # upstream lists none
    path = answered_with_layer_held(proxied, proxy, "pt/listed-digest", digest, expected, held)
    tags = proxied.client.get(f"/v2/{path}/tags/list")
    inspected = skopeo_inspect(proxied, f"{path}@{digest}")
    assert not proxy.gate.is_set()  # answered while the layer was held
    proxy.release()
    assert (tags.status, tags.json()) == (200, {"name": path, "tags": []})
    assert (inspected["Digest"], inspected["RepoTags"]) == (digest, [])
    assert named(proxied, f"{proxy.host}/pt/listed-digest@{digest}") == digest


def test_a_layer_that_fails_verification_is_cut_short_and_nothing_is_stored(
    proxied: Through, proxy: GatedProxy, upstream: Upstream, tmp_path: Path
) -> None:
    """Upstream's layer has its last byte flipped: the client streaming it gets
    every byte but the last ones held back, then the connection ends."""
    _, layer = publish_big_layer(upstream, tmp_path, "pt/flipped:1")
    blob_path = f"/v2/pt/flipped/blobs/{layer}"
    proxy.split.add(blob_path)
    proxy.corrupt.add(blob_path)
    path = endpoint_path(proxy.host, "pt/flipped")
    assert proxied.manifest(f"{path}/manifests/1").status == 200
    with streaming_blob(proxied, f"{path}/blobs/{layer}") as (response, size):
        assert response.read(1)  # streaming: the download is under way
        proxy.release()
        with pytest.raises(http.client.IncompleteRead) as cut:
            response.read()
    assert 1 + len(cut.value.partial) < size
    name = f"{proxy.host}/pt/flipped:1"
    wait_until(lambda: f"pulling {name} failed" in proxied.log(), 30)
    with pytest.raises(grpc.RpcError) as missing:
        proxied.stub.Inspect(pb.InspectRequest(image=name))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert proxied.stub.ListImages(pb.ListImagesRequest()).images == []


# ---- revalidation and staleness -------------------------------------------------------------


def test_a_tag_moved_upstream_is_pulled_again_once_its_ttl_passed(
    proxied: Through, through: Through, proxy: GatedProxy, upstream: Upstream
) -> None:
    """TTL 0 (``proxied``): every request checks; TTL 1h (``through``): none does."""
    upstream.publish_amd64("pt/moving:1")
    first, _ = upstream.raw("pt/moving/manifests/1")
    fresh = f"{endpoint_path(proxy.host, 'pt/moving')}/manifests/1"
    cached = f"{endpoint_path(upstream.host, 'pt/moving')}/manifests/1"
    assert proxied.manifest(fresh).body == first
    assert through.manifest(cached).body == first
    named(proxied, f"{proxy.host}/pt/moving:1")
    named(through, f"{upstream.host}/pt/moving:1")
    upstream.publish(f"oci:{upstream.layout}:v1-arm64", "pt/moving:1")
    moved, _ = upstream.raw("pt/moving/manifests/1")
    assert moved != first
    answer = proxied.manifest(fresh)
    assert answer.body == moved
    assert "Warning" not in answer.headers
    assert proxy.count("HEAD", "/v2/pt/moving/manifests/1") == 1
    assert named(proxied, f"{proxy.host}/pt/moving:1", sha(moved)) == sha(moved)
    assert through.manifest(cached).body == first  # within its TTL: not checked


def test_a_stored_tag_is_served_stale_with_a_warning_when_upstream_is_down(
    proxied: Through, proxy: GatedProxy, upstream: Upstream
) -> None:
    upstream.publish_amd64("pt/stale:1")
    expected, _ = upstream.raw("pt/stale/manifests/1")
    path = f"{endpoint_path(proxy.host, 'pt/stale')}/manifests/1"
    first = proxied.manifest(path)
    assert first.body == expected
    assert "Warning" not in first.headers
    named(proxied, f"{proxy.host}/pt/stale:1")
    proxy.stop()
    stale = proxied.manifest(path)
    assert stale.status == 200
    assert stale.body == expected
    assert stale.headers["Warning"] == STALE
    assert any("stale" in line and "pt/stale:1" in line for line in proxied.server.stderr_lines)
    scraped = proxied.scrape()
    assert scraped.value("imagestore_pull_through_total", outcome="stale") == 1
    assert scraped.value("imagestore_pull_through_total", outcome="miss-pulled") == 1


# ---- the size cap ---------------------------------------------------------------------------


def random_image(tag: str, seed: int) -> ImageSpec:
    return ImageSpec([tag], [tar_of({"data": random.Random(seed).randbytes(CAP_LAYER)})])


def test_the_size_cap_evicts_the_least_recently_served_pulled_through_image(
    upstream: Upstream, tmp_path: Path
) -> None:
    """Loaded L, then pulled through A and B (about 1 MiB each) fit under 3.5 MiB;
    A is served again, so pulling C evicts B, the least recently served; L,
    older than all but loaded, stays."""
    for letter, seed in (("a", 1), ("b", 2), ("c", 3)):
        archive = tmp_path / f"{letter}.tar"
        archive.write_bytes(docker_archive(random_image(f"cap/{letter}:1", seed)))
        upstream.publish(f"docker-archive:{archive}", f"pt/cap-{letter}:1")
    cap = (7 * CAP_LAYER) // 2
    capped = start_through(
        tmp_path / "root",
        upstream.host,
        extra=("--registry-pull-through-max-bytes", str(cap)),
    )
    try:
        load(capped.stub, random_image("loaded/l:1", 4))
        paths = {x: f"{endpoint_path(upstream.host, f'pt/cap-{x}')}/manifests/1" for x in "abc"}
        for letter in "ab":
            assert capped.manifest(paths[letter]).status == 200
            named(capped, f"{upstream.host}/pt/cap-{letter}:1")
        assert capped.manifest(paths["a"]).status == 200  # A is now the most recently served
        assert capped.manifest(paths["c"]).status == 200
        named(capped, f"{upstream.host}/pt/cap-c:1")
        # eviction is the pull's last step, after it names C
        wait_until(lambda: any("evicted" in line for line in capped.server.stderr_lines), 30)
        listed = {
            tag.canonical
            for image in capped.stub.ListImages(pb.ListImagesRequest()).images
            for tag in image.repo_tags
        }
        assert f"{upstream.host}/pt/cap-b:1" not in listed, listed
        for kept in ("pt/cap-a:1", "pt/cap-c:1"):
            assert f"{upstream.host}/{kept}" in listed, listed
        assert "docker.io/loaded/l:1" in listed, listed
        assert any("evicted" in line and "pt/cap-b" in line for line in capped.server.stderr_lines)
        usage = capped.stub.DiskUsage(pb.DiskUsageRequest())
        assert usage.total_size <= cap
    finally:
        stop_cleanly(capped.server)


# ---- metrics --------------------------------------------------------------------------------


def requests_counted(scraped: Scraped) -> float:
    return sum(
        value
        for (name, _), value in scraped.samples.items()
        if name == "imagestore_endpoint_requests_total"
    )


def test_requests_bytes_and_outcomes_are_counted(
    upstream: Upstream, outsider: Upstream, tmp_path: Path
) -> None:
    upstream.publish_amd64("pt/metered:1")
    metered = start_through(tmp_path / "root", upstream.host)
    try:
        path = endpoint_path(upstream.host, "pt/metered")
        pulled = metered.manifest(f"{path}/manifests/1")  # miss-pulled
        named(metered, f"{upstream.host}/pt/metered:1")
        again = metered.manifest(f"{path}/manifests/1")  # hit
        refused = metered.manifest(f"{endpoint_path(outsider.host, 'pt/hello')}/manifests/1")
        failed = metered.manifest(f"{path}/manifests/absent")
        layer = blobs_of(manifest_document(pulled))[-1]
        blob = metered.client.get(f"/v2/{path}/blobs/{layer}")
        head = metered.client.request("HEAD", f"/v2/{path}/blobs/{layer}")
        assert (pulled.status, again.status, refused.status, failed.status) == (200, 200, 404, 404)
        assert (blob.status, head.status) == (200, 200)
        # a request is counted as its access line is written, just after its answer
        wait_until(lambda: requests_counted(metered.scrape()) == 6)
        scraped = metered.scrape()
    finally:
        stop_cleanly(metered.server)

    def outcome(name: str) -> float:
        return scraped.value("imagestore_pull_through_total", outcome=name)

    outcomes = ("hit", "miss-pulled", "miss-joined", "refused", "stale", "failed")
    assert [outcome(o) for o in outcomes] == [1, 1, 0, 1, 0, 1]

    def requests(method: str, route: str, status: str) -> float:
        return scraped.value(
            "imagestore_endpoint_requests_total", method=method, route=route, status=status
        )

    assert requests("GET", "manifest", "2xx") == 2
    assert requests("GET", "manifest", "4xx") == 2
    assert requests("GET", "blob", "2xx") == 1
    assert requests("HEAD", "blob", "2xx") == 1
    manifests = len(pulled.body) + len(again.body) + len(refused.body) + len(failed.body)
    assert scraped.value("imagestore_endpoint_bytes_served_total", route="manifest") == manifests
    assert scraped.value("imagestore_endpoint_bytes_served_total", route="blob") == len(blob.body)
    assert scraped.value("imagestore_endpoint_requests_in_flight") == 0
    layers = scraped.value("imagestore_pull_layers_total", outcome="downloaded")
    assert layers == len(blobs_of(manifest_document(pulled))) - 1
