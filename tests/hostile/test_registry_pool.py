"""Many registries that answer keep their connections only up to a cap.

A caller who pulls once from each of 120 registries (each a loopback port that
answers its ping and 404s the manifest) must not leave the server a descriptor
per registry: idle keep-alive connections are capped at MAX_IDLE_CONNECTIONS.
Bounds: descriptors grow by at most MAX_IDLE_CONNECTIONS + 16, threads by 12,
RSS by 32 MiB, while health and Inspect keep answering.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from aiohttp import web

from imagestore.registry.pool import MAX_IDLE_CONNECTIONS
from imagestore.v1 import imagestore_pb2 as pb
from tests.hostile.conftest import MiB, Target, rpc_error

REGISTRIES = 120


@pytest.fixture
def registries() -> Iterator[list[str]]:
    """One small registry application listening on REGISTRIES loopback ports."""

    async def ping(request: web.Request) -> web.Response:
        return web.json_response({})

    async def unknown(request: web.Request) -> web.Response:
        body = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
        return web.json_response(body, status=404)

    app = web.Application()
    app.router.add_get("/v2/", ping)
    app.router.add_route("*", "/{tail:.*}", unknown)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(app)

    async def start() -> list[str]:
        await runner.setup()
        hosts = []
        for _ in range(REGISTRIES):
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            server = site._server
            assert server is not None
            port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
            hosts.append(f"127.0.0.1:{port}")
        return hosts

    try:
        yield asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def test_idle_connections_to_many_registries_are_capped(
    target: Target, registries: list[str]
) -> None:
    def pull(host: str) -> tuple[grpc.StatusCode, str]:
        request = pb.PullRequest(image=f"{host}/some/app:1")
        with pytest.raises(grpc.RpcError) as caught:
            for _ in target.stub.Pull(request, timeout=60):
                pass
        return rpc_error(caught.value)[:2]

    assert pull(registries[0])[0] == grpc.StatusCode.NOT_FOUND  # warm the pull path
    with target.watch() as seen, ThreadPoolExecutor(4) as pool:
        outcomes = set(pool.map(pull, registries[1:]))
    assert {code for code, _ in outcomes} == {grpc.StatusCode.NOT_FOUND}
    seen.assert_within(rss=32 * MiB, threads=12, fds=MAX_IDLE_CONNECTIONS + 16)
    target.assert_clean()
