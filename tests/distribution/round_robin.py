"""A round-robin HTTP proxy over several registry endpoints, as a load balancer
without session affinity puts them behind one address: the requests for one
path go to the endpoints in turn (so the requests of one upload session never
reach one endpoint twice in a row, however a client interleaves its uploads),
bodies streamed both ways. It records which endpoint served each request."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

#: headers of one connection, not of the request it carries (RFC 9110 §7.6.1)
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host"}


@dataclass
class RoundRobin:
    """The proxy's address, and (method, path, endpoint index) of each request."""

    address: str = ""
    served: list[tuple[str, str, int]] = field(default_factory=list)


@contextmanager
def round_robin(endpoints: Sequence[str]) -> Iterator[RoundRobin]:
    """A proxy on 127.0.0.1 over ``endpoints`` (host:port), for the block."""
    proxy = RoundRobin()
    turns: Counter[str] = Counter()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stopping: asyncio.Event | None = None

    async def forward(request: web.Request) -> web.StreamResponse:
        turn = turns[request.path] % len(endpoints)
        turns[request.path] += 1
        proxy.served.append((request.method, request.path, turn))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = request.content if request.body_exists else None
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.request(
                request.method,
                f"http://{endpoints[turn]}{request.path_qs}",
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as answer,
        ):
            response = web.StreamResponse(status=answer.status)
            for name, value in answer.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    response.headers.add(name, value)
            await response.prepare(request)
            async for piece in answer.content.iter_any():
                await response.write(piece)
            await response.write_eof()
            return response

    async def serve() -> None:
        nonlocal stopping
        stopping = asyncio.Event()
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        proxy.address = f"{host}:{port}"
        ready.set()
        await stopping.wait()
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    ready.wait(timeout=30)
    try:
        yield proxy
    finally:
        assert stopping is not None
        loop.call_soon_threadsafe(stopping.set)
        thread.join(timeout=30)
        loop.close()
