"""How a request reaches a registry, and the policy around each one.

Every request leaves through :meth:`Transport.send`, which applies the SSRF
guard (``registry/guard.py``) to the URL, picks the proxy (read from the
environment by ``registry/proxies.py``: the sessions never trust the
environment, so ``~/.netrc`` is never read), the TLS context
(``registry/trust.py``) and the session of the registry's address class: one
aiohttp session per class, each with a connector whose resolver checks and
pins the addresses it connects to. ``send`` follows no redirect: its callers
do, by hand, each hop's target checked by :meth:`Transport.redirect_target`
and, when sent, by the guard.

A blob pushed from the store goes out as a :class:`FileBody`: sendfile(2)
from the blob's file on a plain connection (its bytes never enter Python),
the event loop's reads and writes through TLS.

The policy that wraps a request (or a whole download) is here too: retries
(:meth:`Transport.with_retries`), the total deadline of a blob or manifest
download (:meth:`Transport.deadline`) and the speed floor bodies are read under.
Each request is counted (host, status, time to its answer) and carries
imagestore's User-Agent; each retry is counted under the host the failed try
went to.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import logging
import random
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, BinaryIO, TypeVar

import aiohttp
import aiohttp.payload
from yarl import URL

from imagestore import errors
from imagestore.addresses import AddressClass
from imagestore.registry.guard import AddressGuard, GuardedResolver, RefusalError
from imagestore.registry.options import RegistryOptions
from imagestore.registry.pool import BoundedConnector
from imagestore.registry.proxies import Proxies
from imagestore.registry.retry import Retryable, connection_failure, unresolved
from imagestore.registry.timing import SpeedFloor, deadline
from imagestore.registry.trust import Trust
from imagestore.telemetry import NO_ANSWER, Telemetry
from imagestore.version import __version__

log = logging.getLogger("imagestore.registry")
T = TypeVar("T")

REDIRECTS = frozenset({301, 302, 303, 307, 308})
USER_AGENT = f"imagestore/{__version__}"
#: a response's read buffer (aiohttp's default is 64 KiB): a layer arrives in fewer,
#: larger reads, each a pass of Python on the event loop (measured: ~3% of a big
#: pull's CPU); reading pauses once twice this is buffered unread
READ_BUFFER = 1 << 20

#: the host label of the last request this task sent: a retry is counted under it
_last_host: contextvars.ContextVar[str] = contextvars.ContextVar("last_registry_host", default="")

#: called with the delay before the next try (for "Retrying in N seconds")
OnRetry = Callable[[float], None]


class Transport:
    """Sessions, the one ``send``, redirect checks, retries and deadlines for
    every registry; :meth:`close` at shutdown."""

    def __init__(
        self,
        options: RegistryOptions,
        trust: Trust,
        environ: Mapping[str, str],
        telemetry: Telemetry | None = None,
    ) -> None:
        self.options = options
        self.telemetry = telemetry if telemetry is not None else Telemetry()
        self.trust = trust
        self.guard = AddressGuard(options.allow_internal, options.test_resolve)
        self.proxies = Proxies(environ)
        self.speed_floor = SpeedFloor(options.min_speed, options.speed_window)
        #: by the address class a request may reach (None: through a proxy)
        self._sessions: dict[AddressClass | None, aiohttp.ClientSession] = {}

    async def close(self) -> None:
        """Close every session (and so every pooled connection)."""
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for session in sessions:
            await session.close()

    def session(self, reach: AddressClass | None) -> aiohttp.ClientSession:
        """The session for requests that may reach addresses up to ``reach`` (None:
        through a proxy, which resolves names itself). Each has its own pool, so a
        connection made for one class is never reused by a stricter one."""
        session = self._sessions.get(reach)
        if session is None or session.closed:
            # the proxy's own name is the operator's choice: any class
            limit = AddressClass.LOOPBACK if reach is None else reach
            resolver = GuardedResolver(self.guard, limit)
            session = self._sessions[reach] = aiohttp.ClientSession(
                connector=BoundedConnector(limit=64, limit_per_host=16, resolver=resolver),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=self.options.connect_timeout,
                    sock_read=self.options.idle_timeout,
                ),
                # no ~/.netrc, no proxy variables: proxies are read by registry/proxies.py
                trust_env=False,
                auto_decompress=False,  # a layer's bytes are hashed exactly as sent
                # registries need no cookies, and a jar would keep whatever they set
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return session

    async def send(
        self,
        method: str,
        url: URL,
        reach: AddressClass,
        what: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
    ) -> aiohttp.ClientResponse:
        """The one place a request leaves: the SSRF guard, the proxy, the session
        of ``reach`` (the registry's address class). No redirect is followed.
        A refused address is errors.AddressRefused (PERMISSION_DENIED); connection
        failures come back as Retryable."""
        try:
            self.guard.check_url(url, reach)
        except errors.ImageStoreError as exc:
            raise _about(exc, what) from None
        proxy = self.proxies.for_url(url)
        session = self.session(None if proxy is not None else reach)
        sent = {**(headers or {}), "User-Agent": USER_AGENT}
        proxy_headers: dict[str, str] | None = None
        if proxy is not None and proxy.authorization is not None:
            if url.scheme == "https":  # on the CONNECT only: the tunnel carries the rest
                proxy_headers = {"Proxy-Authorization": proxy.authorization}
            else:  # a plain request is itself sent to the proxy
                sent["Proxy-Authorization"] = proxy.authorization
        host = self.telemetry.registry_host(url.host_port_subcomponent or "")
        _last_host.set(host)
        status = NO_ANSWER
        started = time.monotonic()
        try:
            response = await session.request(
                method,
                url,
                headers=sent,
                data=data,
                allow_redirects=False,
                read_bufsize=READ_BUFFER,
                ssl=self.trust.ssl_for(url),
                proxy=proxy.url if proxy is not None else None,
                proxy_headers=proxy_headers,
            )
            status = str(response.status)
            return response
        except aiohttp.ClientConnectorCertificateError as exc:
            raise errors.RegistryCertificateUntrusted(
                f"{what}: TLS certificate of {url.raw_authority} is not trusted:"
                f" {exc.certificate_error} (use --registry-ca, certs.d or --insecure-registry)",
                metadata={"host": url.raw_authority[:253]},
            ) from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, RefusalError):
                raise _about(exc.os_error.error, what) from None
            if isinstance(exc.os_error, socket.gaierror) and proxy is None:
                # a name that does not resolve will not resolve in a second either
                raise unresolved(url.raw_host or "", exc.os_error, what) from None
            raise connection_failure(exc, what) from None
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
            raise connection_failure(exc, what) from None
        finally:
            self.telemetry.registry_request(host, status, time.monotonic() - started)

    def redirect_target(self, current: URL, location: str, hops: int, what: str) -> URL:
        """Where a redirect leads, refused when it is the ``hops``-th past the
        limit, not HTTP(S), or an https → http downgrade to a host not allowed
        plain HTTP. Its address is checked when it is sent (:meth:`send`)."""
        if hops > self.options.max_redirects:
            raise errors.RegistryUnavailable(
                f"{what}: more than {self.options.max_redirects} redirects",
                metadata={"redirects": str(self.options.max_redirects)},
            )
        target = handed_back(current, location)
        if target is None:
            raise errors.RegistryResponseInvalid(f"{what}: redirect to an unusable location")
        downgrade = current.scheme == "https" and target.scheme == "http"
        if downgrade and not self.trust.plain_http_allowed(target.raw_authority):
            raise errors.RegistryResponseInvalid(f"{what}: refusing a redirect from https to http")
        return target

    async def with_retries(
        self, attempt: Callable[[], Awaitable[T]], on_retry: OnRetry | None
    ) -> T:
        """Run ``attempt``; a Retryable failure is tried again after a growing,
        jittered delay (or the registry's Retry-After), up to ``attempts`` tries.
        An attempt takes its transfer slot inside, so none is held while waiting."""
        tries = max(1, self.options.attempts)
        for number in range(tries):
            try:
                return await attempt()
            except Retryable as exc:
                if number == tries - 1:  # the registry's Retry-After, as RetryInfo
                    raise errors.retry_later(exc.final, exc.retry_after) from None
                delay = exc.retry_after
                if delay is None:
                    delay = self.options.backoff * (2**number) * random.uniform(0.9, 1.1)
                log.info("retrying in %.3f s: %s", delay, exc.final.message)
                self.telemetry.registry_retries.labels(_last_host.get() or "unknown").inc()
                if on_retry is not None:
                    on_retry(delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def deadline(self, what: str) -> AbstractAsyncContextManager[None]:
        """The total time one blob or manifest download may take (--registry-blob-timeout)."""
        return deadline(self.options.blob_timeout, what)


def handed_back(current: URL, location: str) -> URL | None:
    """A URL a registry handed back (a redirect, an upload session, a next page),
    read against ``current``; None when it cannot be read (yarl's ValueError: a
    bad host, port or IPv6 literal) or is not HTTP(S) with a host. Its address
    is checked by the guard when it is sent."""
    try:
        target = current.join(URL(location))
    except ValueError:
        return None
    if target.scheme not in ("http", "https") or not target.raw_host:
        return None
    return target


def _about(error: errors.ImageStoreError, what: str) -> errors.ImageStoreError:
    """A copy of ``error`` with ``what`` (the request's subject) in front of its
    message (a copy: the resolver's refusal may be shared by waiting lookups)."""
    named = copy.copy(error)
    named.message = f"{what}: {error.message}"
    named.args = (named.message,)
    return named


class FileBody(aiohttp.payload.Payload):
    """A request body: the first ``size`` bytes of an open file, sent by the
    kernel (``loop.sendfile``: sendfile(2) on a plain socket; the loop reads and
    writes through TLS), SEGMENT bytes at a time, each reported to ``on_sent``.

    ``before_last`` is awaited before the last TAIL bytes go: raising there
    leaves the body short of its Content-Length, so the server never has all
    of it. The caller owns ``file``; a body may be sent again (a 401, a
    redirect): each send starts at the file's beginning."""

    #: bytes per sendfile call: the unit of progress
    SEGMENT = 8 << 20
    #: bytes held back until ``before_last`` has its say
    TAIL = 64 << 10

    def __init__(
        self,
        file: BinaryIO,
        size: int,
        before_last: Callable[[], Awaitable[None]],
        on_sent: Callable[[int], None],
    ) -> None:
        super().__init__(file, content_type="application/octet-stream")
        self._size = size  # the base class's: the Content-Length it implies
        self._length = size
        self._before_last = before_last
        self._on_sent = on_sent

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a file body is not text")

    async def write(self, writer: Any) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: Any, content_length: int | None) -> None:
        loop = asyncio.get_running_loop()
        writer.send_headers()  # sendfile writes the socket itself: headers first
        await writer.drain()
        transport = writer.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the connection closed before the body")
        size = self._length if content_length is None else min(self._length, content_length)
        held = max(0, size - self.TAIL)
        offset = 0
        while offset < size:
            if offset == held:
                await self._before_last()
            end = held if offset < held else size
            count = min(self.SEGMENT, end - offset)
            sent = await loop.sendfile(transport, self._value, offset, count)
            if sent != count:  # the file is shorter than it should be
                raise ConnectionResetError(f"the body ended after {offset + sent} bytes")
            offset += sent
            self._on_sent(sent)
