"""The hostile registry, recording each request in order: (method, path and query).

``HostileRegistry.requests`` counts requests by digest or tag; the tests of
what a pull or a push asks for need the sequence, with the full path (a
blob GET and a manifest GET of one digest are different requests).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from tests.registry.hostile import Handler, HostileRegistry

#: the largest request body taken (a blob pushed in one PUT)
MAX_BODY = 1 << 30
#: (method, path and query) of one request, as the registry received it
Request = tuple[str, str]


@dataclass
class RecordingRegistry(HostileRegistry):
    log: list[Request] = field(default_factory=list)

    @web.middleware
    async def _bearer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # appended before the answer is sent: a request the client saw answered is logged
        self.log.append((request.method, request.path_qs))
        # blobs bigger than aiohttp's 1 MiB request limit are pushed here whole
        return await super()._bearer(request.clone(client_max_size=MAX_BODY), handler)

    def since(self, mark: int) -> list[Request]:
        """The requests after the first ``mark`` (a ``len(log)`` taken earlier)."""
        return self.log[mark:]
