"""A real server with its registry endpoint (``--registry-listen 127.0.0.1:0``)
and a few images: single-platform ones loaded over gRPC (Docker media types),
a multi-platform OCI index and an image of another registry seeded into the
store before the server opens it (OCI media types).

The clients' tests (skopeo, containerd) fill their server from the session's
real `docker-registry` (tests/registry/conftest.py): its fixtures, and the
private containerd's, are shared here with every test of the folder.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from imagestore.store.store import Store
from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import Server, start_server
from tests.api.test_service import app, load
from tests.distribution.containerd import running_containerd  # noqa: F401 - the fixture
from tests.registry.conftest import (  # noqa: F401 - fixtures shared with registry tests
    FAST_RETRIES,
    Stub,
    published,
    registry,
    stop_cleanly,
)
from tests.store.builders import Built, build_image, build_index, layer_tar

#: every manifest media type, as containerd and skopeo send them
ACCEPT_ALL = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
WEB_TAGS = ["1", "2", "3", "4", "latest"]


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)

    def error_codes(self) -> list[str]:
        document = self.json()
        assert isinstance(document, dict)
        return [entry["code"] for entry in document["errors"]]


@dataclass
class Client:
    """HTTP/1.1 requests to the endpoint, one connection each (http.client)."""

    address: str
    context: ssl.SSLContext | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def connection(self) -> http.client.HTTPConnection:
        host, port = self.address.rsplit(":", 1)
        if self.context is not None:
            return http.client.HTTPSConnection(host, int(port), timeout=30, context=self.context)
        return http.client.HTTPConnection(host, int(port), timeout=30)

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> Answer:
        connection = self.connection()
        try:
            connection.request(method, path, body=body, headers={**self.headers, **(headers or {})})
            response = connection.getresponse()
            return Answer(response.status, response.headers, response.read())
        finally:
            connection.close()

    def get(self, path: str, **headers: str) -> Answer:
        return self.request("GET", path, {k.replace("_", "-"): v for k, v in headers.items()})


@dataclass
class Seeded:
    server: Server
    client: Client
    stub: pb_grpc.ImageStoreServiceStub
    web_digest: str  #: the manifest web:1 points at (Docker v2, loaded over gRPC)
    multi_digest: str  #: the OCI index multi:1 points at
    amd: Built
    arm: Built
    absent: str  #: an index entry whose manifest is not stored
    demo: Built  #: 127.0.0.1:5000/demo/app:1, an OCI manifest


def start_registry_server(root: Path, *extra: str) -> Server:
    """The server with its endpoint on a free loopback port."""
    server = start_server(
        root,
        "--listen", "127.0.0.1:0",
        "--registry-listen", "127.0.0.1:0",
        "--grace-period", "5",
        *extra,
    )  # fmt: skip
    assert server.registry_address, "".join(server.stderr_lines)[-2000:]
    return server


@dataclass
class Served:
    """A server whose store a test module filled over gRPC, and its endpoint's address."""

    server: Server
    stub: Stub
    #: 127.0.0.1:PORT of the OCI Distribution endpoint
    address: str
    #: the registry the store pulled from: 127.0.0.1:PORT
    upstream_host: str

    @property
    def upstream(self) -> str:
        """The upstream's first path component on the endpoint (host:port → host_port)."""
        return self.upstream_host.replace(":", "_")

    def url(self, path: str) -> str:
        """A name on the endpoint, as skopeo takes it."""
        return f"docker://{self.address}/{path}"


@contextmanager
def serving(root: Path, upstream_host: str) -> Iterator[Served]:
    """A server with its endpoint and fast registry retries, its store empty for the
    caller to fill (Load, or Pull from ``upstream_host``); stopped cleanly after."""
    running = start_registry_server(root, *FAST_RETRIES)
    try:
        assert running.registry_address is not None
        # the server answers in messages of up to 8 MiB (an include_raw Inspect), past
        # the client's default of 4 MiB
        options = [("grpc.max_receive_message_length", 16 << 20)]
        with grpc.insecure_channel(running.address, options=options) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
            yield Served(running, stub, running.registry_address, upstream_host)
    finally:
        stop_cleanly(running)


def stored_index(stub: Stub, name: str) -> pb.NamedIndex:
    """The index a name (familiar or canonical) points at, as ListImages shows it."""
    for image in stub.ListImages(pb.ListImagesRequest()).images:
        for index in image.indexes:
            if name in (index.name.familiar, index.name.canonical):
                found: pb.NamedIndex = index
                return found
    raise AssertionError(f"no index named {name}")


@dataclass
class Pushing:
    """A server taking pushes and deletes, its client and its gRPC stub."""

    server: Server
    client: Client
    stub: pb_grpc.ImageStoreServiceStub
    web_digest: str  #: the manifest web:1 points at


def start_push_server(root: Path, *extra: str) -> Server:
    """The server with its endpoint taking pushes and deletes."""
    return start_registry_server(root, "--registry-allow-push", "--registry-allow-delete", *extra)


@pytest.fixture(scope="module")
def pushing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushing]:
    """A server taking pushes and deletes, its store empty but for web:1 (loaded)."""
    root = tmp_path_factory.mktemp("pushing") / "root"
    server = start_push_server(root)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
            load(stub, app(1, "web:1"))
            web = stub.Inspect(pb.InspectRequest(image="web:1"))
            assert server.registry_address is not None
            yield Pushing(server, Client(server.registry_address), stub, web.manifest.digest)
    finally:
        assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]


def big_layer(size: int, seed: int = 7) -> bytes:
    """A layer tar of ``size`` random bytes: its gzip is larger than one 1 MiB read."""
    return layer_tar({"blob": random.Random(seed).randbytes(size)})


def seed_store(root: Path) -> tuple[Built, Built, str, str, Built]:
    """A multi-platform index and another registry's image, before the server starts."""
    absent = "sha256:" + "e" * 64
    with Store.open(root) as store:
        amd = build_image(store, [layer_tar({"a": b"amd" * 1000})], architecture="amd64")
        arm = build_image(
            store, [layer_tar({"a": b"arm" * 1000})], architecture="arm", variant="v7"
        )
        index = build_index(
            store,
            [(amd, "linux/amd64"), (arm, "linux/arm/v7")],
            names=["multi:1"],
            absent=[(absent, "linux/s390x")],
        )
        demo = build_image(store, [big_layer(5 << 19)], names=["127.0.0.1:5000/demo/app:1"])
    return amd, arm, index.target_digest, absent, demo


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    root = tmp_path_factory.mktemp("registry") / "root"
    amd, arm, multi_digest, absent, demo = seed_store(root)
    server = start_registry_server(root)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
            load(stub, app(1, "web:1"))
            for tag in WEB_TAGS[1:]:
                stub.Tag(pb.TagRequest(source="web:1", target=f"web:{tag}"))
            web = stub.Inspect(pb.InspectRequest(image="web:1"))
            assert server.registry_address is not None
            yield Seeded(
                server,
                Client(server.registry_address),
                stub,
                web.manifest.digest,
                multi_digest,
                amd,
                arm,
                absent,
                demo,
            )
    finally:
        assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]


class HeldDownload:
    """A GET whose body the test reads when it chooses: the socket's receive
    buffer is made tiny first, so the server's writes wait for the test."""

    def __init__(self, address: str, path: str, headers: dict[str, str] | None = None) -> None:
        host, port = address.rsplit(":", 1)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(30)
        self.sock.connect((host, int(port)))
        lines = [f"GET {path} HTTP/1.1", f"Host: {address}"]
        lines += [f"{key}: {value}" for key, value in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buffer = b""
        self.status = 0
        self.headers: dict[str, str] = {}

    def read_head(self) -> None:
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            assert chunk, "connection closed before the response's head"
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *fields = head.decode().split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {k.lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}

    def read_rest(self) -> bytes:
        """The body to its declared length, or what came before the connection ended."""
        size = int(self.headers["content-length"])
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # no longer held
        while len(self.buffer) < size:
            try:
                chunk = self.sock.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            self.buffer += chunk
        self.sock.close()
        return self.buffer
