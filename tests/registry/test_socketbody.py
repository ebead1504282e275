"""A large body read off the event loop (registry/socketbody.py), against a real
aiohttp server on 127.0.0.1 and a real aiohttp client response.

What is checked: only a large body on a plain connection with a length is taken;
the bytes aiohttp had already read come first and the rest from the socket, in
order and complete; a body that ends short fails its step; a read blocked on a
silent server returns as soon as it is interrupted (a test event holds the
server, no sleeps); the connection is not reused afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from imagestore.registry import socketbody
from imagestore.registry.socketbody import OFF_LOOP_BODY, SocketBody

BODY = hashlib.shake_256(b"socket body").digest(OFF_LOOP_BODY + 3 * 1000 * 1000 + 7)


class Server:
    """Answers /whole, /small, /chunked, and /short and /held (the first MiB, then
    a short end, or silence until ``release``)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.connections: set[int] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        self.connections.add(id(request.transport))
        name = request.match_info["name"]
        if name == "small":
            return web.Response(body=BODY[:1000])
        response = web.StreamResponse()
        if name != "chunked":
            response.content_length = len(BODY)
        await response.prepare(request)
        if name in ("short", "held"):
            await response.write(BODY[: 1 << 20])
            if name == "held":
                await self.release.wait()
            request.transport.close()
            return response
        await response.write(BODY)
        return response


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[Server, str]]:
    server = Server()
    app = web.Application()
    app.router.add_get("/{name}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.release.set()
        await runner.cleanup()


async def read_all(body: SocketBody) -> bytes:
    """The whole body, the way a pull reads it: each step on a thread."""
    pieces = [body.head]

    def keep(view: memoryview) -> None:
        pieces.append(bytes(view))

    while body.remaining:
        await asyncio.to_thread(body.fill, keep)
    return b"".join(pieces)


@asynccontextmanager
async def taken(
    session: aiohttp.ClientSession, url: str, idle_timeout: float = 10
) -> AsyncIterator[SocketBody]:
    """The body of a GET of ``url``, taken from aiohttp; closed after, with its response."""
    async with session.get(url) as response:
        body = SocketBody.take(response, idle_timeout)
        assert body is not None
        try:
            yield body
        finally:
            body.close()
            response.close()


def run(test: Callable[[aiohttp.ClientSession, Server, str], object]) -> None:
    async def main() -> None:
        async with serving() as (server, base), aiohttp.ClientSession() as session:
            await test(session, server, base)  # type: ignore[misc]

    asyncio.run(main())


def test_a_large_body_is_read_whole_and_in_order_from_the_socket() -> None:
    async def test(session: aiohttp.ClientSession, server: Server, base: str) -> None:
        async with taken(session, f"{base}/whole") as body:
            assert body.remaining == len(BODY) - len(body.head)
            assert await read_all(body) == BODY
        # the next request cannot have gone over that connection
        async with session.get(f"{base}/small") as response:
            assert await response.read() == BODY[:1000]
        assert len(server.connections) == 2

    run(test)


@pytest.mark.parametrize("name", ["small", "chunked"])
def test_small_and_unsized_bodies_stay_with_aiohttp(name: str) -> None:
    async def test(session: aiohttp.ClientSession, server: Server, base: str) -> None:
        async with session.get(f"{base}/{name}") as response:
            assert SocketBody.take(response, idle_timeout=10) is None
            assert await response.read() == (BODY[:1000] if name == "small" else BODY)

    run(test)


def test_a_body_that_ends_short_fails_its_step() -> None:
    async def test(session: aiohttp.ClientSession, server: Server, base: str) -> None:
        async with taken(session, f"{base}/short") as body:
            with pytest.raises(ConnectionResetError, match="before the body's end"):
                await read_all(body)

    run(test)


def test_an_interrupt_ends_a_read_blocked_on_a_silent_server() -> None:
    async def test(session: aiohttp.ClientSession, server: Server, base: str) -> None:
        # the idle timeout is far away: only the interrupt can end the read
        async with taken(session, f"{base}/held", idle_timeout=600) as body:
            got = len(body.head)
            while got < 1 << 20:  # what the server sent before holding
                got += await asyncio.to_thread(body.fill, lambda view: None)
            blocked = asyncio.ensure_future(asyncio.to_thread(body.fill, lambda view: None))
            done, _ = await asyncio.wait({blocked}, timeout=0.05)
            assert not done  # waiting on the silent socket
            body.interrupt()
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(blocked, 30)

    run(test)


@pytest.mark.parametrize("slice_seconds", [0.0, 3600.0], ids=["a-step-a-slice", "one-slice"])
def test_steps_run_back_to_back_for_a_slice_each_reported_in_order(
    monkeypatch: pytest.MonkeyPatch, slice_seconds: float
) -> None:
    """fill_for runs steps on one thread until its slice is over (at least one step)
    or the body ends, and reports each step's bytes as it lands."""
    monkeypatch.setattr(socketbody, "SLICE_SECONDS", slice_seconds)

    async def test(session: aiohttp.ClientSession, server: Server, base: str) -> None:
        async with taken(session, f"{base}/whole") as body:
            pieces, slices = [body.head], 0
            reported: list[int] = []
            while body.remaining:
                await asyncio.to_thread(
                    body.fill_for, lambda view: pieces.append(bytes(view)), reported.append
                )
                slices += 1
        assert b"".join(pieces) == BODY
        assert reported == [len(piece) for piece in pieces[1:]]
        assert len(reported) > 1  # the body is several steps long
        assert slices == (len(reported) if slice_seconds == 0 else 1)

    run(test)
