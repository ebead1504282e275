"""The registry endpoint: its route table, its middlewares and its listener.

``imagestore serve --registry-listen HOST:PORT`` runs it in the gRPC server's
process and event loop, on the same store and worker pools (api/server.py):
started once the store is open, stopped with the gRPC server, its requests in
flight given the same grace period. It speaks HTTP/1.1, over TLS with the
gRPC server's certificate and key when it has them (and requires client
certificates signed by ``--tls-client-ca`` when that is given).

Routes are a table: the pull category's always; the push category's with
``--registry-allow-push``, manifest and tag deletion with
``--registry-allow-delete``. Paths that are off answer 405 UNSUPPORTED, so
clients learn at once that this registry takes no uploads (distribution
answers the same for a read-only registry); blobs are never deleted through
the endpoint (a prune collects what no image uses). With
``--registry-pull-through`` the pull category's manifest and blob reads first
pull what the store lacks from an allowlisted upstream (pullthrough.py).
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from imagestore import errors
from imagestore.bridges import WorkerPool
from imagestore.distribution.access import (
    access_log_class,
    admit,
    authenticate,
    common_headers,
    identify,
    spec_errors,
)
from imagestore.distribution.errors import Code, RegistryError
from imagestore.distribution.limits import EndpointLimits
from imagestore.distribution.pull import Pull
from imagestore.distribution.pullthrough import PullThrough
from imagestore.distribution.push import Push
from imagestore.distribution.uploads import Uploads
from imagestore.store.store import Store
from imagestore.telemetry import Telemetry

log = logging.getLogger("imagestore.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: ``{name}`` is a repository path: several components (checked by names.py)
NAME = "{name:.+}"


def routes(
    pull: Pull, push: Push, *, allow_push: bool = False, allow_delete: bool = False
) -> list[tuple[str, str, Handler]]:
    """(method, path, handler): the pull category, then push's paths (refused
    unless ``allow_push``), then deletion's (refused unless ``allow_delete``)."""
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
    manifest = f"/v2/{NAME}/manifests/{{reference}}"
    session = f"/v2/{NAME}/blobs/uploads/{{session}}"
    pushing: list[tuple[str, str, Handler]] = [
        ("POST", f"/v2/{NAME}/blobs/uploads/", push.start_upload),
        ("GET", session, push.upload_status),
        ("PATCH", session, push.upload_chunk),
        ("PUT", session, push.finish_upload),
        ("DELETE", session, push.cancel_upload),
        ("PUT", manifest, push.put_manifest),
    ]
    table += [(m, path, h if allow_push else push_refused) for m, path, h in pushing]
    table.append(("DELETE", manifest, push.delete_manifest if allow_delete else push_refused))
    table.append(("DELETE", f"/v2/{NAME}/blobs/{{digest}}", push_refused))
    return table


async def push_refused(request: web.Request) -> web.StreamResponse:
    raise RegistryError(
        Code.UNSUPPORTED,
        f"{request.method} is off on this registry (--registry-allow-push,"
        " --registry-allow-delete; blobs are never deleted here)",
    )


def build_app(
    store: Store,
    *,
    unary: WorkerPool,
    streams: WorkerPool,
    limits: EndpointLimits,
    tokens: Iterable[str] = (),
    allow_push: bool = False,
    allow_delete: bool = False,
    through: PullThrough | None = None,
    telemetry: Telemetry | None = None,
) -> web.Application:
    """The application: middlewares outermost first (request ID, errors as the
    spec's bodies, credentials, admission), then the route table; with
    ``allow_push`` the upload sessions start and end with the application;
    ``through`` pulls what the store lacks (its pulls in flight are cancelled
    when the application ends); requests are counted in ``telemetry``."""
    middlewares = [identify, spec_errors]
    accepted = list(tokens)
    if accepted:
        middlewares.append(authenticate(accepted))
    middlewares.append(admit(limits.max_concurrent_requests, telemetry))
    app = web.Application(middlewares=middlewares, client_max_size=1 << 20)
    app.on_response_prepare.append(common_headers)
    pull = Pull(store, unary=unary, streams=streams, limits=limits, through=through)
    if through is not None:

        async def close_pulls(app: web.Application) -> None:
            await through.close()

        app.on_cleanup.append(close_pulls)
    uploads = Uploads(store, unary, limits)
    push = Push(store, uploads, unary=unary)
    if allow_push:

        async def start_uploads(app: web.Application) -> None:
            uploads.start()

        async def close_uploads(app: web.Application) -> None:
            await uploads.close()  # session files kept for after a restart, leases ended

        app.on_startup.append(start_uploads)
        app.on_cleanup.append(close_uploads)
    table = routes(pull, push, allow_push=allow_push, allow_delete=allow_delete)
    for method, path, handler in table:
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


class _RefusedRequestsQuietly(logging.Filter):
    """aiohttp logs a traceback at ERROR for every request its parser refuses (a
    line or headers beyond the bounds): any client could fill the log with them.
    The 400 answer says enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        refused = record.exc_info[1] if record.exc_info else None
        return not isinstance(refused, BadHttpMessage)


_REFUSED_REQUESTS_QUIETLY = _RefusedRequestsQuietly()


class RegistryEndpoint:
    """The endpoint's listener on the running event loop: ``start``, then ``stop``."""

    def __init__(
        self,
        app: web.Application,
        limits: EndpointLimits,
        *,
        ssl_context: ssl.SSLContext | None = None,
        grace_period: float = 10.0,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log_class=access_log_class(telemetry),
            access_log=log,
            keepalive_timeout=limits.keepalive_timeout,
            max_line_size=limits.max_header_bytes,
            max_field_size=limits.max_header_bytes,
            max_headers=limits.max_headers,
            shutdown_timeout=grace_period,
        )
        self._ssl_context = ssl_context
        logging.getLogger("aiohttp.server").addFilter(_REFUSED_REQUESTS_QUIETLY)

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
