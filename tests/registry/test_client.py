"""The registry client's memory of endpoints, in process, against a loopback registry.

A ping (``GET /v2/``) is made once per endpoint and remembered; when the
registry's own name later leads to an address more internal than its class,
the request is refused (ADDRESS_REFUSED) and the next repository handle pings
afresh instead of reusing the old result until a restart. The registry is a
small aiohttp app on 127.0.0.1, named through test-mode answers, so nothing is
looked up in DNS.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from imagestore import errors
from imagestore.oci.references import parse_reference
from imagestore.registry.client import RegistryClient
from imagestore.registry.options import RegistryOptions


class PingCounter:
    """A registry that answers the ping and a tag list, counting pings."""

    def __init__(self) -> None:
        self.pings = 0

    async def ping(self, request: web.Request) -> web.Response:
        self.pings += 1
        return web.json_response({})

    async def tags(self, request: web.Request) -> web.Response:
        return web.json_response({"name": "app", "tags": ["1"]})


@asynccontextmanager
async def serving(registry: PingCounter) -> AsyncIterator[int]:
    """Serve ``registry`` on 127.0.0.1; yields its port."""
    app = web.Application()
    app.router.add_get("/v2/", registry.ping)
    app.router.add_get("/v2/app/tags/list", registry.tags)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def _client(*answers: str) -> RegistryClient:
    """A client whose lookups of reg.test get ``answers`` in turn."""
    resolve = tuple(f"reg.test={answer}" for answer in answers)
    return RegistryClient(RegistryOptions(test_resolve=resolve, attempts=1), environ={})


def test_a_ping_is_remembered_per_endpoint() -> None:
    async def scenario() -> None:
        registry = PingCounter()
        async with serving(registry) as port:
            client = _client("127.0.0.1/public")
            try:
                endpoint = f"http://reg.test:{port}"
                reference = parse_reference(f"reg.test:{port}/app:1")
                first = await client.repository(reference, endpoint, None)
                second = await client.repository(reference, endpoint, None)
                async with await second.request("GET", second.url("tags/list"), what="tags") as r:
                    assert r.status == 200
            finally:
                await client.close()
        assert registry.pings == 1
        assert first.host is second.host

    asyncio.run(scenario())


def test_a_registry_whose_own_name_leads_inward_is_pinged_afresh() -> None:
    async def scenario() -> None:
        registry = PingCounter()
        async with serving(registry) as port:
            # the class lookup and the ping's connection see a public address; the
            # next connection's lookup answers loopback; then public again
            client = _client(*["127.0.0.1/public"] * 2, "127.0.0.1", *["127.0.0.1/public"] * 2)
            try:
                endpoint = f"http://reg.test:{port}"
                reference = parse_reference(f"reg.test:{port}/app:1")
                repo = await client.repository(reference, endpoint, None)
                # a new connection (and a new lookup) for the next request
                await client.transport.close()
                with pytest.raises(errors.AddressRefused) as refused:
                    await repo.request("GET", repo.url("tags/list"), what="tags")
                assert refused.value.metadata["class"] == "loopback"
                assert registry.pings == 1
                again = await client.repository(reference, endpoint, None)
                async with await again.request("GET", again.url("tags/list"), what="tags") as r:
                    assert r.status == 200
            finally:
                await client.close()
        assert registry.pings == 2
        assert again.host is not repo.host

    asyncio.run(scenario())
