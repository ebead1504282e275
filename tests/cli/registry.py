"""A small OCI registry for the CLI tests (aiohttp on a loopback port, in a thread).

It serves images made with :func:`tests.registry.hostile.make_image`, and two
behaviours the CLI tests synchronise on or look at:

- :meth:`SmallRegistry.hold`: a blob is sent up to a first part, then nothing
  more until the test calls :meth:`SmallRegistry.release` (the first part is big
  enough for the server to report ``Downloading``); the returned event is set
  once that part is out, so a test knows a pull is mid-layer without a sleep;
- :meth:`SmallRegistry.refuse`: a repository's manifests are answered with an
  OCI error of the test's choosing (its message is what the CLI must print).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import web

from tests.registry.hostile import OCI_MANIFEST, Image


@dataclass
class _Held:
    first: int
    reached: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Refusal:
    status: int
    code: str
    message: str


class SmallRegistry:
    """Images by repository and tag; held blobs; refused repositories."""

    def __init__(self) -> None:
        self.host = ""
        self._manifests: dict[tuple[str, str], bytes] = {}
        self._blobs: dict[str, bytes] = {}
        self._held: dict[str, _Held] = {}
        self._refused: dict[str, _Refusal] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._released: asyncio.Event | None = None

    def add_image(self, repository: str, tag: str, image: Image) -> None:
        self._manifests[(repository, tag)] = image.manifest
        self._manifests[(repository, image.digest)] = image.manifest
        self._blobs[image.config_digest] = image.config
        self._blobs.update(zip(image.layer_digests, image.layers, strict=True))

    def hold(self, digest: str, first: int) -> threading.Event:
        """Send ``first`` bytes of the blob, then hold the rest until :meth:`release`;
        the event is set once those bytes are written."""
        assert first < len(self._blobs[digest]), "the held part must not be empty"
        held = self._held[digest] = _Held(first)
        return held.reached

    def refuse(self, repository: str, status: int, code: str, message: str) -> None:
        """Answer the repository's manifest requests with this OCI error."""
        self._refused[repository] = _Refusal(status, code, message)

    def release(self) -> None:
        """Let every held blob (now and later) send the rest."""
        assert self._loop is not None
        assert self._released is not None
        self._loop.call_soon_threadsafe(self._released.set)

    # ---- handlers ----------------------------------------------------------------

    async def _ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _manifest(self, request: web.Request) -> web.Response:
        name, reference = request.match_info["name"], request.match_info["reference"]
        refusal = self._refused.get(name)
        if refusal is not None:
            body = {"errors": [{"code": refusal.code, "message": refusal.message}]}
            return web.json_response(body, status=refusal.status)
        manifest = self._manifests.get((name, reference))
        if manifest is None:
            body = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
            return web.json_response(body, status=404)
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        headers = {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": digest}
        return web.Response(body=manifest, headers=headers)

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        data = self._blobs.get(digest)
        if data is None:
            body = {"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown"}]}
            return web.json_response(body, status=404)
        response = web.StreamResponse()
        response.content_length = len(data)
        await response.prepare(request)
        held = self._held.get(digest)
        try:
            if held is not None:
                await response.write(data[: held.first])
                held.reached.set()
                assert self._released is not None
                await self._released.wait()
                data = data[held.first :]
            await response.write(data)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away (a cancelled pull): nothing more to send
        return response

    # ---- running -----------------------------------------------------------------

    @contextmanager
    def running(self) -> Iterator[SmallRegistry]:
        app = web.Application()
        app.router.add_get("/v2/", self._ping)
        app.router.add_route("*", r"/v2/{name:.+}/manifests/{reference}", self._manifest)
        app.router.add_route("*", r"/v2/{name:.+}/blobs/{digest}", self._blob)
        runner = web.AppRunner(app, access_log=None)
        loop = asyncio.new_event_loop()
        ports: list[int] = []
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            self._released = asyncio.Event()
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            ports.extend(port for _, port in runner.addresses)
            started.set()
            loop.run_forever()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        assert started.wait(30), "the registry did not start"
        self._loop = loop
        self.host = f"127.0.0.1:{ports[0]}"
        try:
            yield self
        finally:
            self.release()  # a held request ends, so the runner can close at once
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)
            loop.close()
