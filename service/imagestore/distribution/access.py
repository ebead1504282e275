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


def admit(limit: int) -> Any:
    """A middleware that refuses requests beyond ``limit`` in flight (429)."""
    in_flight = 0

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal in_flight  # touched on the event loop only: no lock
        if in_flight >= limit:
            raise too_many_requests(
                f"the server is busy: {limit} requests already in flight"
                " (--registry-max-concurrent-requests)",
                None,
            )
        in_flight += 1
        try:
            return await handler(request)
        finally:
            in_flight -= 1

    return middleware


class AccessLog(AbstractAccessLogger):
    """One record per request, once its response has been sent (or cut)."""

    def log(self, request: Any, response: web.StreamResponse, time: float) -> None:
        entry: dict[str, Any] = {
            "method": request.method,
            "path": request.rel_url.raw_path_qs[:MAX_LOGGED_PATH],
            "status": response.status,
            "bytes_out": response.body_length,
            "duration_ms": round(time * 1000, 1),
            "peer": request.get(_PEER, ""),
            "request_id": request.get(_REQUEST_ID, ""),
        }
        aborted = request.get(ABORTED)
        if aborted:
            entry["aborted"] = aborted
        log.info("http", extra=entry)
