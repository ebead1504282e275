"""The registry endpoint: its route table, its middlewares and its listener.

``imagestore serve --registry-listen HOST:PORT`` runs it in the gRPC server's
process and event loop, on the same store and worker pools (api/server.py):
started once the store is open, stopped with the gRPC server, its requests in
flight given the same grace period. It speaks HTTP/1.1, over TLS with the
gRPC server's certificate and key when it has them (and requires client
certificates signed by ``--tls-client-ca`` when that is given).

Routes are a table: the pull category's now; the push category's paths answer
405 UNSUPPORTED until push exists, so clients learn at once that this
registry takes no uploads (distribution answers the same for a read-only
registry).
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from aiohttp import web

from imagestore import errors
from imagestore.bridges import WorkerPool
from imagestore.distribution.access import (
    AccessLog,
    admit,
    authenticate,
    common_headers,
    identify,
    spec_errors,
)
from imagestore.distribution.errors import Code, RegistryError
from imagestore.distribution.limits import EndpointLimits
from imagestore.distribution.pull import Pull
from imagestore.store.store import Store

log = logging.getLogger("imagestore.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: ``{name}`` is a repository path: several components (checked by names.py)
NAME = "{name:.+}"


def routes(pull: Pull) -> list[tuple[str, str, Handler]]:
    """(method, path, handler): the pull category, then push's paths refused."""
    table: list[tuple[str, str, Handler]] = [
        ("GET", "/v2/", pull.base),
        ("GET", "/v2/_catalog", pull.catalog),
        ("GET", f"/v2/{NAME}/tags/list", pull.tags),
        ("GET", f"/v2/{NAME}/manifests/{{reference}}", pull.manifest),
        ("HEAD", f"/v2/{NAME}/manifests/{{reference}}", pull.manifest),
        ("GET", f"/v2/{NAME}/blobs/{{digest}}", pull.blob),
        ("HEAD", f"/v2/{NAME}/blobs/{{digest}}", pull.blob),
        ("GET", f"/v2/{NAME}/referrers/{{digest}}", pull.referrers),
    ]
    push_paths = [
        ("PUT", f"/v2/{NAME}/manifests/{{reference}}"),
        ("DELETE", f"/v2/{NAME}/manifests/{{reference}}"),
        ("DELETE", f"/v2/{NAME}/blobs/{{digest}}"),
        ("POST", f"/v2/{NAME}/blobs/uploads/"),
        *((m, f"/v2/{NAME}/blobs/uploads/{{session}}") for m in ("GET", "PATCH", "PUT", "DELETE")),
    ]
    table += [(method, path, push_refused) for method, path in push_paths]
    return table


async def push_refused(request: web.Request) -> web.StreamResponse:
    raise RegistryError(
        Code.UNSUPPORTED, "this registry serves pulls only: pushes and deletes are off"
    )


def build_app(
    store: Store,
    *,
    unary: WorkerPool,
    streams: WorkerPool,
    limits: EndpointLimits,
    tokens: Iterable[str] = (),
) -> web.Application:
    """The application: middlewares outermost first (request ID, errors as the
    spec's bodies, credentials, admission), then the route table."""
    middlewares = [identify, spec_errors]
    accepted = list(tokens)
    if accepted:
        middlewares.append(authenticate(accepted))
    middlewares.append(admit(limits.max_concurrent_requests))
    app = web.Application(middlewares=middlewares, client_max_size=1 << 20)
    app.on_response_prepare.append(common_headers)
    pull = Pull(store, unary=unary, streams=streams, limits=limits)
    for method, path, handler in routes(pull):
        app.router.add_route(method, path, handler)
    return app


def tls_context(cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    """The server side of TLS with the gRPC server's files; mutual with a client CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(cafile=str(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["http/1.1"])
    return context


class RegistryEndpoint:
    """The endpoint's listener on the running event loop: ``start``, then ``stop``."""

    def __init__(
        self,
        app: web.Application,
        limits: EndpointLimits,
        *,
        ssl_context: ssl.SSLContext | None = None,
        grace_period: float = 10.0,
    ) -> None:
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log_class=AccessLog,
            access_log=log,
            keepalive_timeout=limits.keepalive_timeout,
            max_line_size=limits.max_header_bytes,
            max_field_size=limits.max_header_bytes,
            max_headers=limits.max_headers,
            shutdown_timeout=grace_period,
        )
        self._ssl_context = ssl_context

    async def start(self, host: str, port: int) -> str:
        """Listen; returns the address bound (the port picked for 0)."""
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, host, port, ssl_context=self._ssl_context, reuse_port=False
        )
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise errors.ListenFailed(
                f"cannot listen on {host}:{port} (--registry-listen): {reason.lower()}",
                metadata={"option": "registry-listen"},
            ) from None
        bound = self._runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        return f"{shown}:{bound}"

    async def stop(self) -> None:
        """Stop listening, close idle connections, let responses in flight end
        within the grace period, then cancel the rest (their leases end)."""
        await self._runner.cleanup()
