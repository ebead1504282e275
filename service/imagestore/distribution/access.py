"""Who may call the endpoint, how many at once, and the access log.

- **Credentials**: the gRPC server's token file (docs/design.md §8). A client
  sends ``Authorization: Bearer <token>``, or ``Basic`` with any user name
  and the token as password (what ``docker login``, containerd's
  ``hosts.toml`` credentials and ``skopeo --creds`` send once challenged).
  Without them the answer is 401 with ``WWW-Authenticate: Basic
  realm="imagestore"`` and the spec's UNAUTHORIZED body. Tokens are compared
  in constant time. TLS and client certificates are the listener's (app.py).
- **Admission**: requests in flight are counted; one over
  ``--registry-max-concurrent-requests`` is refused at once with 429
  TOOMANYREQUESTS and ``Retry-After``, as gRPC calls are (api/admission.py).
- **Errors**: whatever a handler raises leaves as the spec's JSON body
  (distribution/errors.py); aiohttp's own 404 and 405 too.
- **Access log**: one record per request on ``imagestore.http``, message
  ``http``, in the server's log format (logs.py), with ``method``, ``path``,
  ``status``, ``bytes_out``, ``duration_ms``, ``peer`` and ``request_id``
  (the client's ``X-Request-Id`` when it is 1 to 64 visible ASCII characters,
  else a new one, sent back as ``X-Request-Id``); ``aborted`` says why a
  response was cut short.
- **Metrics**: the same place counts each request by method, route kind and
  status class, and the response body bytes, in the server's telemetry
  (``imagestore_endpoint_*``, telemetry.py), when the listener was given one
  (:func:`access_log_class`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from imagestore import errors
from imagestore.distribution.errors import Code, RegistryError, from_store, too_many_requests
from imagestore.logs import REQUEST_ID
from imagestore.telemetry import ENDPOINT_METHODS, Telemetry

log = logging.getLogger("imagestore.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID_HEADER = "X-Request-Id"
MAX_REQUEST_ID = 64
#: the access log's path field is cut here (a request line may be 8 KiB)
MAX_LOGGED_PATH = 512
API_VERSION_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}
CHALLENGE = {"WWW-Authenticate": 'Basic realm="imagestore"'}
#: where a handler notes why it cut its response short, for the access log
ABORTED = "imagestore.aborted"
#: body bytes a streamed response wrote (handlers that stream add to it)
BODY_BYTES = "imagestore.body_bytes"
#: request key: body bytes the kernel sent from a file (sendfile), which aiohttp's
#: own count of what it wrote does not see
SENDFILE_BYTES = "imagestore.sendfile_bytes"
#: what a request asked for (:func:`route_kind`), noted as it enters
_ROUTE = "imagestore.route"
_REQUEST_ID = "imagestore.request_id"
_PEER = "imagestore.peer"


def error_response(error: RegistryError) -> web.Response:
    """The spec's JSON body (aiohttp sends a HEAD's headers only)."""
    return web.Response(
        status=error.status,
        body=error.body(),
        content_type="application/json",
        headers=error.headers,
    )


def _accepted_request_id(value: str | None) -> str | None:
    if value and len(value) <= MAX_REQUEST_ID and all("!" <= c <= "~" for c in value):
        return value
    return None


@web.middleware
async def identify(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request its ID (for every record logged while it runs), and
    note its peer while the connection is there to ask."""
    request_id = _accepted_request_id(request.headers.get(REQUEST_ID_HEADER))
    request[_REQUEST_ID] = request_id or secrets.token_hex(8)
    REQUEST_ID.set(request[_REQUEST_ID])
    peer = request.transport.get_extra_info("peername") if request.transport else None
    request[_PEER] = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
    request[_ROUTE] = route_kind(request)
    return await handler(request)


async def common_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response as it is prepared (streamed ones too): the API
    version and the request's ID."""
    response.headers.update(API_VERSION_HEADER)
    if _REQUEST_ID in request:
        response.headers[REQUEST_ID_HEADER] = request[_REQUEST_ID]


@web.middleware
async def spec_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal as the spec's JSON error body."""
    try:
        return await handler(request)
    except RegistryError as exc:
        return error_response(exc)
    except errors.ImageStoreError as exc:
        return error_response(from_store(exc))
    except web.HTTPMethodNotAllowed as exc:
        refusal = RegistryError(
            Code.UNSUPPORTED,
            f"{request.method} is not supported here",
            headers={"Allow": ",".join(sorted(exc.allowed_methods))},
        )
        return error_response(refusal)
    except web.HTTPNotFound:
        return error_response(RegistryError(Code.NAME_UNKNOWN, "no such endpoint"))


def authenticate(tokens: Iterable[str]) -> Any:
    """A middleware that lets through requests carrying one of ``tokens``."""
    accepted = [token.encode() for token in tokens]

    def offered(header: str) -> bytes | None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() == "bearer":
            return value.strip().encode()
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True)
            except (binascii.Error, ValueError):
                return None
            return decoded.partition(b":")[2]  # any user name; the token is the password
        return None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = offered(request.headers.get("Authorization", ""))
        if given is None or not any(hmac.compare_digest(given, t) for t in accepted):
            raise RegistryError(Code.UNAUTHORIZED, "authentication required", headers=CHALLENGE)
        return await handler(request)

    return middleware


def admit(limit: int, telemetry: Telemetry | None = None) -> Any:
    """A middleware that refuses requests beyond ``limit`` in flight (429); the
    count is ``telemetry``'s gauge too."""
    in_flight = 0

    def counted(count: int) -> int:
        if telemetry is not None:
            telemetry.endpoint_in_flight.set(count)
        return count

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal in_flight  # touched on the event loop only: no lock
        if in_flight >= limit:
            raise too_many_requests(
                f"the server is busy: {limit} requests already in flight"
                " (--registry-max-concurrent-requests)",
                None,
            )
        in_flight = counted(in_flight + 1)
        try:
            return await handler(request)
        finally:
            in_flight = counted(in_flight - 1)

    return middleware


class AccessLog(AbstractAccessLogger):
    """One record per request, once its response has been sent (or cut); counted
    in ``telemetry`` when a subclass names one (:func:`access_log_class`)."""

    telemetry: Telemetry | None = None

    def log(self, request: Any, response: web.StreamResponse, time: float) -> None:
        entry: dict[str, Any] = {
            "method": request.method,
            "path": request.rel_url.raw_path_qs[:MAX_LOGGED_PATH],
            "status": response.status,
            "bytes_out": response.body_length + request.get(SENDFILE_BYTES, 0),
            "duration_ms": round(time * 1000, 1),
            "peer": request.get(_PEER, ""),
            "request_id": request.get(_REQUEST_ID, ""),
        }
        aborted = request.get(ABORTED)
        if aborted:
            entry["aborted"] = aborted
        log.info("http", extra=entry)
        if self.telemetry is not None:
            _count(self.telemetry, request, response)


def access_log_class(telemetry: Telemetry | None) -> type[AccessLog]:
    """The access log that counts in ``telemetry`` (aiohttp makes its instance)."""
    return type("CountingAccessLog", (AccessLog,), {"telemetry": telemetry})


def route_kind(request: web.Request) -> str:
    """What a request asked for, from the route it matched: ``base``,
    ``catalog``, ``tags``, ``manifest``, ``blob``, ``upload``, ``referrers``, or
    ``other`` (a path that is no endpoint)."""
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else ""
    if canonical == "/v2/":
        return "base"
    if canonical == "/v2/_catalog":
        return "catalog"
    for marker, kind in (
        ("/tags/list", "tags"),
        ("/manifests/", "manifest"),
        ("/blobs/uploads/", "upload"),
        ("/blobs/", "blob"),
        ("/referrers/", "referrers"),
    ):
        if marker in canonical:
            return kind
    return "other"


def body_bytes(request: Any, response: web.StreamResponse) -> int:
    """The body bytes a response carried: a streamed one's as its handler
    counted them, a whole one's length (none for a HEAD)."""
    if request.method == "HEAD":
        return 0
    if isinstance(response, web.Response):
        return response.content_length or 0
    return int(request.get(BODY_BYTES, 0))


def _count(telemetry: Telemetry, request: Any, response: web.StreamResponse) -> None:
    """One request in the endpoint's metrics (one its parser refused: route ``other``)."""
    method = request.method if request.method in ENDPOINT_METHODS else "other"
    route = request.get(_ROUTE, "other")
    telemetry.endpoint_requests.labels(method, route, f"{response.status // 100}xx").inc()
    telemetry.endpoint_bytes.labels(route).inc(body_bytes(request, response))
