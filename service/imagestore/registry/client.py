"""The registry client: the one entry point to registries for the whole server.

:class:`RegistryClient` finds where a reference's registry is (mirrors, then
the registry), pings each endpoint once (scheme, auth challenge and address
class) and hands out :class:`Repository` handles, with the credentials each
may use; content operations (``registry/content.py``) take a handle. One pull's
blob request, top to bottom::

    content.open_blob(repo, digest)
      Repository.request     auth for the registry's own origin, redirects, one 401
                             answered (registry/repository.py, registry/auth.py)
      Transport.send         SSRF guard, proxy, TLS context, the session of the
                             registry's address class (registry/transport.py,
                             guard.py, proxies.py, trust.py)

with the retries, deadline and speed floor of ``registry/transport.py`` around
it and the registry's download slots (``registry/slots.py``) held per try.

Registries are named by callers, so nothing here grows with the names it is
given: bodies are read up to a cap (``registry/responses.py``), and the state
kept per host (ping results here, TLS contexts in ``trust.py``, tokens in
``auth.py``) lives in bounded LRU caches.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from yarl import URL

from imagestore import errors
from imagestore.dockerconfig import ANONYMOUS, Credentials, DockerConfig
from imagestore.oci.references import DEFAULT_DOMAIN, Reference
from imagestore.registry.auth import TokenCache, TokenFetcher, pick_challenge
from imagestore.registry.blocking import in_thread
from imagestore.registry.lru import LRU
from imagestore.registry.options import RegistryOptions
from imagestore.registry.repository import Host, Repository
from imagestore.registry.responses import fail_for, glance, registry_error
from imagestore.registry.retry import DOCKER_HUB_HOST, Retryable
from imagestore.registry.slots import HostSlots
from imagestore.registry.transport import REDIRECTS, OnRetry, Transport
from imagestore.registry.trust import Trust
from imagestore.telemetry import Telemetry

#: the ping's body ("{}") is read up to this, so the connection can be reused; a
#: longer one is not read at all: the connection is closed instead
MAX_PING_BODY = 64 << 10
#: registries whose ping result (scheme and auth challenge) is remembered
HOST_CACHE_SIZE = 256


class RegistryClient:
    """Registry access for the whole server; :meth:`close` at shutdown."""

    def __init__(
        self,
        options: RegistryOptions,
        environ: Mapping[str, str] | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.options = options
        self.server_credentials = (
            DockerConfig(options.config_file) if options.config_file is not None else None
        )
        self.trust = Trust(options)
        self.transport = Transport(
            options, self.trust, os.environ if environ is None else environ, telemetry
        )
        self.tokens = TokenCache()
        self._hosts: LRU[str, Host] = LRU(HOST_CACHE_SIZE)
        #: one ping at a time per endpoint (the others wait for its answer)
        self._pings = HostSlots(1)
        #: per registry (its origin): a slow registry fills only its own slots
        self.downloads = HostSlots(options.max_concurrent_downloads)
        self.small_downloads = HostSlots(options.max_concurrent_small_downloads)
        self.uploads = HostSlots(options.max_concurrent_uploads)

    async def close(self) -> None:
        """Close the connections to every registry."""
        await self.transport.close()

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
        on_retry: OnRetry | None = None,
    ) -> Repository:
        """A repository handle at ``endpoint``, after the ``/v2/`` ping (scheme
        and auth discovery).

        Request credentials go only to the reference's own registry; a mirror
        gets the server-side credentials configured for the mirror's host, or
        none. Server-side credentials apply only to the registries the config
        file names. ``on_retry`` hears of each retry of the ping (a registry that
        refuses connections: "Retrying in N seconds")."""
        host = await self._host(endpoint, on_retry)
        is_mirror = reference.domain == DEFAULT_DOMAIN and not endpoint.endswith(DOCKER_HUB_HOST)
        if is_mirror:
            chosen = await self._server_credentials(host.base_url.raw_authority)
        else:
            chosen = credentials or await self._server_credentials(reference.domain)
        return Repository(
            self.transport,
            self.tokens,
            reference.domain,
            host,
            reference.path,
            chosen,
            "pull,push" if push else "pull",
        )

    async def _server_credentials(self, registry: str) -> Credentials:
        if self.server_credentials is None:
            return ANONYMOUS
        # a credential helper is a subprocess: it runs on a transfer thread
        return await in_thread(self.server_credentials.lookup, registry)

    async def login(self, domain: str, credentials: Credentials) -> None:
        """Check credentials the way the registry will judge them: Basic on
        ``/v2/``, or a token for them from the Bearer realm (``docker login``)."""
        endpoint = self.endpoints(domain, for_push=True)[0]
        host = await self._host(endpoint)
        challenge = host.challenge
        if challenge is None:
            return  # an open registry takes anyone
        if challenge.scheme == "bearer":
            fetch = TokenFetcher(self.transport, host.reach)
            await self.tokens.token(challenge, "", credentials, fetch, fresh=True)
            return
        what = f"login to {domain}"
        # Basic: /v2/ itself
        repo = Repository(self.transport, self.tokens, domain, host, "", credentials, "pull")

        async def attempt() -> None:
            async with await repo.request("GET", host.base_url / "v2/", what=what) as answer:
                if answer.status in (401, 403):
                    raise errors.RegistryUnauthorized(
                        f"{what}: unauthorized: incorrect username or password",
                        metadata={"status": str(answer.status)},
                    )
                if answer.status != 200:
                    raise await fail_for(answer, what)

        await self.transport.with_retries(attempt, None)

    async def _host(self, endpoint: str, on_retry: OnRetry | None = None) -> Host:
        async with self._pings.hold(endpoint):
            host = self._hosts.get(endpoint)
            if host is None or host.refused:
                host = await self.transport.with_retries(lambda: self._ping(endpoint), on_retry)
                # refused hosts are dropped first: they hold no place another host needs
                self._hosts.discard_if(lambda known: known.refused)
                self._hosts.put(endpoint, host)
            return host

    async def _ping(self, endpoint: str) -> Host:
        """``GET /v2/``: HTTPS first; plain HTTP only where allowed. The registry's
        address class is found here, from its host as named."""
        if "://" in endpoint:
            candidates = [URL(endpoint)]
        else:
            candidates = [URL(f"https://{endpoint}")]
            if self.trust.plain_http_allowed(endpoint):
                candidates.append(URL(f"http://{endpoint}"))
        transport = self.transport
        direct = transport.proxies.for_url(candidates[0]) is None
        reach = await transport.guard.registry_class(candidates[0].raw_host or "", direct=direct)
        what = f"cannot reach registry {endpoint}"
        last: Retryable | None = None
        for base in candidates:
            try:
                response = await transport.send("GET", base / "v2/", reach, what)
            except Retryable as exc:
                last = exc
                continue
            async with response:
                # the body ("{}") says nothing; read a short one to reuse the connection
                await glance(response, MAX_PING_BODY)
                if response.status == 401:
                    return Host(base, pick_challenge(response), reach)
                if response.status in (200, 204) or response.status in REDIRECTS:
                    return Host(base, reach=reach)
                if response.status >= 500 or response.status == 429:
                    raise Retryable(registry_error(response.status, b"", f"ping {endpoint}"))
                raise errors.RegistryUnavailable(
                    f"{endpoint} does not speak the registry API (GET /v2/ gave {response.status})"
                )
        assert last is not None
        raise last
