"""A registry that lies, written for the tests: aiohttp on a loopback port.

It serves images put into it with :meth:`HostileRegistry.add_image` (and
indexes with :meth:`HostileRegistry.add_manifest`), and misbehaves per blob or
per repository as a test tells it (``faults``, ``ping_body``). Every request is
recorded, so tests can count downloads, and :meth:`HostileRegistry.wait_until`
lets a test synchronise on what the registry has seen; ``hold`` faults block
until the test calls :meth:`HostileRegistry.release`.

It also takes pushes (upload sessions, then ``PUT ?digest=``; manifests by
PUT), and can hand back URLs of a test's choosing where a registry does: the
upload session's ``Location`` (``upload_location``), the token realm
(``token_realm``) and a redirect from the token service (``token_redirect``).
:class:`Listener` is a loopback port that only counts the connections made to
it: where a test points those URLs at it, a count of 0 proves that nothing
connected.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import socket
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import web

from tests.archives import sha

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
#: what the streamed bodies (a huge ping) are written in: never held whole
STREAM_CHUNK = 64 << 10


@dataclass
class Image:
    manifest: bytes
    config: bytes
    layers: list[bytes]  # as served (gzip)

    @property
    def digest(self) -> str:
        return sha(self.manifest)

    @property
    def config_digest(self) -> str:
        return sha(self.config)

    @property
    def layer_digests(self) -> list[str]:
        return [sha(layer) for layer in self.layers]


def make_image(
    tars: list[bytes],
    *,
    diff_ids: list[str] | None = None,
    layer_digests: list[str] | None = None,
    architecture: str = "amd64",
    annotations: dict[str, str] | None = None,
) -> Image:
    """An OCI image of gzip layers; ``diff_ids``/``layer_digests`` may lie;
    ``annotations`` go in the manifest (to make a large one)."""
    layers = [gzip.compress(tar, mtime=0) for tar in tars]
    config = json.dumps(
        {
            "architecture": architecture,
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids or [sha(t) for t in tars]},
        }
    ).encode()
    digests = layer_digests or [sha(layer) for layer in layers]
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha(config), "size": len(config)},
            "layers": [
                {"mediaType": OCI_LAYER, "digest": d, "size": len(layer)}
                for d, layer in zip(digests, layers, strict=True)
            ],
            **({"annotations": annotations} if annotations else {}),
        }
    ).encode()
    return Image(manifest, config, layers)


def make_index(entries: Sequence[tuple[Image, str]]) -> bytes:
    """An OCI index listing each image's manifest for a ``linux/<arch>`` platform
    (an image may be listed many times)."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": image.digest,
                    "size": len(image.manifest),
                    "platform": {"os": "linux", "architecture": architecture},
                }
                for image, architecture in entries
            ],
        }
    ).encode()


def _redirect(location: str) -> web.Response:
    """A 307 to ``location`` as given (aiohttp's own would refuse a URL it cannot read)."""
    return web.Response(status=307, headers={"Location": location})


#: JSON nested deeper than Python's parser recurses (4 kB): RecursionError, not ValueError
NESTED_JSON = b'{"errors": ' + b"[" * 2000 + b"]" * 2000 + b"}"


@dataclass
class HostileRegistry:
    """Faults per blob digest (or per repository for manifests):

    - ``wrong-bytes``: other bytes of the same length
    - ``truncate``: half the blob, correctly framed
    - ``drop-once``: half the blob, then the connection dies (once); honours Range
    - ``fail:N``: N answers of 500 first, then the blob
    - ``redirect-loop``: a 302 to itself, forever
    - ``stall``: some bytes, then silence
    - ``slow``: the blob in small pieces with pauses (to overlap pulls)
    - ``redirect:<url>``: a 307 to another server (a CDN)
    - ``drip:<ms>``: one byte every <ms> milliseconds (busy, never silent)
    - ``hold``: 10 bytes, then nothing until the test calls :meth:`release`
    - ``retry-after:<s>``: 503 with ``Retry-After: <s>``, every time
    - ``huge-error:<n>``: 500 with an <n>-byte body (chunked, streamed), every time
    - ``nested-error``: 400 with an error body nested too deeply for a JSON parser

    ``GET /v2/<name>/tags/list`` lists the repository's tags, sorted, at most
    ``tag_page_size`` a page (0: all) with a ``Link`` to the next page; with
    ``tag_link_loop`` every page links back to the first; ``tag_link`` and
    ``tag_body``, when set, are sent as every page's ``Link`` and body.

    ``ping_body``: ``GET /v2/`` answers 200 with that many bytes (zeros, streamed
    in STREAM_CHUNK pieces; ``ping_chunked`` leaves out the Content-Length).

    ``address``: where to listen (a loopback address), on ``port`` (0: any).
    """

    host: str = ""
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    faults: dict[str, str] = field(default_factory=dict)
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: the Authorization header of every blob request ("" when absent)
    authorizations: list[str] = field(default_factory=list)
    #: the Range header of every blob request, by digest ("" when absent)
    ranges: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    #: Bearer token auth like Docker Hub's: None (off), "" (anonymous tokens),
    #: or "user:password" that the token service demands
    token_auth: str | None = None
    #: an OAuth2 refresh token the token service also takes (POST grant_type=refresh_token)
    refresh_token: str | None = None
    #: the realm the Bearer challenge names (default: this registry's /token)
    token_realm: str | None = None
    #: the token service answers 307 to this URL instead of issuing a token
    token_redirect: str | None = None
    #: the Authorization header of every token request ("" when absent)
    token_authorizations: list[str] = field(default_factory=list)
    #: the Authorization header of every request to /v2/<name>/… ("" when absent)
    all_authorizations: list[str] = field(default_factory=list)
    #: the Location a new upload session is given (default: one of this registry's)
    upload_location: str | None = None
    #: blobs pushed here, and upload sessions in progress
    uploads: dict[str, bytearray] = field(default_factory=dict)
    address: str = "127.0.0.1"
    port: int = 0
    tokens_issued: int = 0
    #: tokens (by issue number) the registry no longer takes
    revoked: set[int] = field(default_factory=set)
    ping_body: int = 0
    ping_chunked: bool = False
    tag_page_size: int = 0
    tag_link_loop: bool = False
    tag_link: str | None = None
    tag_body: bytes | None = None
    #: bytes of streamed bodies (ping, huge-error) actually sent: the client may
    #: close the connection early
    ping_sent: int = 0
    #: blob requests now blocked by a ``hold`` fault, and the most there ever were
    holding: int = 0
    most_holding: int = 0
    _failures: Counter[str] = field(default_factory=Counter)
    _closing: asyncio.Event = field(default_factory=asyncio.Event)
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _loop: asyncio.AbstractEventLoop | None = None

    def add_image(self, repository: str, tag: str, image: Image) -> None:
        self.manifests[(repository, tag)] = (image.manifest, OCI_MANIFEST)
        self.manifests[(repository, image.digest)] = (image.manifest, OCI_MANIFEST)
        self.blobs[image.config_digest] = image.config
        for digest, layer in zip(image.layer_digests, image.layers, strict=True):
            self.blobs.setdefault(digest, layer)

    def add_manifest(self, repository: str, tag: str, body: bytes, media_type: str) -> None:
        self.manifests[(repository, tag)] = (body, media_type)

    def downloads(self, digest: str) -> int:
        return self.requests[("GET", digest)]

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        """Block the test until ``predicate()`` holds (checked at each request)."""
        with self._changed:
            assert self._changed.wait_for(predicate, timeout), "the registry never got there"

    def release(self) -> None:
        """Let every ``hold`` request (now and later) send the rest of its blob."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._released.set)

    def _seen(self, method: str, key: str) -> None:
        with self._changed:
            self.requests[(method, key)] += 1
            self._changed.notify_all()

    # ---- handlers ----------------------------------------------------------------

    @web.middleware
    async def _bearer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """With token_auth on, /v2/<name>/… needs a token scoped to <name>."""
        name = request.match_info.get("name")
        if name is not None:
            self.all_authorizations.append(request.headers.get("Authorization", ""))
        if self.token_auth is None or name is None:
            return await handler(request)
        needed = "pull" if request.method in ("GET", "HEAD") else "push"
        scope = f"repository:{name}:{'pull' if needed == 'pull' else 'pull,push'}"
        words = request.headers.get("Authorization", "").removeprefix("Bearer ").split()
        serial, granted = (words[0], words[1:]) if words else ("", [])
        allowed = any(
            grant.rpartition(":")[0] == f"repository:{name}"
            and needed in grant.rpartition(":")[2].split(",")
            for grant in granted
        )
        if not allowed or serial in {f"t{n}" for n in self.revoked}:
            realm = self.token_realm or f"http://{self.host}/token"
            challenge = f'Bearer realm="{realm}",service="hostile",scope="{scope}"'
            return _error(401, "UNAUTHORIZED", "authentication required", challenge)
        return await handler(request)

    async def _token(self, request: web.Request) -> web.Response:
        self.token_authorizations.append(request.headers.get("Authorization", ""))
        self._seen(request.method, "/token")
        if self.token_redirect is not None:  # the query (service, scope) goes along
            query = f"?{request.query_string}" if request.query_string else ""
            return _redirect(self.token_redirect + query)
        if request.method == "POST":
            form = await request.post()
            good = form.get("grant_type") == "refresh_token" and self.refresh_token is not None
            if not good or form.get("refresh_token") != self.refresh_token:
                return _error(401, "UNAUTHORIZED", "bad refresh token")
            scopes = str(form.get("scope", "")).split()
            return self._issue(scopes)
        if self.token_auth:
            expected = "Basic " + base64.b64encode(self.token_auth.encode()).decode()
            if request.headers.get("Authorization") != expected:
                return _error(401, "UNAUTHORIZED", "bad credentials")
        return self._issue(request.query.getall("scope", []))

    def _issue(self, scopes: list[str]) -> web.Response:
        """A token is its serial number and the scopes it grants."""
        self.tokens_issued += 1
        token = " ".join([f"t{self.tokens_issued}", *scopes])
        return web.json_response({"access_token": token, "expires_in": 300})

    async def _ping(self, request: web.Request) -> web.StreamResponse:
        self._seen(request.method, "/v2/")
        if not self.ping_body:
            return web.json_response({})
        length = None if self.ping_chunked else self.ping_body
        return await self._stream_zeros(request, self.ping_body, 200, length)

    async def _stream_zeros(
        self, request: web.Request, size: int, status: int, length: int | None = None
    ) -> web.StreamResponse:
        """``size`` zero bytes, written a piece at a time (never held whole); the
        count sent is added to ``ping_sent``."""
        response = web.StreamResponse(status=status)
        if length is not None:
            response.content_length = length
        await response.prepare(request)
        zeros = bytes(STREAM_CHUNK)
        sent = 0
        try:
            while sent < size:
                piece = zeros[: size - sent]
                await response.write(piece)
                sent += len(piece)
                self.ping_sent += len(piece)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client closed the connection: it has read enough
        return response

    async def _tags(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self._seen(request.method, f"{name}/tags/list")
        tags = sorted({t for r, t in self.manifests if r == name and not t.startswith("sha256:")})
        if not tags:
            return _error(404, "NAME_UNKNOWN", "repository name not known to registry")
        last = request.query.get("last", "")
        tags = [t for t in tags if t > last]
        size = min(int(request.query.get("n", len(tags))), self.tag_page_size or len(tags))
        page, rest = tags[:size], tags[size:]
        headers = {"Content-Type": "application/json"}
        if self.tag_link is not None:
            headers["Link"] = self.tag_link
        elif self.tag_link_loop:
            headers["Link"] = f'</v2/{name}/tags/list?n={size}>; rel="next"'
        elif rest:
            headers["Link"] = f'</v2/{name}/tags/list?n={size}&last={page[-1]}>; rel="next"'
        body = self.tag_body or json.dumps({"name": name, "tags": page}).encode()
        return web.Response(body=body, headers=headers)

    async def _manifest(self, request: web.Request) -> web.StreamResponse:
        key = (request.match_info["name"], request.match_info["reference"])
        self._seen(request.method, key[1])
        if request.method == "PUT":
            body = await request.read()
            media_type = request.headers.get("Content-Type", OCI_MANIFEST)
            self.manifests[key] = (body, media_type)
            self.manifests[(key[0], sha(body))] = (body, media_type)
            return web.Response(status=201, headers={"Docker-Content-Digest": sha(body)})
        if key not in self.manifests:
            return _error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        body, media_type = self.manifests[key]
        headers = {"Content-Type": media_type, "Docker-Content-Digest": sha(body)}
        return web.Response(body=body, headers=headers)

    async def _start_upload(self, request: web.Request) -> web.StreamResponse:
        """POST …/blobs/uploads/ (a mount too: this registry never mounts)."""
        self._seen(request.method, "upload")
        session = uuid.uuid4().hex
        self.uploads[session] = bytearray()
        own = f"/v2/{request.match_info['name']}/blobs/uploads/{session}"
        location = self.upload_location or own
        return web.Response(status=202, headers={"Location": location, "Content-Length": "0"})

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        """PATCH appends to a session; PUT ?digest= closes it (checked, stored)."""
        session = request.match_info["session"]
        self._seen(request.method, "upload")
        if session not in self.uploads:
            return _error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown")
        self.uploads[session] += await request.read()
        if request.method == "PATCH":
            location = str(request.rel_url.with_query(None))
            return web.Response(status=202, headers={"Location": location})
        data = bytes(self.uploads.pop(session))
        digest = request.query.get("digest", "")
        if sha(data) != digest:
            return _error(400, "DIGEST_INVALID", "provided digest did not match uploaded content")
        self.blobs[digest] = data
        return web.Response(status=201, headers={"Docker-Content-Digest": digest})

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        self.authorizations.append(request.headers.get("Authorization", ""))
        self.ranges[digest].append(request.headers.get("Range", ""))
        self._seen(request.method, digest)
        fault = self.faults.get(digest, "")
        if digest not in self.blobs:
            return _error(404, "BLOB_UNKNOWN", "blob unknown to registry")
        if request.method == "HEAD":
            size = str(len(self.blobs[digest]))
            return web.Response(status=200, headers={"Content-Length": size})
        data = self.blobs[digest]
        if fault.startswith("retry-after:"):
            headers = {"Retry-After": fault.removeprefix("retry-after:")}
            later = {"errors": [{"code": "UNAVAILABLE", "message": "come back later"}]}
            return web.json_response(later, status=503, headers=headers)
        if fault.startswith("huge-error:"):
            return await self._stream_zeros(request, int(fault.removeprefix("huge-error:")), 500)
        if fault == "nested-error":
            return web.Response(status=400, body=NESTED_JSON, content_type="application/json")
        if fault.startswith("fail:"):
            self._failures[digest] += 1
            if self._failures[digest] <= int(fault.removeprefix("fail:")):
                return _error(500, "UNKNOWN", "try again later")
        if fault == "redirect-loop":
            raise web.HTTPFound(location=str(request.rel_url))
        if fault.startswith("redirect:"):
            return _redirect(fault.removeprefix("redirect:"))
        if fault == "wrong-bytes":
            data = bytes(b ^ 0xFF for b in data)
        if fault == "truncate":
            data = data[: len(data) // 2]
        start = _range_start(request.headers.get("Range", ""))
        response = web.StreamResponse(status=206 if start else 200)
        response.content_length = len(data) - start
        if start:
            response.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        await response.prepare(request)
        body = data[start:]
        if fault == "drop-once" and self._failures[digest] == 0:
            self._failures[digest] += 1
            await response.write(body[: len(body) // 2])
            assert request.transport is not None
            request.transport.abort()  # the connection dies mid-body
            return response
        if fault == "stall":
            await response.write(body[:10])
            await self._closing.wait()  # silence until the test ends
            return response
        if fault == "hold":
            await response.write(body[:10])
            with self._changed:
                self.holding += 1
                self.most_holding = max(self.most_holding, self.holding)
                self._changed.notify_all()
            await self._released.wait()
            with self._changed:
                self.holding -= 1
            await response.write(body[10:])
        elif fault.startswith("drip:"):
            pause = int(fault.removeprefix("drip:")) / 1000
            for offset in range(len(body)):
                await response.write(body[offset : offset + 1])
                await asyncio.sleep(pause)
        elif fault == "slow":
            for offset in range(0, len(body), 64 << 10):
                await response.write(body[offset : offset + (64 << 10)])
                await asyncio.sleep(0.01)
        else:
            await response.write(body)
        await response.write_eof()
        return response

    # ---- running -----------------------------------------------------------------

    @contextmanager
    def running(self) -> Iterator[HostileRegistry]:
        app = web.Application(middlewares=[self._bearer])
        app.router.add_get("/token", self._token)
        app.router.add_post("/token", self._token)
        app.router.add_get("/v2/", self._ping)
        app.router.add_get(r"/v2/{name:.+}/tags/list", self._tags)
        app.router.add_route("*", r"/v2/{name:.+}/manifests/{reference}", self._manifest)
        app.router.add_post(r"/v2/{name:.+}/blobs/uploads/", self._start_upload)
        app.router.add_route("*", r"/v2/{name:.+}/blobs/uploads/{session}", self._upload)
        app.router.add_route("*", r"/v2/{name:.+}/blobs/{digest}", self._blob)
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(app, access_log=None)
        started = threading.Event()
        site_holder: list[web.TCPSite] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self.address, self.port)
            loop.run_until_complete(site.start())
            site_holder.append(site)
            started.set()
            loop.run_forever()

        self._loop = loop
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        started.wait(10)
        server = site_holder[0]._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.host = f"{self.address}:{self.port}"
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(self._closing.set)
            loop.call_soon_threadsafe(self._released.set)
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


def _range_start(header: str) -> int:
    if header.startswith("bytes=") and header.endswith("-"):
        return int(header.removeprefix("bytes=").removesuffix("-"))
    return 0


def _error(status: int, code: str, message: str, challenge: str = "") -> web.Response:
    headers = {"WWW-Authenticate": challenge} if challenge else None
    body = {"errors": [{"code": code, "message": message}]}
    return web.json_response(body, status=status, headers=headers)


class Listener:
    """A loopback port that accepts connections, counts them and closes them at
    once; on ``address`` (``127.0.0.1``, ``::1``, …) and ``port`` (0: any free)."""

    def __init__(self, address: str = "127.0.0.1", port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.bind((address, port))
        self._socket.listen(16)
        self.port: int = self._socket.getsockname()[1]
        self.accepted = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return  # closed
            with self._lock:
                self.accepted += 1
            connection.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)  # wakes the accept() above
        self._socket.close()
        self._thread.join(5)
