"""The attacks of the hostile-input issue, as small functions for ``bench_hostile``.

Each :class:`Attack` prepares its material against a fresh server (payloads,
seeded images, a registry on loopback), then hands back a *round*: one run of
the attack, given a deadline, returning the status code of every call it made
(``"OK"``, ``"DEADLINE_EXCEEDED"``...). A round never raises for what the
server answers, so an attack the server refuses still gets its latency line,
and one that freezes the server ends at the client's deadline.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import tarfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from aiohttp import web

from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.archives import ImageSpec, docker_archive, sha, tar_of
from tests.registry.hostile import OCI_MANIFEST, HostileRegistry, Image, make_image

Stub = pb_grpc.ImageStoreServiceStub
#: one round: its deadline in seconds → the status code of each call it made
Round = Callable[[float], list[str]]
MiB = 1 << 20
BLOCK = 512
CHUNK = MiB
#: the documented cap on a manifest or config (README: "capped at 4 MiB")
DOCUMENT_CAP = 4 * MiB
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
#: how long a round's setup call (a seeding Load, a warm-up Pull) may take
SETUP_TIMEOUT = 120.0


@dataclass
class Context:
    """What an attack may use: the server's stub, a scratch directory, the
    number of health probes taken so far (to hold a round open until enough
    were), and notes for the report (e.g. a setup call the server refused)."""

    stub: Stub
    scratch: Path
    probes: Callable[[], int]
    min_probes: int
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Attack:
    """A named attack; ``prepare`` sets it up and yields its round."""

    name: str
    prepare: Callable[[Context], AbstractContextManager[Round]]


@dataclass(frozen=True)
class Sizes:
    """The knobs of the heavier attacks (command-line options of the benchmark)."""

    pax_digits: int = MiB
    check_bytes: int = 300 * 10**6
    ping_body: int = 400 * MiB


def code_of(error: grpc.RpcError) -> str:
    """The status code's name (``DEADLINE_EXCEEDED``), for the outcome column."""
    code = error.code()
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


# ---- tar and gzip, by hand ------------------------------------------------------
# Written byte by byte rather than with tarfile: the attacks are headers tarfile
# would not write (a PAX record of digits only), and 300,000 headers are built
# much faster this way.


def tar_header(name: bytes, size: int, kind: bytes = b"0") -> bytes:
    """One ustar header block with a correct checksum."""
    header = bytearray(BLOCK)
    header[0 : min(len(name), 100)] = name[:100]
    header[100:108] = b"0000644\0"
    header[108:116] = b"0000000\0"
    header[116:124] = b"0000000\0"
    header[124:136] = b"%011o\0" % size
    header[136:148] = b"00000000000\0"
    header[148:156] = b" " * 8
    header[156:157] = kind
    header[257:265] = b"ustar\x0000"
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def padding(size: int) -> bytes:
    """Zeros up to the next block boundary."""
    return b"\0" * (-size % BLOCK)


END_OF_ARCHIVE = b"\0" * (2 * BLOCK)


def gzip_of(parts: Iterable[bytes]) -> bytes:
    """A gzip stream of the concatenated parts, compressed as they come (a part
    may be repeated many times without the whole ever being in memory)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [compressor.compress(part) for part in parts]
    out.append(compressor.flush())
    return b"".join(out)


def repeated(part: bytes, total: int) -> Iterator[bytes]:
    """``total`` bytes made of ``part`` over and over, one ``part`` at a time."""
    whole, rest = divmod(total, len(part))
    for _ in range(whole):
        yield part
    if rest:
        yield part[:rest]


def pax_digits_archive(digits: int) -> bytes:
    """CVE-2024-6232's shape: a PAX extended header whose records are one long
    run of digits (the interpreter's header regex backtracks quadratically)."""
    return gzip_of(
        [
            tar_header(b"././@PaxHeader", digits, b"x"),
            *repeated(b"1" * MiB, digits),
            padding(digits),
            tar_header(b"file", 0),
            END_OF_ARCHIVE,
        ]
    )


def gnu_long_name_archive(name_size: int) -> bytes:
    """A GNU long-name ('L') header claiming ``name_size`` bytes of name."""
    return gzip_of(
        [
            tar_header(b"././@LongLink", name_size, b"L"),
            *repeated(b"a" * MiB, name_size),
            padding(name_size),
            tar_header(b"file", 0),
            END_OF_ARCHIVE,
        ]
    )


def json_members_archive(count: int, size: int) -> bytes:
    """``count`` members that look like JSON documents of ``size`` bytes each."""
    opening, closing = b'{"pad": "', b'"}'
    body = opening + b"p" * (size - len(opening) - len(closing)) + closing

    def parts() -> Iterator[bytes]:
        for number in range(count):
            yield tar_header(b"doc%05d.json" % number, size)
            yield body
            yield padding(size)
        yield END_OF_ARCHIVE

    return gzip_of(parts())


def empty_members_archive(count: int) -> bytes:
    """``count`` empty regular files (each costs the reader a header object)."""

    def parts() -> Iterator[bytes]:
        for number in range(count):
            yield tar_header(b"empty/%07d" % number, 0)
        yield END_OF_ARCHIVE

    return gzip_of(parts())


# ---- calls ---------------------------------------------------------------------


def load(stub: Stub, chunks: Iterable[bytes], timeout: float) -> str:
    """Send an archive through Load, read every progress message; the code."""
    requests = (pb.LoadRequest(chunk=chunk) for chunk in chunks)
    try:
        for _ in stub.Load(requests, timeout=timeout):
            pass
    except grpc.RpcError as exc:
        return code_of(exc)
    return "OK"


def chunks_of(data: bytes) -> Iterator[bytes]:
    for offset in range(0, len(data), CHUNK):
        yield data[offset : offset + CHUNK]


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            yield chunk


def pull(stub: Stub, image: str, timeout: float, all_platforms: bool = False) -> str:
    """A Pull through the server, every progress message read; the code."""
    request = pb.PullRequest(image=image, all_platforms=all_platforms)
    try:
        for _ in stub.Pull(request, timeout=timeout):
            pass
    except grpc.RpcError as exc:
        return code_of(exc)
    return "OK"


def setup_load(context: Context, archive: bytes | Path, what: str) -> None:
    """Seed the store; a refusal is noted in the report, not raised."""
    chunks = file_chunks(archive) if isinstance(archive, Path) else chunks_of(archive)
    code = load(context.stub, chunks, SETUP_TIMEOUT)
    if code != "OK":
        context.notes.append(f"setup {what}: {code}")


@contextmanager
def _load_attack(context: Context, make: Callable[[], bytes]) -> Iterator[Round]:
    archive = make()
    yield lambda timeout: [load(context.stub, chunks_of(archive), timeout)]


# ---- the attacks ---------------------------------------------------------------


def _load_attacks(sizes: Sizes) -> list[Attack]:
    def pax(context: Context) -> AbstractContextManager[Round]:
        return _load_attack(context, lambda: pax_digits_archive(sizes.pax_digits))

    def long_name(context: Context) -> AbstractContextManager[Round]:
        return _load_attack(context, lambda: gnu_long_name_archive(200 * MiB))

    def json_members(context: Context) -> AbstractContextManager[Round]:
        return _load_attack(context, lambda: json_members_archive(100, DOCUMENT_CAP))

    def empty_members(context: Context) -> AbstractContextManager[Round]:
        return _load_attack(context, lambda: empty_members_archive(300_000))

    upload = len(pax_digits_archive(sizes.pax_digits))
    return [
        Attack(f"Load: PAX header of {sizes.pax_digits:,} digits ({upload:,} B gzip)", pax),
        Attack("Load: GNU long name of 200 MiB", long_name),
        Attack("Load: 100 JSON-looking members of 4 MiB", json_members),
        Attack("Load: 300,000 empty members", empty_members),
    ]


@contextmanager
def _glob(context: Context) -> Iterator[Round]:
    """A backtracking glob against a name of 40 ``a``s."""
    seed = context.stub.ListImages(pb.ListImagesRequest(), timeout=SETUP_TIMEOUT).images[0]
    context.stub.Tag(pb.TagRequest(source=seed.id, target="a" * 40), timeout=SETUP_TIMEOUT)
    request = pb.ListImagesRequest(filters=["reference=*a*a*a*a*a*a*a*a*a*b"])

    def attack(timeout: float) -> list[str]:
        try:
            context.stub.ListImages(request, timeout=timeout)
        except grpc.RpcError as exc:
            return [code_of(exc)]
        return ["OK"]

    yield attack


@contextmanager
def _unread_streams(context: Context) -> Iterator[Round]:
    """100 ReadBlob streams of a 32 MiB blob, opened and then not read.

    Each stream's first message is read (so the server has surely started it),
    then all stay open, unread, until enough health probes were taken."""
    noise = random.Random(7).randbytes(32 * MiB)
    setup_load(
        context, docker_archive(ImageSpec(["bench/big:1"], [tar_of({"big": noise})])), "blob"
    )
    inspected = context.stub.Inspect(pb.InspectRequest(image="bench/big:1"), timeout=30)
    request = pb.ReadBlobRequest(digest=inspected.layers[0].digest)

    def attack(timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        calls = [context.stub.ReadBlob(request, timeout=timeout) for _ in range(100)]
        firsts: list[str | None] = [None] * len(calls)

        def first_message(index: int) -> None:
            try:
                next(calls[index])
                firsts[index] = "OK"
            except StopIteration:
                firsts[index] = "OK"
            except grpc.RpcError as exc:
                firsts[index] = code_of(exc)

        readers = [threading.Thread(target=first_message, args=(i,)) for i in range(len(calls))]
        for reader in readers:
            reader.start()
        for reader in readers:  # a server that queues streams leaves some pending
            reader.join(max(0.0, min(15.0, deadline - time.monotonic())))
        started = context.probes()
        while context.probes() - started < context.min_probes and time.monotonic() < deadline:
            time.sleep(0.01)
        outcome = [first or "PENDING" for first in firsts]
        for call in calls:
            call.cancel()
        for reader in readers:
            reader.join(30)
        return outcome

    yield attack


def _labels(number: int, size: int) -> dict[str, str]:
    """Labels of ``size`` bytes in all, in 64 KiB values."""
    piece = 64 << 10
    return {f"bench.label.{k:03d}": chr(ord("a") + number) * piece for k in range(size // piece)}


@contextmanager
def _label_pages(context: Context) -> Iterator[Round]:
    """Three images with ~3 MiB of labels each, then a default ListImages
    (and an Inspect of one of them)."""
    for number in range(3):
        image = ImageSpec(
            [f"bench/labels:{number}"],
            [tar_of({f"etc/labels{number}": b"x"})],
            labels=_labels(number, 3 * MiB),
        )
        setup_load(context, docker_archive(image), f"labels:{number}")

    def attack(timeout: float) -> list[str]:
        outcome = []
        try:
            context.stub.ListImages(pb.ListImagesRequest(), timeout=timeout)
            outcome.append("list:OK")
        except grpc.RpcError as exc:
            outcome.append(f"list:{code_of(exc)}")
        try:
            context.stub.Inspect(pb.InspectRequest(image="bench/labels:0"), timeout=timeout)
            outcome.append("inspect:OK")
        except grpc.RpcError as exc:
            outcome.append(f"inspect:{code_of(exc)}")
        return outcome

    yield attack


def check_archive(scratch: Path, total: int) -> Path:
    """A docker-archive of random (incompressible) layers of 100 MB, ``total``
    bytes in all, written to a file (cached across runs: it is deterministic)."""
    path = scratch / f"hostile-check-{total}.tar"
    if path.exists():
        return path
    layer_size = min(total, 100 * 10**6)
    layers = [random.Random(n).randbytes(layer_size) for n in range(max(1, total // layer_size))]
    partial = path.with_suffix(".partial")
    with tarfile.open(partial, "w") as archive:
        diff_ids = []
        paths = []
        for number, data in enumerate(layers):
            layer = tar_of({f"data{number}": data})
            diff_ids.append(sha(layer))
            paths.append(f"{number}/layer.tar")
            _add(archive, paths[-1], layer)
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
            }
        ).encode()
        _add(archive, "config.json", config)
        manifest = [{"Config": "config.json", "RepoTags": ["bench/check:1"], "Layers": paths}]
        _add(archive, "manifest.json", json.dumps(manifest).encode())
    partial.rename(path)
    return path


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def _check(sizes: Sizes) -> Callable[[Context], AbstractContextManager[Round]]:
    @contextmanager
    def prepare(context: Context) -> Iterator[Round]:
        setup_load(context, check_archive(context.scratch, sizes.check_bytes), "store")

        def attack(timeout: float) -> list[str]:
            try:
                context.stub.Check(pb.CheckRequest(), timeout=timeout)
            except grpc.RpcError as exc:
                return [code_of(exc)]
            return ["OK"]

        yield attack

    return prepare


def _warm_pull(context: Context, registry: HostileRegistry) -> None:
    """One ordinary pull first, so the baseline includes the registry client."""
    registry.add_image("warm/app", "1", make_image([tar_of({"etc/warm": b"warm"})]))
    code = pull(context.stub, f"{registry.host}/warm/app:1", SETUP_TIMEOUT)
    if code != "OK":
        context.notes.append(f"warm-up pull: {code}")


def fat_manifest() -> tuple[bytes, Image]:
    """A valid image manifest padded (an annotation) to exactly the 4 MiB cap."""
    image = make_image([tar_of({"etc/fat": b"fat"})])
    document = json.loads(image.manifest)
    document["annotations"] = {"pad": ""}
    room = DOCUMENT_CAP - len(json.dumps(document).encode())
    document["annotations"] = {"pad": "p" * room}
    manifest = json.dumps(document).encode()
    assert len(manifest) == DOCUMENT_CAP
    return manifest, image


@contextmanager
def _fat_index(context: Context) -> Iterator[Round]:
    """Pull (platforms: all) of an index naming one 4 MiB manifest 150 times."""
    with HostileRegistry().running() as registry:
        _warm_pull(context, registry)
        manifest, image = fat_manifest()
        registry.manifests[("fat/app", sha(manifest))] = (manifest, OCI_MANIFEST)
        registry.blobs[image.config_digest] = image.config
        registry.blobs[image.layer_digests[0]] = image.layers[0]
        child = {
            "mediaType": OCI_MANIFEST,
            "digest": sha(manifest),
            "size": len(manifest),
            "platform": {"os": "linux", "architecture": "amd64"},
        }
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child] * 150}
        registry.add_manifest("fat/app", "1", json.dumps(index).encode(), OCI_INDEX)
        image_name = f"{registry.host}/fat/app:1"
        yield lambda timeout: [pull(context.stub, image_name, timeout, all_platforms=True)]


@dataclass
class PingBomb:
    """A registry whose ``GET /v2/`` answers 200 with a body of ``body`` bytes
    (zeros); everything else is 404. A server caches a ping it accepted per
    endpoint, so each round asks :meth:`endpoint` for a new port."""

    body: int
    _runner: web.AppRunner | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    async def _ping(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        response.content_length = self.body
        await response.prepare(request)
        try:
            for piece in repeated(bytes(MiB), self.body):
                await response.write(piece)
            await response.write_eof()
        except ConnectionError:
            pass  # the server stopped reading: the answer we hope for
        return response

    async def _other(self, request: web.Request) -> web.Response:
        body = {"errors": [{"code": "NAME_UNKNOWN", "message": "no such repository"}]}
        return web.json_response(body, status=404)

    def endpoint(self) -> str:
        """A new loopback port serving the same application."""
        assert self._loop is not None
        assert self._runner is not None
        runner = self._runner

        async def start() -> str:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            server = site._server
            assert server is not None
            port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
            return f"127.0.0.1:{port}"

        return asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)

    @contextmanager
    def running(self) -> Iterator[PingBomb]:
        app = web.Application()
        app.router.add_get("/v2/", self._ping)
        app.router.add_route("*", "/{tail:.*}", self._other)
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._runner = web.AppRunner(app, access_log=None)
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(self._runner.setup(), loop).result(10)
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


def _ping_bomb(sizes: Sizes) -> Callable[[Context], AbstractContextManager[Round]]:
    @contextmanager
    def prepare(context: Context) -> Iterator[Round]:
        with HostileRegistry().running() as registry:
            _warm_pull(context, registry)
        with PingBomb(sizes.ping_body).running() as bomb:
            yield lambda timeout: [pull(context.stub, f"{bomb.endpoint()}/bomb/app:1", timeout)]

    return prepare


def all_attacks(sizes: Sizes) -> list[Attack]:
    """Every attack of the issue that this benchmark drives, in order."""
    return [
        *_load_attacks(sizes),
        Attack("ListImages: reference=*a*a*a*a*a*a*a*a*a*b vs 40 a's", _glob),
        Attack("ReadBlob: 100 unread streams of 32 MiB", _unread_streams),
        Attack("ListImages + Inspect: 3 images with 3 MiB labels", _label_pages),
        Attack(f"Check: store of {sizes.check_bytes / 1e6:.0f} MB", _check(sizes)),
        Attack("Pull: index naming a 4 MiB manifest 150x (all)", _fat_index),
        Attack(f"Pull: /v2/ ping with a {sizes.ping_body // MiB} MiB body", _ping_bomb(sizes)),
    ]
