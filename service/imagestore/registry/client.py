"""HTTP to registries: endpoints, TLS, authentication, redirects, retries, errors.

Every request leaves through :meth:`RegistryClient.send`, which applies the
SSRF guard (``registry/guard.py``) to the URL, picks the proxy (read from the
environment by ``registry/proxies.py``: the sessions never trust the
environment, so ``~/.netrc`` is never read) and the session of the registry's
address class: one aiohttp session per class, each with a connector whose
resolver checks and pins the addresses it connects to. :meth:`request` adds
credentials only for the registry's own origin, follows redirects by hand
(refusing downgrades, loops and, through ``send``, addresses more internal
than the registry's) and answers a 401 challenge once. Token requests follow
the same path; one carrying a refresh token is never redirected.

Registries are named by callers, so nothing here grows with the names it is
given: bodies are read up to a cap (and under a speed floor), the state kept
per host (ping results, TLS contexts, tokens) lives in bounded LRU caches, and
hosts without their own certs.d folder share one TLS context.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import json
import logging
import os
import random
import ssl
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from yarl import URL

from imagestore import errors
from imagestore.addresses import AddressClass, host_of, is_loopback
from imagestore.dockerconfig import ANONYMOUS, Credentials, DockerConfig
from imagestore.oci import mediatypes as mt
from imagestore.oci.references import DEFAULT_DOMAIN, Reference
from imagestore.registry.auth import (
    MAX_TOKEN_RESPONSE,
    Challenge,
    FetchToken,
    TokenCache,
    basic_header,
    parse_challenges,
)
from imagestore.registry.guard import AddressGuard, GuardedResolver, RefusalError
from imagestore.registry.lru import LRU
from imagestore.registry.options import RegistryOptions
from imagestore.registry.pool import BoundedConnector
from imagestore.registry.proxies import Proxies
from imagestore.registry.retry import Retryable, connection_failure, retry_after
from imagestore.registry.slots import HostSlots
from imagestore.registry.timing import SpeedFloor, deadline

log = logging.getLogger("imagestore.registry")
T = TypeVar("T")

DOCKER_HUB_HOST = "registry-1.docker.io"
MANIFEST_ACCEPT = ", ".join(mt.MANIFEST_ACCEPT)
REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: an error body is read up to this (its first message is all we show)
MAX_ERROR_BODY = 64 << 10
#: the ping's body ("{}") is read up to this, so the connection can be reused; a
#: longer one is not read at all: the connection is closed instead
MAX_PING_BODY = 64 << 10
#: bodies we only glance at (errors, the ping) must arrive within this
GLANCE_TIMEOUT = 10.0
#: per-host TLS contexts kept (~840 KiB each); only hosts with their own certs.d
#: folder get one, so the operator's folders bound them, this bounds the memory
TLS_CACHE_SIZE = 32
#: registries whose ping result (scheme and auth challenge) is remembered
HOST_CACHE_SIZE = 256

#: called with the delay before the next try (for "Retrying in N seconds")
OnRetry = Callable[[float], None]


def registry_error(status: int, body: bytes, what: str) -> errors.ImageStoreError:
    """The domain error for a registry's non-success answer."""
    detail = _error_detail(body) or f"HTTP {status}"
    message = f"{what}: {detail}"
    metadata = {"status": str(status)}
    if status in (401, 403):
        return errors.PermissionDenied(message, metadata=metadata)
    if status == 404:
        return errors.NotFound(message, metadata=metadata)
    if status in (413, 429):
        return errors.ResourceExhausted(message, metadata=metadata)
    if status >= 500:
        return errors.Unavailable(message, metadata=metadata)
    return errors.FailedPrecondition(message, metadata=metadata)


def _error_detail(body: bytes) -> str:
    """``code: message`` from an OCI error body, or the body's first line."""
    try:
        document = json.loads(body)
        first = document["errors"][0]
        code, message = str(first.get("code", "")), str(first.get("message", ""))
        return f"{code.lower().replace('_', ' ')}: {message}".strip(": ")[:500]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        text = body.decode("utf-8", errors="replace").strip().splitlines()
        return text[0][:200] if text else ""


async def read_limited(
    response: aiohttp.ClientResponse, limit: int, what: str, floor: SpeedFloor | None = None
) -> bytes:
    """The whole body, refusing more than ``limit`` bytes (checked while reading);
    with a ``floor``, a body arriving slower than it fails the try (Retryable)."""
    declared = response.content_length
    if declared is not None and declared > limit:
        raise errors.SizeLimitExceeded(
            f"{what} is {declared} bytes; the limit is {limit}",
            metadata={"size": str(declared), "limit": str(limit)},
        )
    parts: list[bytes] = []
    total = 0
    async with (floor or _NO_FLOOR).meter(what) as meter:
        async for chunk in response.content.iter_chunked(1 << 16):
            total += len(chunk)
            if total > limit:
                raise errors.SizeLimitExceeded(
                    f"{what} is larger than the limit of {limit} bytes",
                    metadata={"limit": str(limit)},
                )
            parts.append(chunk)
            meter.count(len(chunk))
    return b"".join(parts)


_NO_FLOOR = SpeedFloor(0, 0)


async def glance(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """A short body read whole (so the connection can be reused), or None when it
    is longer than ``limit``, slower than GLANCE_TIMEOUT or broken: then nothing
    more is read, and releasing the answer closes its connection."""
    try:
        async with asyncio.timeout(GLANCE_TIMEOUT):
            return await read_limited(response, limit, "body")
    except (errors.SizeLimitExceeded, aiohttp.ClientError, TimeoutError):
        return None


async def fail_for(response: aiohttp.ClientResponse, what: str) -> errors.ImageStoreError:
    """Read a failed answer's error body; 5xx and 429 come back as Retryable."""
    body = await glance(response, MAX_ERROR_BODY) or b""
    error = registry_error(response.status, body, what)
    if response.status == 429 or response.status >= 500:
        raise Retryable(error, retry_after(response.headers.get("Retry-After")))
    return error


@dataclass
class Host:
    """What we learned about one registry host: its base URL, auth challenge and
    address class (how internal the addresses it may send us to may be)."""

    base_url: URL
    challenge: Challenge | None = None
    reach: AddressClass = AddressClass.PUBLIC


@dataclass
class Repository:
    """One repository at one endpoint, with the credentials and scope to use."""

    client: RegistryClient
    domain: str  # the reference's domain ("docker.io")
    host: Host  # the endpoint actually contacted
    path: str  # "library/redis"
    credentials: Credentials
    actions: str  # "pull" or "pull,push"
    extra_scopes: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> URL:
        return self.host.base_url

    @property
    def origin(self) -> str:
        return str(self.base_url.origin())

    def url(self, suffix: str) -> URL:
        return URL(f"{self.origin}/v2/{self.path}/{suffix}", encoded=False)

    @property
    def scopes(self) -> tuple[str, ...]:
        return (f"repository:{self.path}:{self.actions}", *self.extra_scopes)


class RegistryClient:
    """Registry access for the whole server; :meth:`close` at shutdown."""

    def __init__(self, options: RegistryOptions, environ: Mapping[str, str] | None = None) -> None:
        self.options = options
        self.server_credentials = (
            DockerConfig(options.config_file) if options.config_file is not None else None
        )
        self.guard = AddressGuard(options.allow_internal, options.test_resolve)
        self.proxies = Proxies(os.environ if environ is None else environ)
        self.tokens = TokenCache()
        self._hosts: LRU[str, Host] = LRU(HOST_CACHE_SIZE)
        #: one ping at a time per endpoint (the others wait for its answer)
        self._pings = HostSlots(1)
        #: by the address class a request may reach (None: through a proxy)
        self._sessions: dict[AddressClass | None, aiohttp.ClientSession] = {}
        #: (verified) for hosts with no certs.d folder: the common case shares these
        self._shared_ssl: dict[bool, ssl.SSLContext] = {}
        self._ssl: LRU[tuple[str, bool], ssl.SSLContext] = LRU(TLS_CACHE_SIZE)
        # whether a host has a certs.d folder, looked up once (not on every request)
        self._certs_folders: LRU[str, tuple[Path | None]] = LRU(HOST_CACHE_SIZE)
        #: per registry (its origin): a slow registry fills only its own slots
        self.downloads = HostSlots(options.max_concurrent_downloads)
        self.uploads = HostSlots(options.max_concurrent_uploads)
        self.speed_floor = SpeedFloor(options.min_speed, options.speed_window)

    async def close(self) -> None:
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

    # ---- policy ----------------------------------------------------------------

    def is_insecure(self, hostport: str) -> bool:
        """Listed with --insecure-registry (by host[:port] or by network)."""
        host = host_of(hostport)
        for entry in self.options.insecure_registries:
            if entry in (hostport, host):
                return True
            try:
                network = ipaddress.ip_network(entry, strict=False)
                if ipaddress.ip_address(host) in network:
                    return True
            except ValueError:
                continue
        return False

    def plain_http_allowed(self, hostport: str) -> bool:
        return is_loopback(host_of(hostport)) or self.is_insecure(hostport)

    def ssl_context(self, hostport: str) -> ssl.SSLContext:
        """System CAs plus --registry-ca and ``certs.d/<host>/``; unverified for
        --insecure-registry hosts (Docker's meaning of the flag).

        A context costs ~840 KiB: hosts without a certs.d folder share one (two
        with the unverified kind), the others are kept in a small LRU."""
        insecure = self.is_insecure(hostport)
        folder = self._certs_folder(hostport)
        if folder is None:
            shared = self._shared_ssl.get(insecure)
            if shared is None:
                shared = self._shared_ssl[insecure] = self._new_ssl_context(None, insecure)
            return shared
        key = (hostport, insecure)
        context = self._ssl.get(key)
        if context is None:
            context = self._new_ssl_context(folder, insecure)
            self._ssl.put(key, context)
        return context

    def _new_ssl_context(self, folder: Path | None, insecure: bool) -> ssl.SSLContext:
        context = ssl.create_default_context()
        for ca in self.options.ca_files:
            context.load_verify_locations(cafile=str(ca))
        if folder is not None:
            for ca in sorted(folder.glob("*.crt")):
                context.load_verify_locations(cafile=str(ca))
            for cert in sorted(folder.glob("*.cert")):
                key_file = cert.with_suffix(".key")
                if not key_file.is_file():
                    raise errors.FailedPrecondition(f"{cert} has no matching {key_file.name}")
                context.load_cert_chain(str(cert), str(key_file))
        if insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _certs_folder(self, hostport: str) -> Path | None:
        if self.options.certs_dir is None:
            return None
        known = self._certs_folders.get(hostport)
        if known is None:
            folder = self.options.certs_dir / hostport
            known = (folder if folder.is_dir() else None,)
            self._certs_folders.put(hostport, known)
        return known[0]

    # ---- endpoints -------------------------------------------------------------

    def endpoints(self, domain: str, *, for_push: bool) -> list[str]:
        """Where to go for a reference's domain: mirrors first (docker.io pulls only)."""
        if domain == DEFAULT_DOMAIN:
            mirrors = [] if for_push else [m.rstrip("/") for m in self.options.mirrors]
            return [*mirrors, f"https://{DOCKER_HUB_HOST}"]
        return [domain]

    async def repository(
        self,
        reference: Reference,
        endpoint: str,
        credentials: Credentials | None,
        *,
        push: bool = False,
    ) -> Repository:
        """A repository handle at ``endpoint``, after the ``/v2/`` ping (scheme
        and auth discovery).

        Request credentials go only to the reference's own registry; a mirror
        gets the server-side credentials configured for the mirror's host, or
        none. Server-side credentials apply only to the registries the config
        file names."""
        host = await self._host(endpoint)
        is_mirror = reference.domain == DEFAULT_DOMAIN and not endpoint.endswith(DOCKER_HUB_HOST)
        if is_mirror:
            chosen = await self._server_credentials(host.base_url.raw_authority)
        else:
            chosen = credentials or await self._server_credentials(reference.domain)
        return Repository(
            self,
            reference.domain,
            host,
            reference.path,
            chosen,
            "pull,push" if push else "pull",
        )

    async def _server_credentials(self, registry: str) -> Credentials:
        if self.server_credentials is None:
            return ANONYMOUS
        return await asyncio.to_thread(self.server_credentials.lookup, registry)

    async def login(self, domain: str, credentials: Credentials) -> None:
        """Check credentials the way the registry will judge them: Basic on
        ``/v2/``, or a token for them from the Bearer realm (``docker login``)."""
        endpoint = self.endpoints(domain, for_push=True)[0]
        host = await self._host(endpoint)
        challenge = host.challenge
        if challenge is None:
            return  # an open registry takes anyone
        if challenge.scheme == "bearer":
            fetch = self._token_fetcher(host.reach)
            await self.tokens.token(challenge, "", credentials, fetch, fresh=True)
            return
        what = f"login to {domain}"
        repo = Repository(self, domain, host, "", credentials, "pull")  # Basic: /v2/ itself

        async def attempt() -> None:
            async with await self.request(repo, "GET", host.base_url / "v2/", what=what) as answer:
                if answer.status in (401, 403):
                    raise errors.PermissionDenied(
                        f"{what}: unauthorized: incorrect username or password"
                    )
                if answer.status != 200:
                    raise await fail_for(answer, what)

        await self.with_retries(attempt, None)

    async def _host(self, endpoint: str) -> Host:
        async with self._pings.hold(endpoint):
            host = self._hosts.get(endpoint)
            if host is None:
                host = await self.with_retries(lambda: self._ping(endpoint), None)
                self._hosts.put(endpoint, host)
            return host

    async def _ping(self, endpoint: str) -> Host:
        """``GET /v2/``: HTTPS first; plain HTTP only where allowed. The registry's
        address class is found here, from its host as named."""
        if "://" in endpoint:
            candidates = [URL(endpoint)]
        else:
            candidates = [URL(f"https://{endpoint}")]
            if self.plain_http_allowed(endpoint):
                candidates.append(URL(f"http://{endpoint}"))
        direct = self.proxies.for_url(candidates[0]) is None
        reach = await self.guard.registry_class(candidates[0].raw_host or "", direct=direct)
        what = f"cannot reach registry {endpoint}"
        last: Retryable | None = None
        for base in candidates:
            try:
                response = await self.send("GET", base / "v2/", reach, what)
            except Retryable as exc:
                last = exc
                continue
            async with response:
                # the body ("{}") says nothing; read a short one to reuse the connection
                await glance(response, MAX_PING_BODY)
                if response.status == 401:
                    return Host(base, _pick_challenge(response), reach)
                if response.status in (200, 204) or response.status in REDIRECTS:
                    return Host(base, reach=reach)
                if response.status >= 500 or response.status == 429:
                    raise Retryable(registry_error(response.status, b"", f"ping {endpoint}"))
                raise errors.Unavailable(
                    f"{endpoint} does not speak the registry API (GET /v2/ gave {response.status})"
                )
        assert last is not None
        raise last

    def _ssl_for(self, url: URL) -> ssl.SSLContext | bool:
        if url.scheme != "https":
            return False
        return self.ssl_context(url.raw_authority)

    # ---- requests --------------------------------------------------------------

    def deadline(self, what: str) -> AbstractAsyncContextManager[None]:
        """The total time one blob or manifest download may take (--registry-blob-timeout)."""
        return deadline(self.options.blob_timeout, what)

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
                if number == tries - 1:
                    raise exc.final from None
                delay = exc.retry_after
                if delay is None:
                    delay = self.options.backoff * (2**number) * random.uniform(0.9, 1.1)
                log.info("retrying in %.3f s: %s", delay, exc.final.message)
                if on_retry is not None:
                    on_retry(delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

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
        sent = dict(headers or {})
        proxy_headers: dict[str, str] | None = None
        if proxy is not None and proxy.authorization is not None:
            if url.scheme == "https":  # on the CONNECT only: the tunnel carries the rest
                proxy_headers = {"Proxy-Authorization": proxy.authorization}
            else:  # a plain request is itself sent to the proxy
                sent["Proxy-Authorization"] = proxy.authorization
        try:
            return await session.request(
                method,
                url,
                headers=sent,
                data=data,
                allow_redirects=False,
                ssl=self._ssl_for(url),
                proxy=proxy.url if proxy is not None else None,
                proxy_headers=proxy_headers,
            )
        except aiohttp.ClientConnectorCertificateError as exc:
            raise errors.Unavailable(
                f"{what}: TLS certificate of {url.raw_authority} is not trusted:"
                f" {exc.certificate_error} (use --registry-ca, certs.d or --insecure-registry)"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, RefusalError):
                raise _about(exc.os_error.error, what) from None
            raise connection_failure(exc, what) from None
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
            raise connection_failure(exc, what) from None

    async def request(
        self,
        repo: Repository,
        method: str,
        url: URL,
        *,
        headers: Mapping[str, str] | None = None,
        body: Callable[[], Any] | None = None,
        scope: str | None = None,
        what: str,
    ) -> aiohttp.ClientResponse:
        """One request with auth and redirects; the caller reads and releases the
        answer; ``scope`` is one more token scope for this request alone.
        Connection failures come back as Retryable."""
        hops = 0
        reauthorized = False
        while True:
            sent = dict(headers or {})
            if url.origin() == repo.base_url.origin():
                # after a 401 the cached token is suspect: ask for a fresh one
                authorization = await self._authorization(repo, reauthorized, scope)
                if authorization:
                    sent["Authorization"] = authorization
            try:
                response = await self.send(
                    method,
                    url,
                    repo.host.reach,
                    what,
                    headers=sent,
                    data=body() if body is not None else None,
                )
            except errors.AddressRefused:
                if url.origin() == repo.base_url.origin():
                    # the registry's own name now leads inward: find its class afresh
                    # at the next ping, rather than refuse it until a restart
                    self._hosts.discard_if(lambda known: known is repo.host)
                raise
            if response.status in REDIRECTS and "Location" in response.headers:
                location = response.headers["Location"]
                response.release()
                hops += 1
                url = self.redirect_target(url, location, hops, what)
                continue
            if (
                response.status == 401
                and not reauthorized
                and url.origin() == repo.base_url.origin()
            ):
                challenge = _pick_challenge(response)
                response.release()
                if challenge is None:
                    raise errors.PermissionDenied(f"{what}: unauthorized, and no challenge given")
                self._learn(repo, challenge)
                reauthorized = True
                continue
            return response

    def redirect_target(self, current: URL, location: str, hops: int, what: str) -> URL:
        """Where a redirect leads, refused when it is the ``hops``-th past the
        limit, not HTTP(S), or an https → http downgrade to a host not allowed
        plain HTTP. Its address is checked when it is sent (:meth:`send`)."""
        if hops > self.options.max_redirects:
            raise errors.Unavailable(
                f"{what}: more than {self.options.max_redirects} redirects",
                metadata={"reason": "redirect loop"},
            )
        try:
            target = current.join(URL(location))
        except ValueError:
            target = URL()
        if target.scheme not in ("http", "https") or not target.raw_host:
            raise errors.DataLoss(f"{what}: redirect to an unusable location")
        downgrade = current.scheme == "https" and target.scheme == "http"
        if downgrade and not self.plain_http_allowed(target.raw_authority):
            raise errors.DataLoss(f"{what}: refusing a redirect from https to http")
        return target

    def _learn(self, repo: Repository, challenge: Challenge) -> None:
        repo.host.challenge = challenge
        scope = challenge.params.get("scope", "")
        for extra in scope.split():
            if extra not in repo.scopes:
                repo.extra_scopes.append(extra)

    async def _authorization(
        self, repo: Repository, fresh: bool = False, scope: str | None = None
    ) -> str | None:
        challenge = repo.host.challenge
        credentials = repo.credentials
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return basic_header(credentials) if credentials.username else None
        if challenge.scheme == "bearer":
            scopes = (*repo.scopes, scope) if scope else repo.scopes
            token = await self.tokens.token(
                challenge,
                " ".join(scopes),
                credentials,
                self._token_fetcher(repo.host.reach),
                fresh=fresh,
            )
            return f"Bearer {token}"
        return None

    def _token_fetcher(self, reach: AddressClass) -> FetchToken:
        """Token requests for a registry of class ``reach`` (its realm is a URL the
        registry handed us: the guard applies)."""

        async def fetch(
            realm: str,
            params: Mapping[str, str],
            authorization: str | None,
            form: Mapping[str, str] | None = None,
        ) -> tuple[int, object]:
            return await self._fetch_token(reach, realm, params, authorization, form)

        return fetch

    async def _fetch_token(
        self,
        reach: AddressClass,
        realm: str,
        params: Mapping[str, str],
        authorization: str | None,
        form: Mapping[str, str] | None = None,
    ) -> tuple[int, object]:
        """GET the realm (Basic or anonymous), or POST ``form`` (OAuth2).

        A GET follows redirects by hand like any request, its Authorization kept
        only for the realm's own origin; a POST carries a refresh token and is
        never redirected (a 307 would re-send the token to wherever it points)."""
        try:
            url = URL(realm)
        except ValueError:
            url = URL()
        if url.scheme != "https" and not (
            url.scheme == "http" and self.plain_http_allowed(url.raw_authority)
        ):
            raise errors.DataLoss(f"refusing a token realm that is not https: {realm[:200]}")
        if not url.raw_host:
            raise errors.DataLoss(f"refusing a token realm with no host: {realm[:200]}")
        query: list[tuple[str, str]] = (
            [("service", params["service"])] if "service" in params else []
        )
        query += [("scope", s) for s in params.get("scope", "").split()]
        what = "token request"

        async def attempt() -> tuple[int, object]:
            target = url if form is not None else url.update_query(query)
            hops = 0
            while True:
                headers = (
                    {"Authorization": authorization}
                    if authorization and target.origin() == url.origin()
                    else {}
                )
                response = await self.send(
                    "POST" if form is not None else "GET",
                    target,
                    reach,
                    what,
                    headers=headers,
                    data=dict(form) if form is not None else None,
                )
                async with response:
                    if response.status in REDIRECTS and "Location" in response.headers:
                        location = response.headers["Location"]
                        if form is not None:
                            raise errors.PermissionDenied(
                                f"the registry's token service answered {response.status}"
                                f" (to {location[:200]}) to a refresh-token request; a request"
                                " carrying a refresh token is never redirected",
                                metadata={"status": str(response.status)},
                            )
                        hops += 1
                        target = self.redirect_target(target, location, hops, what)
                        continue
                    if response.status >= 500 or response.status == 429:
                        raise await fail_for(response, what)
                    try:
                        body = await read_limited(
                            response, MAX_TOKEN_RESPONSE, "token answer", self.speed_floor
                        )
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        raise connection_failure(exc, what) from None
                try:
                    return response.status, json.loads(body) if body else None
                except ValueError:
                    return response.status, None

        return await self.with_retries(attempt, None)


def _about(error: errors.ImageStoreError, what: str) -> errors.ImageStoreError:
    """A copy of ``error`` with ``what`` (the request's subject) in front of its
    message (a copy: the resolver's refusal may be shared by waiting lookups)."""
    named = copy.copy(error)
    named.message = f"{what}: {error.message}"
    named.args = (named.message,)
    return named


def _pick_challenge(response: aiohttp.ClientResponse) -> Challenge | None:
    """Bearer if offered, else Basic."""
    challenges = [
        c
        for header in response.headers.getall("WWW-Authenticate", [])
        for c in parse_challenges(header)
    ]
    for scheme in ("bearer", "basic"):
        for challenge in challenges:
            if challenge.scheme == scheme:
                return challenge
    return None
