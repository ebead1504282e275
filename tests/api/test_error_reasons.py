"""Every ErrorReason of the API, reached (docs/design.md §7).

The reasons of ``imagestore.errors`` are exactly the names of the proto's
``ErrorReason`` enum, each has one exception class, and no raise site outside
the servicer (and the client side) falls back to a category's generic reason.

Then each specific reason is caused for real, and the test asserts the status
code, the ErrorInfo (reason, domain, metadata keys) and the other detail
messages: BadRequest naming the request field on INVALID_ARGUMENT, ResourceInfo
on NOT_FOUND, RetryInfo where the reason promises one (and none elsewhere):

- through the real server process (``imagestore serve``), with hostile
  registries on loopback where only a registry can cause a reason (a server in
  test mode, so nothing connects anywhere but loopback);
- reasons that end ``imagestore serve`` at start (STORE_IN_USE, OPTION_INVALID...)
  through the server's own start (``api.server.serve``), in this process;
- CREDENTIAL_HELPER_TIMEOUT through the credential lookup itself (the real
  helper timeout is 30 s), and CREDENTIALS_INSECURE through the servicer's
  check (a caller that is not on this machine is needed).

The fallback reasons (one per code) are covered by tests/api/test_error_mapping.py.
"""

from __future__ import annotations

import ast
import asyncio
import errno
import json
import os
import random
import re
import resource
import ssl
import stat
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from aiohttp import web
from google.rpc import error_details_pb2, status_pb2

from imagestore import errors
from imagestore.api.admission import Limits
from imagestore.api.server import ServerConfig, serve
from imagestore.client import ImageStoreClient
from imagestore.dockerconfig import Credentials, DockerConfig
from imagestore.oci import mediatypes as mt
from imagestore.store.store import Store
from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import Server, start_server
from tests.archives import ImageSpec, docker_archive, sha, tar_of
from tests.pg import Cluster, database_for
from tests.pki import make_pki
from tests.registry.hostile import HostileRegistry, Listener, make_image
from tests.store.conftest import FAST, replica
from tests.store.test_fencing import count_dead

PROJECT = Path(__file__).resolve().parents[2]
SOURCE = PROJECT / "service" / "imagestore"
MiB = 1 << 20
Stub = pb_grpc.ImageStoreServiceStub
Code = grpc.StatusCode
Reason = errors.Reason
SEED = "example/seed:1"
TOKEN = "reasons-token"
#: the reasons sent where no specific one fits, one per code
FALLBACKS = {
    Reason.INVALID_ARGUMENT,
    Reason.NOT_FOUND,
    Reason.FAILED_PRECONDITION,
    Reason.ABORTED,
    Reason.PERMISSION_DENIED,
    Reason.UNAUTHENTICATED,
    Reason.RESOURCE_EXHAUSTED,
    Reason.DATA_LOSS,
    Reason.UNAVAILABLE,
    Reason.INTERNAL,
}
#: modules whose raise sites may still use a category's fallback: the servicer
#: and its converter (their own checks), and the client side, whose errors never
#: reach the wire
FALLBACK_ALLOWED = ("api/servicer.py", "api/convert.py", "cli/", "client/")
#: how long a test waits for the server to reach a FIFO (it is there at once)
REACH_TIMEOUT = 60.0
#: a blob far larger than what gRPC and the sockets buffer for an unread stream
HELD_BLOB = 32 * MiB

T = TypeVar("T")
#: the reasons the tests of this module reach, filled by @reaches
REACHED: set[str] = set()


def reaches(*reasons: Reason) -> Callable[[T], T]:
    """Mark a test as reaching ``reasons`` (the completeness test counts them)."""

    def mark(test: T) -> T:
        REACHED.update(reasons)
        return test

    return mark


# ---- the contract itself -----------------------------------------------------


def _classes() -> list[type[errors.ImageStoreError]]:
    found: list[type[errors.ImageStoreError]] = []
    pending = [errors.ImageStoreError]
    while pending:
        cls = pending.pop()
        if cls.__module__ == errors.__name__:  # not a test's own subclass
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return found[1:]  # not the base


def test_the_reasons_of_errors_py_are_the_proto_enum() -> None:
    declared = set(pb.ErrorReason.keys()) - {"ERROR_REASON_UNSPECIFIED"}
    assert {reason.name for reason in Reason} == declared
    assert all(reason.value == reason.name for reason in Reason)  # the name is what is sent
    assert pb.ErrorReason.Value("ERROR_REASON_UNSPECIFIED") == 0


def test_each_reason_has_one_class_and_every_class_a_declared_reason() -> None:
    by_reason: dict[str, list[str]] = {}
    for cls in _classes():
        if cls.reason == "":  # raised on the client side only: gRPC ends those calls
            assert cls in (errors.DeadlineExceeded, errors.Cancelled)
            continue
        assert cls.reason in Reason.__members__, cls
        by_reason.setdefault(cls.reason, []).append(cls.__name__)
    assert {reason: len(names) for reason, names in by_reason.items()} == dict.fromkeys(
        Reason, 1
    ), by_reason
    # a fallback is its category's own reason, and the category carries its code
    for cls in errors.ImageStoreError.__subclasses__():
        if cls.reason and cls.__module__ == errors.__name__:
            assert cls.reason in FALLBACKS | {Reason.OUT_OF_RANGE}
            assert cls.reason == cls.status


def _constructed(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """``errors.X(`` calls in a module: (line, X)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id == "errors":
                yield node.lineno, node.func.attr


def test_raise_sites_outside_the_servicer_name_a_specific_reason() -> None:
    generic = []
    for path in sorted(SOURCE.rglob("*.py")):
        relative = path.relative_to(SOURCE).as_posix()
        if relative.startswith(("v1/", *FALLBACK_ALLOWED)) or relative == "errors.py":
            continue
        for line, name in _constructed(ast.parse(path.read_text(), str(path))):
            cls = getattr(errors, name, None)
            if not (isinstance(cls, type) and issubclass(cls, errors.ImageStoreError)):
                continue
            # INTERNAL is a bug's own reason: the interceptor sends it for them
            if cls.reason in FALLBACKS - {Reason.INTERNAL} or not cls.reason:
                generic.append(f"{relative}:{line}: errors.{name}")
    assert generic == []


def test_every_specific_reason_is_reached_by_a_test_of_this_module() -> None:
    assert set(Reason) - FALLBACKS - REACHED == set()


# ---- what the server sent ----------------------------------------------------


@dataclass
class Sent:
    """A failed call as the server sent it."""

    code: grpc.StatusCode
    message: str
    reason: str
    metadata: dict[str, str]
    retry_after: float | None = None
    fields: list[str] = field(default_factory=list)
    resource: tuple[str, str, str] | None = None


def sent(error: grpc.RpcError) -> Sent:
    trailers: dict[str, Any] = dict(error.trailing_metadata() or ())  # type: ignore[arg-type]
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info), "the ErrorInfo comes first"
    assert info.domain == "imagestore"
    result = Sent(error.code(), str(error.details()), info.reason, dict(info.metadata))
    for detail in status.details[1:]:
        retry = error_details_pb2.RetryInfo()
        bad = error_details_pb2.BadRequest()
        about = error_details_pb2.ResourceInfo()
        if detail.Unpack(retry):
            assert result.retry_after is None
            result.retry_after = retry.retry_delay.ToNanoseconds() / 1e9
        elif detail.Unpack(bad):
            assert not result.fields
            result.fields = [violation.field for violation in bad.field_violations]
            assert all(v.reason == info.reason for v in bad.field_violations)
        elif detail.Unpack(about):
            assert result.resource is None
            result.resource = (about.resource_type, about.resource_name, about.owner)
            assert about.description == result.message
        else:
            pytest.fail(f"unexpected detail {detail.type_url}")
    return result


def expect(
    error: grpc.RpcError | BaseException,
    code: grpc.StatusCode,
    reason: Reason,
    metadata: set[str] | dict[str, str],
    *,
    field: str | None = None,
    resource: tuple[str, str, str] | None = None,
    retry_after: float | None = None,
) -> Sent:
    """Assert what a failed call sent: code, reason, metadata (its keys, or all
    of it), and exactly the detail messages given (BadRequest field, ResourceInfo,
    RetryInfo)."""
    assert isinstance(error, grpc.RpcError), error
    got = sent(error)
    assert (got.code, got.reason) == (code, reason), got
    if isinstance(metadata, dict):
        assert got.metadata == metadata
    else:
        assert set(got.metadata) == metadata, got.metadata
    # every INVALID_ARGUMENT but the server's own configuration names its field,
    # and every specific NOT_FOUND its resource
    assert (field is None) == (code != Code.INVALID_ARGUMENT or reason == Reason.OPTION_INVALID)
    assert (resource is None) == (code != Code.NOT_FOUND)
    assert got.fields == ([] if field is None else [field])
    assert got.resource == resource
    assert got.retry_after == retry_after
    return got


def expect_raised(
    exc: BaseException, status: str, reason: Reason, metadata: dict[str, str]
) -> None:
    """Assert an exception raised in this process (the reasons of a server's start)."""
    assert isinstance(exc, errors.ImageStoreError), exc
    assert (exc.status, exc.reason, exc.metadata) == (status, reason, metadata)


def failure(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


# ---- the registries and servers ------------------------------------------------


@dataclass
class StatusRegistry(HostileRegistry):
    """The hostile registry, also answering a chosen HTTP status: ``statuses``
    maps a blob digest (GET) or a repository (starting or sending an upload) to it."""

    statuses: dict[str, int] = field(default_factory=dict)

    def _refusal(self, key: str) -> web.Response | None:
        status = self.statuses.get(key)
        if status is None:
            return None
        body = {"errors": [{"code": "REFUSED", "message": f"refused with {status}"}]}
        return web.json_response(body, status=status)

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            refusal = self._refusal(request.match_info["digest"])
            if refusal is not None:
                self._seen(request.method, request.match_info["digest"])
                return refusal
        return await super()._blob(request)

    async def _start_upload(self, request: web.Request) -> web.StreamResponse:
        return self._refusal(request.match_info["name"]) or await super()._start_upload(request)

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        refusal = self._refusal(request.match_info["name"]) if request.method == "PATCH" else None
        return refusal or await super()._upload(request)


@contextmanager
def tls_registry(pki: Path) -> Iterator[str]:
    """An HTTPS ``/v2/`` on loopback whose certificate no configured CA signed."""
    app = web.Application()

    async def ping(request: web.Request) -> web.StreamResponse:
        return web.json_response({})

    app.router.add_get("/v2/", ping)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki / "server.crt", pki / "server.key")
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@dataclass
class World:
    """The shared server (test mode, fast retries) and what it talks to."""

    server: Server
    stub: Stub
    #: serves images, misbehaves per blob or repository; also named registry.test
    registry: StatusRegistry
    #: its --registry-config entry is broken (an 'auth' that is not base64)
    broken_config: HostileRegistry
    #: its --registry-config entry names a credential helper that is not installed
    helped: HostileRegistry
    #: a registry whose token service wants credentials
    guarded: HostileRegistry
    #: a registry whose token service redirects (a refresh token must not follow)
    redirecting: HostileRegistry
    #: counts connections: where refused URLs and certs.d hosts point
    listener: Listener
    #: an HTTPS registry with an untrusted certificate
    untrusted: str


def _registry_config(path: Path, broken: str, helped: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "auths": {broken: {"auth": "not base64!"}},
                "credHelpers": {helped: "imagestore-test-absent"},
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("reasons")
    with ExitStack() as stack:
        registry = StatusRegistry()
        stack.enter_context(registry.running())
        broken = stack.enter_context(HostileRegistry().running())
        helped = stack.enter_context(HostileRegistry().running())
        guarded = stack.enter_context(HostileRegistry().running())
        redirecting = stack.enter_context(HostileRegistry().running())
        listener = stack.enter_context(Listener())
        untrusted = stack.enter_context(tls_registry(make_pki(tmp / "pki")))
        # certs.d for the listener's address: a client certificate without its key
        certs = tmp / "certs.d" / f"127.0.0.1:{listener.port}"
        certs.mkdir(parents=True)
        (certs / "client.cert").write_text("not used: its key is missing\n")
        config = _registry_config(tmp / "registries.json", broken.host, helped.host)
        server = start_server(
            tmp / "root",
            "--listen=127.0.0.1:0",
            "--grace-period=5",
            "--registry-attempts=2",
            "--registry-backoff=0.01",
            "--registry-connect-timeout=5",
            "--registry-idle-timeout=5",
            f"--registry-config={config}",
            f"--registry-certs-dir={tmp / 'certs.d'}",
            "--registry-test-resolve=registry.test=127.0.0.1/public",
            "--insecure-registry=registry.test",
        )
        channel = stack.enter_context(grpc.insecure_channel(server.address))
        grpc.channel_ready_future(channel).result(timeout=30)
        stub: Stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
        load(stub, docker_archive(ImageSpec([SEED], [tar_of({"etc/seed": b"seed\n"})])))
        try:
            yield World(
                server, stub, registry, broken, helped, guarded, redirecting, listener, untrusted
            )
        finally:
            log = "".join(server.stderr_lines)
            assert server.stop() == 0, log[-3000:]
            assert "Traceback" not in log, log[-5000:]


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that wants a bearer token and runs one stream at a time."""
    tmp = tmp_path_factory.mktemp("strict")
    tokens = tmp / "tokens"
    tokens.write_text(TOKEN + "\n")
    server = start_server(
        tmp / "root",
        "--listen=127.0.0.1:0",
        "--grace-period=5",
        f"--auth-token-file={tokens}",
        "--max-concurrent-streams=1",
    )
    yield server
    assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]


def load_requests(archive: bytes, declared: int = 0) -> Iterator[pb.LoadRequest]:
    """A header declaring the archive's size when given, then the archive in 1 MiB chunks."""
    if declared:
        yield pb.LoadRequest(header=pb.LoadHeader(declared_size=declared))
    for start in range(0, max(len(archive), 1), MiB):
        yield pb.LoadRequest(chunk=archive[start : start + MiB])


def load(stub: Stub, archive: bytes, declared: int = 0) -> list[pb.LoadResponse]:
    return list(stub.Load(load_requests(archive, declared), timeout=60))


def pull(stub: Stub, image: str, auth: pb.RegistryAuth | None = None) -> None:
    list(stub.Pull(pb.PullRequest(image=image, auth=auth), timeout=60))


def push(stub: Stub, image: str) -> None:
    list(stub.Push(pb.PushRequest(image=image), timeout=60))


def read_blob(stub: Stub, request: pb.ReadBlobRequest) -> None:
    list(stub.ReadBlob(request, timeout=30))


def layer_path(world: World, digest: str) -> Path:
    return world.server.root / "blobs" / "sha256" / digest.removeprefix("sha256:")


# ---- archives no honest writer makes -------------------------------------------


def oci_layout(index: list[dict[str, Any]], blobs: list[bytes]) -> bytes:
    """An OCI layout tar: ``index.json`` listing ``index``, the blobs at their paths."""
    members = {f"blobs/sha256/{sha(blob)[7:]}": blob for blob in blobs}
    members["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
    members["index.json"] = json.dumps({"schemaVersion": 2, "manifests": index}).encode()
    return tar_of(members)


def descriptor(media_type: str, blob: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha(blob), "size": len(blob), **extra}


def oci_manifest(config: bytes, layers: list[tuple[str, bytes]]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": descriptor(mt.OCI_CONFIG, config),
            "layers": [descriptor(kind, layer) for kind, layer in layers],
        }
    ).encode()


def image_config(diff_ids: list[str], architecture: str = "amd64") -> bytes:
    return json.dumps(
        {
            "architecture": architecture,
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    ).encode()


def docker_archive_of(config: bytes, layer: bytes, tag: str) -> bytes:
    """A docker-save archive of one image with this exact config and layer file."""
    return tar_of(
        {
            "config.json": config,
            "layer/layer.tar": layer,
            "manifest.json": json.dumps(
                [{"Config": "config.json", "RepoTags": [tag], "Layers": ["layer/layer.tar"]}]
            ).encode(),
        }
    )


# ---- INVALID_ARGUMENT ----------------------------------------------------------


@reaches(Reason.REFERENCE_INVALID)
def test_reference_invalid_names_the_field_holding_the_reference(world: World) -> None:
    request = pb.TagRequest(source=SEED, target="Bad:Name")
    error = failure(lambda: world.stub.Tag(request, timeout=30))
    expect(
        error,
        Code.INVALID_ARGUMENT,
        Reason.REFERENCE_INVALID,
        {"reference": "Bad:Name"},
        field="target",
    )
    # an archive's name: the archive is the Load's `chunk`
    forged = docker_archive(ImageSpec(["example/seed@sha256:" + "a" * 64], [tar_of({"a": b""})]))
    error = failure(lambda: load(world.stub, forged))
    expect(error, Code.INVALID_ARGUMENT, Reason.REFERENCE_INVALID, {"reference"}, field="chunk")


@reaches(Reason.DIGEST_INVALID)
def test_digest_invalid(world: World) -> None:
    error = failure(lambda: list(world.stub.ReadBlob(pb.ReadBlobRequest(digest="md5:abc"))))
    expect(
        error, Code.INVALID_ARGUMENT, Reason.DIGEST_INVALID, {"digest": "md5:abc"}, field="digest"
    )
    # inside a reference: the field that contains it
    image = "example/seed@sha512:" + "a" * 128
    error = failure(lambda: world.stub.Inspect(pb.InspectRequest(image=image), timeout=30))
    expect(error, Code.INVALID_ARGUMENT, Reason.DIGEST_INVALID, {"digest"}, field="image")


@reaches(Reason.PLATFORM_INVALID)
def test_platform_invalid(world: World) -> None:
    platform = pb.Platform(os="linux", architecture="arm64", variant="v8/extra")
    request = pb.InspectRequest(image=SEED, platform=platform)
    error = failure(lambda: world.stub.Inspect(request, timeout=30))
    expect(
        error,
        Code.INVALID_ARGUMENT,
        Reason.PLATFORM_INVALID,
        {"platform": "linux/arm64/v8/extra"},
        field="platform",
    )


@reaches(Reason.FILTER_INVALID)
def test_filter_invalid(world: World) -> None:
    request = pb.ListImagesRequest(filters=["color=red"])
    error = failure(lambda: world.stub.ListImages(request, timeout=30))
    expect(
        error, Code.INVALID_ARGUMENT, Reason.FILTER_INVALID, {"filter": "color"}, field="filters"
    )
    request = pb.ListImagesRequest(filters=["reference=[a"])
    error = failure(lambda: world.stub.ListImages(request, timeout=30))
    expect(
        error,
        Code.INVALID_ARGUMENT,
        Reason.FILTER_INVALID,
        {"filter": "reference", "value": "[a"},
        field="filters",
    )


@reaches(Reason.PAGE_TOKEN_INVALID, Reason.PAGE_SIZE_INVALID)
def test_page_token_and_page_size_invalid(world: World) -> None:
    request = pb.ListImagesRequest(page_token="junk!")
    error = failure(lambda: world.stub.ListImages(request, timeout=30))
    expect(
        error,
        Code.INVALID_ARGUMENT,
        Reason.PAGE_TOKEN_INVALID,
        {"page_token": "junk!"},
        field="page_token",
    )
    error = failure(lambda: world.stub.ListImages(pb.ListImagesRequest(page_size=-1)))
    expect(
        error,
        Code.INVALID_ARGUMENT,
        Reason.PAGE_SIZE_INVALID,
        {"page_size": "-1"},
        field="page_size",
    )


@reaches(Reason.RANGE_INVALID)
def test_range_invalid(world: World) -> None:
    config = world.stub.Inspect(pb.InspectRequest(image=SEED), timeout=30).config_descriptor
    for request, field_name in (
        (pb.ReadBlobRequest(digest=config.digest, offset=-1), "offset"),
        (pb.ReadBlobRequest(digest=config.digest, limit=-1), "limit"),
    ):
        error = failure(partial(read_blob, world.stub, request))
        expect(error, Code.INVALID_ARGUMENT, Reason.RANGE_INVALID, {}, field=field_name)


@reaches(Reason.IMAGE_ID_AMBIGUOUS)
def test_image_id_ambiguous(world: World) -> None:
    # 17 images: two IDs share their first hex digit
    images = [
        ImageSpec([f"ambiguous/app:{n}"], [tar_of({"n": str(n).encode()})]) for n in range(17)
    ]
    load(world.stub, docker_archive(*images))
    firsts = [image.image_id[7] for image in images]
    shared = next(digit for digit in firsts if firsts.count(digit) > 1)
    prefix = f"sha256:{shared}"
    error = failure(lambda: world.stub.Inspect(pb.InspectRequest(image=prefix), timeout=30))
    got = expect(
        error,
        Code.INVALID_ARGUMENT,
        Reason.IMAGE_ID_AMBIGUOUS,
        {"prefix", "candidates"},
        field="image",
    )
    assert got.metadata["prefix"] == prefix
    candidates = set(got.metadata["candidates"].split(","))
    assert candidates == {i.image_id for i in images if i.image_id[7] == shared}


@reaches(Reason.ARGUMENT_MISSING)
def test_argument_missing(world: World) -> None:
    error = failure(lambda: list(world.stub.Save(pb.SaveRequest(), timeout=30)))
    expect(error, Code.INVALID_ARGUMENT, Reason.ARGUMENT_MISSING, {}, field="images")


@reaches(Reason.MESSAGE_ORDER_INVALID)
def test_message_order_invalid(world: World) -> None:
    # the start of an archive whose first member is larger than what is sent:
    # the loader waits for more, and the header comes instead
    start = tar_of({"big/layer.tar": b"x" * MiB})[:4096]

    def requests() -> Iterator[pb.LoadRequest]:
        yield pb.LoadRequest(chunk=start)
        yield pb.LoadRequest(header=pb.LoadHeader(declared_size=1024))

    error = failure(lambda: list(world.stub.Load(requests(), timeout=30)))
    expect(error, Code.INVALID_ARGUMENT, Reason.MESSAGE_ORDER_INVALID, {}, field="header")


@reaches(Reason.MALFORMED_CONTENT)
def test_malformed_content(world: World) -> None:
    error = failure(lambda: load(world.stub, b"not a tar" * 100))
    expect(error, Code.INVALID_ARGUMENT, Reason.MALFORMED_CONTENT, {"member"}, field="chunk")


@reaches(Reason.OPTION_INVALID)
def test_option_invalid_at_start_and_in_a_registry_config(world: World, tmp_path: Path) -> None:
    config = ServerConfig(
        listen="127.0.0.1:0", root=tmp_path / "root", limits=Limits(max_concurrent_rpcs=0)
    )
    with pytest.raises(errors.OptionInvalid) as refused:
        asyncio.run(serve(config))
    expect_raised(
        refused.value, "INVALID_ARGUMENT", Reason.OPTION_INVALID, {"option": "max-concurrent-rpcs"}
    )
    # A broken --registry-config entry is found when a pull needs it: not the
    # request's fault, so no BadRequest.
    error = failure(lambda: pull(world.stub, f"{world.broken_config.host}/some/app:1"))
    got = expect(error, Code.INVALID_ARGUMENT, Reason.OPTION_INVALID, {"path"})
    assert got.metadata["path"].endswith("registries.json")


# ---- NOT_FOUND -----------------------------------------------------------------


@reaches(Reason.IMAGE_NOT_FOUND)
def test_image_not_found(world: World) -> None:
    error = failure(lambda: world.stub.Inspect(pb.InspectRequest(image="nothere:1")))
    expect(
        error,
        Code.NOT_FOUND,
        Reason.IMAGE_NOT_FOUND,
        {"image": "nothere:1"},
        resource=("image", "nothere:1", ""),
    )


@reaches(Reason.BLOB_NOT_FOUND)
def test_blob_not_found(world: World) -> None:
    absent = "sha256:" + "0" * 64
    error = failure(lambda: list(world.stub.ReadBlob(pb.ReadBlobRequest(digest=absent))))
    expect(
        error,
        Code.NOT_FOUND,
        Reason.BLOB_NOT_FOUND,
        {"digest": absent},
        resource=("blob", absent, ""),
    )


@reaches(Reason.PLATFORM_NOT_FOUND)
def test_platform_not_found(world: World) -> None:
    request = pb.InspectRequest(image=SEED, platform=pb.Platform(os="linux", architecture="s390x"))
    error = failure(lambda: world.stub.Inspect(request, timeout=30))
    expect(
        error,
        Code.NOT_FOUND,
        Reason.PLATFORM_NOT_FOUND,
        {"platform": "linux/s390x", "image": SEED, "offered": "linux/amd64"},
        resource=("platform", "linux/s390x", SEED),
    )


@reaches(Reason.MANIFEST_UNKNOWN)
def test_manifest_unknown(world: World) -> None:
    repository = f"{world.registry.host}/absent/app"
    error = failure(lambda: pull(world.stub, f"{repository}:1"))
    expect(
        error,
        Code.NOT_FOUND,
        Reason.MANIFEST_UNKNOWN,
        {"repository": repository, "reference": "1"},
        resource=("manifest", "1", repository),
    )


@reaches(Reason.REGISTRY_NOT_FOUND)
def test_registry_not_found(world: World) -> None:
    image = make_image([tar_of({"etc/gone": b"a blob the registry lost"})])
    world.registry.add_image("lost/app", "1", image)
    lost = image.layer_digests[0]
    del world.registry.blobs[lost]
    error = failure(lambda: pull(world.stub, f"{world.registry.host}/lost/app:1"))
    expect(
        error,
        Code.NOT_FOUND,
        Reason.REGISTRY_NOT_FOUND,
        {"status": "404", "digest": lost},
        resource=("registry blob", lost, ""),
    )


# ---- FAILED_PRECONDITION -------------------------------------------------------


class ItemError(grpc.RpcError):
    """A per-item google.rpc.Status (a RemoveResult's error) seen as a call's
    error, to assert it as one: it carries the same code, message and details."""

    def __init__(self, status: status_pb2.Status) -> None:
        self._status = status

    def code(self) -> grpc.StatusCode:
        return next(code for code in Code if code.value[0] == self._status.code)

    def details(self) -> str:
        return str(self._status.message)

    def trailing_metadata(self) -> Any:
        return (("grpc-status-details-bin", self._status.SerializeToString()),)


@reaches(Reason.REMOVE_CONFLICT)
def test_remove_conflict(world: World) -> None:
    spec = ImageSpec(["conflict/a:1", "conflict/b:1"], [tar_of({"c": b"conflict"})])
    load(world.stub, docker_archive(spec))
    request = pb.RemoveRequest(images=[spec.image_id, "conflict/a:1"])
    conflict, applied = world.stub.Remove(request, timeout=30).results  # the call succeeds
    assert conflict.item == spec.image_id
    error = ItemError(conflict.error)
    expect(error, Code.FAILED_PRECONDITION, Reason.REMOVE_CONFLICT, {"image": spec.image_id})
    assert [name.familiar for name in applied.untagged] == ["conflict/a:1"]
    assert not applied.HasField("error")


def _two_platform_index(tag: str) -> tuple[bytes, bytes, str]:
    """An OCI layout of a two-platform index carrying only its amd64 manifest;
    (archive, index bytes, arm64 manifest digest)."""
    children = []
    blobs: list[bytes] = []
    for architecture in ("amd64", "arm64"):
        layer = zlib.compress(tar_of({"arch": architecture.encode()}), wbits=31)
        config = image_config([sha(zlib.decompress(layer, wbits=31))], architecture)
        manifest = oci_manifest(config, [(mt.OCI_LAYER_GZIP, layer)])
        platform = {"os": "linux", "architecture": architecture}
        children.append(descriptor(mt.OCI_MANIFEST, manifest, platform=platform))
        if architecture == "amd64":
            blobs += [layer, config, manifest]
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": children}
    ).encode()
    entry = descriptor(mt.OCI_INDEX, index, annotations={"io.containerd.image.name": tag})
    return oci_layout([entry], [*blobs, index]), index, children[1]["digest"]


@reaches(Reason.INDEX_INCOMPLETE)
def test_index_incomplete(world: World) -> None:
    archive, index, _ = _two_platform_index("docker.io/partial/app:1")
    load(world.stub, archive)
    error = failure(lambda: list(world.stub.Save(pb.SaveRequest(images=["partial/app:1"]))))
    expect(
        error,
        Code.FAILED_PRECONDITION,
        Reason.INDEX_INCOMPLETE,
        {"digest": sha(index), "missing": "linux/arm64"},
    )


@reaches(Reason.UNSUPPORTED_CONTENT)
def test_unsupported_content(world: World) -> None:
    # an index whose manifest has an uncompressed layer: storing it would change its digest
    layer = tar_of({"plain": b"not compressed"})
    config = image_config([sha(layer)])
    manifest = oci_manifest(config, [(mt.OCI_LAYER, layer)])
    platform = {"os": "linux", "architecture": "amd64"}
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [descriptor(mt.OCI_MANIFEST, manifest, platform=platform)],
        }
    ).encode()
    archive = oci_layout([descriptor(mt.OCI_INDEX, index)], [layer, config, manifest, index])
    error = failure(lambda: load(world.stub, archive))
    expect(error, Code.FAILED_PRECONDITION, Reason.UNSUPPORTED_CONTENT, {"digest": sha(index)})


@reaches(Reason.UNSUPPORTED_MEDIA_TYPE)
def test_unsupported_media_type(world: World) -> None:
    artifact = b'{"kind": "not an image"}'
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": descriptor("application/vnd.example.artifact+json", artifact),
            "layers": [],
        }
    ).encode()
    archive = oci_layout([descriptor(mt.OCI_MANIFEST, manifest)], [artifact, manifest])
    error = failure(lambda: load(world.stub, archive))
    expect(
        error,
        Code.FAILED_PRECONDITION,
        Reason.UNSUPPORTED_MEDIA_TYPE,
        {"mediaType": "application/vnd.example.artifact+json", "digest": sha(artifact)},
    )


@reaches(Reason.CREDENTIALS_INSECURE)
def test_credentials_insecure() -> None:
    from imagestore.api.servicer import check_credentials_transport

    with pytest.raises(errors.FailedPrecondition) as refused:
        check_credentials_transport(Credentials("robot", "secret"), False, "ipv4:192.0.2.7:4000")
    assert refused.value.reason == Reason.CREDENTIALS_INSECURE
    assert refused.value.metadata == {}


@reaches(Reason.CREDENTIAL_HELPER_FAILED)
def test_credential_helper_failed(world: World) -> None:
    error = failure(lambda: pull(world.stub, f"{world.helped.host}/some/app:1"))
    expect(
        error,
        Code.FAILED_PRECONDITION,
        Reason.CREDENTIAL_HELPER_FAILED,
        {"helper": "docker-credential-imagestore-test-absent"},
    )


@reaches(Reason.REGISTRY_REFUSED, Reason.REGISTRY_PAYLOAD_TOO_LARGE)
def test_a_registry_refusing_a_push(world: World) -> None:
    for repository, status, code, reason in (
        ("refused/app", 405, Code.FAILED_PRECONDITION, Reason.REGISTRY_REFUSED),
        ("large/app", 413, Code.RESOURCE_EXHAUSTED, Reason.REGISTRY_PAYLOAD_TOO_LARGE),
    ):
        world.registry.statuses[repository] = status
        target = f"{world.registry.host}/{repository}:1"
        world.stub.Tag(pb.TagRequest(source=SEED, target=target), timeout=30)
        error = failure(partial(push, world.stub, target))
        got = expect(error, code, reason, {"status", "digest"})
        assert got.metadata["status"] == str(status)


@reaches(Reason.REGISTRY_CERTS_INVALID)
def test_registry_certs_invalid(world: World) -> None:
    connections = world.listener.accepted
    error = failure(lambda: pull(world.stub, f"127.0.0.1:{world.listener.port}/some/app:1"))
    got = expect(error, Code.FAILED_PRECONDITION, Reason.REGISTRY_CERTS_INVALID, {"path"})
    assert got.metadata["path"].endswith(f"127.0.0.1:{world.listener.port}/client.cert")
    assert world.listener.accepted == connections  # refused before connecting


# ---- the server's start (reasons never sent to a caller) -----------------------


def _start_fails(config: ServerConfig) -> errors.ImageStoreError:
    with pytest.raises(errors.ImageStoreError) as refused:
        asyncio.run(serve(config))
    return refused.value


@reaches(Reason.STORE_IN_USE, Reason.LISTEN_FAILED)
def test_a_second_server_on_the_same_root_or_address(world: World, tmp_path: Path) -> None:
    root = world.server.root
    in_use = _start_fails(ServerConfig(listen="127.0.0.1:0", root=root))
    expect_raised(in_use, "FAILED_PRECONDITION", Reason.STORE_IN_USE, {"root": str(root)})
    taken = _start_fails(ServerConfig(listen=world.server.address, root=tmp_path / "root"))
    expect_raised(taken, "UNAVAILABLE", Reason.LISTEN_FAILED, {})
    assert "address already in use" in taken.message


@reaches(Reason.STORE_ROOT_UNSAFE)
def test_store_root_unsafe(tmp_path: Path) -> None:
    proc = Path("/proc/1")  # mode 0555, and no one may chmod it
    with pytest.raises(PermissionError):
        proc.chmod(0o700)
    refused = _start_fails(ServerConfig(listen="127.0.0.1:0", root=proc))
    expect_raised(refused, "FAILED_PRECONDITION", Reason.STORE_ROOT_UNSAFE, {"root": str(proc)})


@reaches(Reason.CATALOG_TOO_NEW, Reason.CATALOG_CORRUPT)
def test_a_catalog_from_a_newer_imagestore_or_not_a_catalog(tmp_path: Path) -> None:
    import sqlite3

    newer = tmp_path / "newer"
    Store.open(newer).close()
    with sqlite3.connect(newer / "catalog.db") as db:
        db.execute("PRAGMA user_version = 999")
    refused = _start_fails(ServerConfig(listen="127.0.0.1:0", root=newer))
    assert isinstance(refused, errors.CatalogTooNew)
    expect_raised(
        refused,
        "FAILED_PRECONDITION",
        Reason.CATALOG_TOO_NEW,
        {"version": "999", "supported": refused.metadata["supported"]},
    )
    assert int(refused.metadata["supported"]) < 999
    garbage = tmp_path / "garbage"
    garbage.mkdir(mode=0o700)
    (garbage / "catalog.db").write_bytes(b"not a database" * 1000)
    refused = _start_fails(ServerConfig(listen="127.0.0.1:0", root=garbage))
    expect_raised(refused, "DATA_LOSS", Reason.CATALOG_CORRUPT, {})


@reaches(Reason.BLOB_DIR_MISMATCH)
def test_a_blob_directory_of_another_store(tmp_path: Path) -> None:
    root = tmp_path / "root"
    Store.open(root).close()
    found = (root / "blobs" / "store-id").read_text().split()[0]
    (root / "catalog.db").unlink()  # a catalog made anew beside the old blobs
    refused = _start_fails(ServerConfig(listen="127.0.0.1:0", root=root))
    assert isinstance(refused, errors.BlobDirMismatch)
    expected = refused.metadata["expected"]
    assert re.fullmatch("[0-9a-f]{32}", expected)
    assert expected != found
    expect_raised(
        refused,
        "FAILED_PRECONDITION",
        Reason.BLOB_DIR_MISMATCH,
        {"blob_dir": str(root / "blobs"), "expected": expected, "found": found},
    )


@reaches(Reason.CATALOG_UNAVAILABLE)
def test_a_catalog_database_that_cannot_be_reached(tmp_path: Path) -> None:
    # A socket directory where no PostgreSQL listens: refused at once, at start.
    # (A connection lost while serving: tests/api/test_postgres.py.)
    nowhere = tmp_path / "no-server"
    nowhere.mkdir()
    url = f"postgresql://postgres@/imagestore?host={nowhere}"
    refused = _start_fails(ServerConfig(listen="127.0.0.1:0", root=tmp_path / "root", catalog=url))
    expect_raised(refused, "UNAVAILABLE", Reason.CATALOG_UNAVAILABLE, {})
    assert refused.retry_after == 1.0
    assert str(nowhere) in refused.message


@reaches(Reason.LISTENER_INSECURE)
def test_listener_insecure(tmp_path: Path) -> None:
    # refused before anything binds: no packet could reach another machine
    refused = _start_fails(ServerConfig(listen="0.0.0.0:0", root=tmp_path / "root"))
    expect_raised(refused, "FAILED_PRECONDITION", Reason.LISTENER_INSECURE, {"option": "listen"})


# ---- ABORTED -------------------------------------------------------------------


@reaches(Reason.PRUNE_RUNNING)
def test_prune_running(world: World) -> None:
    """Two prunes while this test holds the catalog's write lock: the first to
    start waits for it, holding the prune; the other is refused at once."""
    import sqlite3

    db = sqlite3.connect(world.server.root / "catalog.db", isolation_level=None, timeout=30)
    db.execute("BEGIN IMMEDIATE")
    try:
        with ThreadPoolExecutor(2) as pool:
            calls = [pool.submit(world.stub.Prune, pb.PruneRequest(), timeout=60) for _ in range(2)]
            done, pending = wait(calls, timeout=60, return_when=FIRST_COMPLETED)
            assert len(done) == 1
            assert len(pending) == 1
            refused = done.pop().exception()
            db.execute("ROLLBACK")
            assert pending.pop().result(timeout=60) is not None  # the other one ran
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")
        db.close()
    assert refused is not None
    expect(refused, Code.ABORTED, Reason.PRUNE_RUNNING, {})


class Fifo:
    """A FIFO in a blob directory, named like a blob: a reader that opens it waits
    there; :meth:`reached` returns once one has (the event a test waits for)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: int | None = None

    def reached(self) -> None:
        opened: list[int] = []
        thread = threading.Thread(target=lambda: opened.append(os.open(self.path, os.O_WRONLY)))
        thread.start()
        thread.join(REACH_TIMEOUT)
        if not opened:  # let our own thread go before failing
            os.close(os.open(self.path, os.O_RDONLY | os.O_NONBLOCK))
            thread.join()
            os.close(opened[0])
            pytest.fail(f"nothing opened {self.path.name} in {REACH_TIMEOUT:.0f} s")
        self._writer = opened[0]

    def release(self) -> None:
        """The reader sees the end of the file."""
        writer, self._writer = self._writer, None
        if writer is not None:
            os.close(writer)


@contextmanager
def fifo_blob(root: Path, hex_name: str) -> Iterator[Fifo]:
    fifo = Fifo(root / "blobs" / "sha256" / hex_name)
    os.mkfifo(fifo.path, 0o600)
    try:
        yield fifo
    finally:
        fifo.release()
        try:  # a reader still waiting in open() gets an end of file at once
            os.close(os.open(fifo.path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as exc:
            if exc.errno not in (errno.ENXIO, errno.ENOENT):
                raise
        fifo.path.unlink(missing_ok=True)


@reaches(Reason.CHECK_RUNNING)
def test_check_running(world: World) -> None:
    with fifo_blob(world.server.root, "0" * 64) as fifo:  # read first: Check waits there
        first = world.stub.Check(pb.CheckRequest(), timeout=120)  # a stream: sent at once
        fifo.reached()
        error = failure(lambda: list(world.stub.Check(pb.CheckRequest(), timeout=30)))
        fifo.release()
        assert list(first)[-1].WhichOneof("response") == "summary"
    expect(error, Code.ABORTED, Reason.CHECK_RUNNING, {}, retry_after=5.0)


# ---- PERMISSION_DENIED, UNAUTHENTICATED ----------------------------------------


@reaches(Reason.REGISTRY_UNAUTHORIZED)
def test_registry_unauthorized(world: World) -> None:
    world.guarded.token_auth = "robot:token-secret"
    world.guarded.add_image("guarded/app", "1", make_image([tar_of({"g": b"guarded"})]))
    error = failure(lambda: pull(world.stub, f"{world.guarded.host}/guarded/app:1"))
    expect(error, Code.PERMISSION_DENIED, Reason.REGISTRY_UNAUTHORIZED, {"status": "401"})


@reaches(Reason.ADDRESS_REFUSED)
def test_address_refused(world: World) -> None:
    image = make_image([tar_of({"etc/ssrf": b"redirected inward"})])
    world.registry.add_image("ssrf/app", "1", image)
    inward = f"http://127.0.0.1:{world.listener.port}/x"
    world.registry.faults[image.layer_digests[0]] = f"redirect:{inward}"
    connections = world.listener.accepted
    name = f"registry.test:{world.registry.port}/ssrf/app:1"
    error = failure(lambda: pull(world.stub, name))
    got = expect(
        error,
        Code.PERMISSION_DENIED,
        Reason.ADDRESS_REFUSED,
        {"host", "address", "class", "registry_class", "digest"},
    )
    assert (got.metadata["address"], got.metadata["class"]) == ("127.0.0.1", "loopback")
    assert got.metadata["registry_class"] == "public"
    assert world.listener.accepted == connections


@reaches(Reason.TOKEN_REDIRECT_REFUSED)
def test_token_redirect_refused(world: World) -> None:
    registry = world.redirecting
    registry.token_auth = "robot:token-secret"
    registry.refresh_token = "refresh-123"
    registry.token_redirect = f"http://127.0.0.1:{world.listener.port}/token"
    registry.add_image("tokens/app", "1", make_image([tar_of({"t": b"token"})]))
    auth = pb.RegistryAuth(username="robot", identity_token="refresh-123")
    connections = world.listener.accepted
    error = failure(lambda: pull(world.stub, f"{registry.host}/tokens/app:1", auth))
    expect(error, Code.PERMISSION_DENIED, Reason.TOKEN_REDIRECT_REFUSED, {"status": "307"})
    assert world.listener.accepted == connections


@reaches(Reason.BEARER_TOKEN_INVALID)
def test_bearer_token_invalid(strict: Server) -> None:
    with grpc.insecure_channel(strict.address) as channel:
        stub: Stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            error = failure(partial(stub.ListImages, pb.ListImagesRequest(), metadata=metadata))
            expect(error, Code.UNAUTHENTICATED, Reason.BEARER_TOKEN_INVALID, {})


# ---- RESOURCE_EXHAUSTED --------------------------------------------------------


@reaches(Reason.SIZE_LIMIT_EXCEEDED)
def test_size_limit_exceeded(world: World) -> None:
    members = {"manifest.json": b"[" + b" " * (5 * MiB) + b"]"}  # over 4 MiB
    error = failure(lambda: load(world.stub, tar_of(members)))
    expect(
        error,
        Code.RESOURCE_EXHAUSTED,
        Reason.SIZE_LIMIT_EXCEEDED,
        {"member": "manifest.json"},
    )


@reaches(Reason.TOO_MANY_CONCURRENT_CALLS)
def test_too_many_concurrent_calls(strict: Server) -> None:
    """One ReadBlob fills --max-concurrent-streams 1: its first message says it
    runs, and its client reads no more of a blob far larger than what the
    transport buffers, so it stays in flight."""
    token = (("authorization", f"Bearer {TOKEN}"),)
    noise = random.Random(11).randbytes(HELD_BLOB)  # incompressible: stored as large
    with grpc.insecure_channel(strict.address) as channel:
        stub: Stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
        spec = ImageSpec(["held/app:1"], [tar_of({"noise": noise})])
        list(stub.Load(load_requests(docker_archive(spec)), metadata=token, timeout=120))
        details = stub.Inspect(pb.InspectRequest(image="held/app:1"), metadata=token)
        held = stub.ReadBlob(
            pb.ReadBlobRequest(digest=details.layers[0].digest), metadata=token, timeout=120
        )
        try:
            next(held)  # the stream runs
            request = pb.ReadBlobRequest(digest=details.config_descriptor.digest)
            error = failure(lambda: list(stub.ReadBlob(request, metadata=token, timeout=30)))
        finally:
            held.cancel()
    expect(
        error,
        Code.RESOURCE_EXHAUSTED,
        Reason.TOO_MANY_CONCURRENT_CALLS,
        {"limit": "max-concurrent-streams", "max": "1"},
        retry_after=1.0,
    )


@reaches(Reason.DISK_FULL)
def test_disk_full(world: World) -> None:
    error = failure(lambda: load(world.stub, b"x", declared=1 << 60))
    expect(error, Code.RESOURCE_EXHAUSTED, Reason.DISK_FULL, {"declared", "free"})


@reaches(Reason.REGISTRY_RATE_LIMITED)
def test_registry_rate_limited(world: World) -> None:
    image = make_image([tar_of({"etc/busy": b"rate limited"})])
    world.registry.add_image("limited/app", "1", image)
    layer = image.layer_digests[0]
    world.registry.statuses[layer] = 429
    error = failure(lambda: pull(world.stub, f"{world.registry.host}/limited/app:1"))
    expect(
        error,
        Code.RESOURCE_EXHAUSTED,
        Reason.REGISTRY_RATE_LIMITED,
        {"status": "429", "digest": layer},
        retry_after=5.0,  # no Retry-After from the registry: the default
    )
    assert world.registry.downloads(layer) == 2  # --registry-attempts


# ---- DATA_LOSS -----------------------------------------------------------------


@reaches(Reason.DIGEST_MISMATCH)
def test_digest_mismatch(world: World) -> None:
    config = image_config([])
    manifest = oci_manifest(config, [])
    lie = b'{"architecture": "amd64", "os": "linux", "rootfs": {"diff_ids": []}}'
    members = {
        f"blobs/sha256/{sha(manifest)[7:]}": manifest,
        f"blobs/sha256/{sha(config)[7:]}": lie,  # not what its name says
        "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
        "index.json": json.dumps(
            {"schemaVersion": 2, "manifests": [descriptor(mt.OCI_MANIFEST, manifest)]}
        ).encode(),
    }
    error = failure(lambda: load(world.stub, tar_of(members)))
    expect(
        error,
        Code.DATA_LOSS,
        Reason.DIGEST_MISMATCH,
        {"expected": sha(config), "actual": sha(lie)},
    )


@reaches(Reason.DIFF_ID_MISMATCH)
def test_diff_id_mismatch(world: World) -> None:
    layer = tar_of({"etc/real": b"the layer"})
    claimed = sha(tar_of({"etc/other": b"another layer"}))
    archive = docker_archive_of(image_config([claimed]), layer, "diff/app:1")
    error = failure(lambda: load(world.stub, archive))
    got = expect(error, Code.DATA_LOSS, Reason.DIFF_ID_MISMATCH, {"digest", "diff_id"})
    assert got.metadata["diff_id"] == claimed


@reaches(Reason.BLOB_CORRUPT)
def test_blob_corrupt(world: World) -> None:
    spec = ImageSpec(["corrupt/app:1"], [tar_of({"etc/c": b"soon corrupt" * 100})])
    load(world.stub, docker_archive(spec))
    layer = world.stub.Inspect(pb.InspectRequest(image="corrupt/app:1")).layers[0].digest
    path = layer_path(world, layer)
    path.chmod(0o600)
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    error = failure(lambda: list(world.stub.ReadBlob(pb.ReadBlobRequest(digest=layer))))
    expect(error, Code.DATA_LOSS, Reason.BLOB_CORRUPT, {"digest": layer})


@reaches(Reason.REGISTRY_RESPONSE_INVALID)
def test_registry_response_invalid(world: World) -> None:
    garbage = b"{not json"
    world.registry.add_manifest("garbage/app", "1", garbage, mt.OCI_MANIFEST)
    error = failure(lambda: pull(world.stub, f"{world.registry.host}/garbage/app:1"))
    expect(
        error,
        Code.DATA_LOSS,
        Reason.REGISTRY_RESPONSE_INVALID,
        {"content": "manifest", "digest": sha(garbage)},
    )


def _gzip(data: bytes) -> bytes:
    return zlib.compress(data, wbits=31)


@reaches(
    Reason.CORRUPT_COMPRESSED_DATA,
    Reason.TRUNCATED_COMPRESSED_DATA,
    Reason.TRAILING_DATA,
    Reason.UNSUPPORTED_COMPRESSION,
)
def test_compressed_data_that_does_not_decode(world: World) -> None:
    archive = docker_archive(ImageSpec(["compressed/app:1"], [tar_of({"z": b"z" * 1000})]))
    whole = _gzip(archive)
    corrupt = b"\x1f\x8b\x09\x00" + bytes(100)  # a gzip header naming no known method
    layer = _gzip(tar_of({"etc/l": b"layer" * 100})) + b"trailing garbage"
    trailing = docker_archive_of(
        image_config([sha(tar_of({"etc/l": b"layer" * 100}))]), layer, "trailing/app:1"
    )
    # a Load's decoder errors name no member (only pulls and pushes name their blob)
    for data, reason in (
        (corrupt, Reason.CORRUPT_COMPRESSED_DATA),
        (whole[: len(whole) // 2], Reason.TRUNCATED_COMPRESSED_DATA),
        (trailing, Reason.TRAILING_DATA),
        (b"\x28\xb5\x2f\xfd" + bytes(100), Reason.UNSUPPORTED_COMPRESSION),
    ):
        error = failure(partial(load, world.stub, data))
        expect(error, Code.DATA_LOSS, reason, {})


# ---- OUT_OF_RANGE, UNAVAILABLE -------------------------------------------------


@reaches(Reason.OUT_OF_RANGE)
def test_out_of_range(world: World) -> None:
    config = world.stub.Inspect(pb.InspectRequest(image=SEED), timeout=30).config_descriptor
    past = config.size + 1
    request = pb.ReadBlobRequest(digest=config.digest, offset=past)
    error = failure(lambda: list(world.stub.ReadBlob(request, timeout=30)))
    expect(
        error,
        Code.OUT_OF_RANGE,
        Reason.OUT_OF_RANGE,
        {"digest": config.digest, "offset": str(past), "size": str(config.size)},
    )


@reaches(Reason.CURSOR_INVALID)
def test_cursor_invalid(world: World) -> None:
    past = 1 << 60  # no store hands out that many events
    request = pb.WatchEventsRequest(cursor=past)
    error = failure(lambda: list(world.stub.WatchEvents(request, timeout=30)))
    got = expect(
        error, Code.INVALID_ARGUMENT, Reason.CURSOR_INVALID, {"cursor", "last"}, field="cursor"
    )
    assert got.metadata["cursor"] == str(past)
    assert int(got.metadata["last"]) >= 0


@reaches(Reason.CURSOR_EXPIRED)
def test_cursor_expired(tmp_path: Path) -> None:
    server = start_server(tmp_path / "root", "--listen=127.0.0.1:0", "--events-max-count=2")
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = Stub(channel)  # type: ignore[no-untyped-call]
            archive = docker_archive(ImageSpec(tags=["cursor:0"], layers=[tar_of({"a": b"a"})]))
            list(stub.Load(iter([pb.LoadRequest(chunk=archive)]), timeout=30))  # event 1
            for number in range(1, 4):  # events 2, 3, 4: the journal keeps 3 and 4
                stub.Tag(pb.TagRequest(source="cursor:0", target=f"cursor:{number}"), timeout=30)
            request = pb.WatchEventsRequest(cursor=1)
            error = failure(lambda: list(stub.WatchEvents(request, timeout=30)))
            expect(error, Code.OUT_OF_RANGE, Reason.CURSOR_EXPIRED, {"cursor": "1", "oldest": "3"})
    finally:
        assert server.stop() == 0


@reaches(Reason.REGISTRY_UNAVAILABLE)
def test_registry_unavailable(world: World) -> None:
    image = make_image([tar_of({"etc/later": b"come back later"})])
    world.registry.add_image("later/app", "1", image)
    layer = image.layer_digests[0]
    world.registry.faults[layer] = "retry-after:1"  # 503, Retry-After: 1
    error = failure(lambda: pull(world.stub, f"{world.registry.host}/later/app:1"))
    expect(
        error,
        Code.UNAVAILABLE,
        Reason.REGISTRY_UNAVAILABLE,
        {"status": "503", "digest": layer},
        retry_after=1.0,  # the registry's Retry-After
    )
    # nothing listens there: the connection fails (the default delay)
    with Listener() as closed:
        port = closed.port
    error = failure(lambda: pull(world.stub, f"127.0.0.1:{port}/some/app:1"))
    got = expect(error, Code.UNAVAILABLE, Reason.REGISTRY_UNAVAILABLE, {"host"}, retry_after=5.0)
    assert got.metadata["host"] == "127.0.0.1"


@reaches(Reason.REGISTRY_CERTIFICATE_UNTRUSTED)
def test_registry_certificate_untrusted(world: World) -> None:
    error = failure(lambda: pull(world.stub, f"{world.untrusted}/some/app:1"))
    expect(
        error,
        Code.UNAVAILABLE,
        Reason.REGISTRY_CERTIFICATE_UNTRUSTED,
        {"host": world.untrusted},
    )


@reaches(Reason.CREDENTIAL_HELPER_TIMEOUT)
def test_credential_helper_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A helper that never answers (it waits on a FIFO nobody writes)."""
    import imagestore.dockerconfig

    never = tmp_path / "never"
    os.mkfifo(never)
    helper = tmp_path / "bin" / "docker-credential-silent"
    helper.parent.mkdir()
    helper.write_text(f"#!/bin/sh\nexec cat {never}\n")
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{helper.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(imagestore.dockerconfig, "_HELPER_TIMEOUT", 0.5)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"credHelpers": {"silent.example": "silent"}}))
    with pytest.raises(errors.CredentialHelperTimeout) as refused:
        DockerConfig(config).lookup("silent.example")
    expect_raised(
        refused.value,
        "UNAVAILABLE",
        Reason.CREDENTIAL_HELPER_TIMEOUT,
        {"helper": "docker-credential-silent"},
    )


@reaches(Reason.IO_ERROR)
def test_io_error(world: World) -> None:
    """The server may write files of 1 KiB at most for a moment (RLIMIT_FSIZE;
    Python ignores SIGXFSZ, so the write fails with EFBIG): a Load's first
    blob cannot be written."""
    pid = world.server.process.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    noise = random.Random(7).randbytes(64 << 10)  # incompressible: written in full
    archive = docker_archive(ImageSpec(["io/app:1"], [tar_of({"io": noise})]))
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (1024, hard))
    try:
        error = failure(partial(load, world.stub, archive))
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))
    got = expect(error, Code.UNAVAILABLE, Reason.IO_ERROR, set())
    assert "File too large" in got.message


# ---- the client ----------------------------------------------------------------


def test_the_client_raises_the_reason_class_with_what_the_server_sent(world: World) -> None:
    with ImageStoreClient(world.server.address) as client:
        with pytest.raises(errors.ImageNotFound) as missing:
            client.inspect("nothere:2")
        assert missing.value.reason == Reason.IMAGE_NOT_FOUND
        assert missing.value.status == "NOT_FOUND"
        assert missing.value.metadata == {"image": "nothere:2"}
        assert missing.value.resource == errors.Resource("image", "nothere:2")
        assert missing.value.field is None
        assert missing.value.retry_after is None
        with pytest.raises(errors.ReferenceInvalid) as bad:
            client.tag(SEED, "Bad:Name")
        assert (bad.value.reason, bad.value.field) == (Reason.REFERENCE_INVALID, "target")
        assert bad.value.resource is None
        with fifo_blob(world.server.root, "0" * 64) as fifo:
            first = world.stub.Check(pb.CheckRequest(), timeout=120)
            fifo.reached()
            try:
                with pytest.raises(errors.CheckRunning) as busy:
                    client.check_report()
            finally:
                fifo.release()
                list(first)
        assert busy.value.retry_after == 5.0
        assert isinstance(busy.value, errors.Aborted)  # still its category


@reaches(Reason.LEASE_EXPIRED)
def test_a_lease_that_expired_while_its_replica_was_unheard(
    tmp_path: Path, postgres_cluster: Cluster
) -> None:
    # Two store replicas on one database (tests/store/test_fencing.py: the cases).
    url = postgres_cluster.create_database(database_for(tmp_path))
    shared = tmp_path / "shared"
    with (
        replica(tmp_path / "a", url, shared, **FAST) as a,
        replica(tmp_path / "b", url, shared, **FAST) as b,
    ):
        lease = a.open_lease()
        a.put_blob(lease, b"the lease has rows", "application/octet-stream")
        count_dead(a, b)
        with pytest.raises(errors.LeaseExpired) as refused:
            a.put_blob(lease, b"more under it", "application/octet-stream")
        expect_raised(
            refused.value,
            "UNAVAILABLE",
            Reason.LEASE_EXPIRED,
            {"replica": a._parts.replica.id, "lease": str(lease.id)},
        )
        assert refused.value.retry_after == 1.0
        a.end_lease(lease)
