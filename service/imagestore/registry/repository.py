"""One repository at one registry endpoint, and the way a request to it is made.

:meth:`Repository.request` is what every content operation (``registry/content.py``)
calls: it adds credentials only for the registry's own origin (Basic, or a
Bearer token for the repository's scopes), sends through the transport
(``registry/transport.py``), follows redirects by hand and answers a 401
challenge once, with a fresh token. The caller reads and releases the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from imagestore import errors
from imagestore.addresses import AddressClass
from imagestore.dockerconfig import Credentials
from imagestore.registry.auth import (
    Challenge,
    TokenCache,
    TokenFetcher,
    basic_header,
    pick_challenge,
)
from imagestore.registry.transport import REDIRECTS, Transport


@dataclass
class Host:
    """What we learned about one registry endpoint at its ping: its base URL,
    auth challenge and address class (how internal the addresses it may send us
    to may be)."""

    base_url: URL
    challenge: Challenge | None = None
    reach: AddressClass = AddressClass.PUBLIC
    #: the registry's own name led inward since the ping: its class is found
    #: afresh at the next ping, rather than refused until a restart
    refused: bool = False


@dataclass
class Repository:
    """One repository at one endpoint, with the credentials and scope to use."""

    transport: Transport
    tokens: TokenCache
    domain: str  # the reference's domain ("docker.io")
    host: Host  # the endpoint actually contacted
    path: str  # "library/redis"
    credentials: Credentials
    actions: str  # "pull" or "pull,push"
    extra_scopes: list[str] = field(default_factory=list)
    _fetch_token: TokenFetcher = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._fetch_token = TokenFetcher(self.transport, self.host.reach)

    @property
    def base_url(self) -> URL:
        return self.host.base_url

    @property
    def origin(self) -> str:
        return str(self.base_url.origin())

    def url(self, suffix: str) -> URL:
        """``/v2/<path>/<suffix>`` at this endpoint."""
        return URL(f"{self.origin}/v2/{self.path}/{suffix}", encoded=False)

    @property
    def scopes(self) -> tuple[str, ...]:
        return (f"repository:{self.path}:{self.actions}", *self.extra_scopes)

    async def request(
        self,
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
        own_origin = self.base_url.origin()
        hops = 0
        reauthorized = False
        while True:
            sent = dict(headers or {})
            if url.origin() == own_origin:
                # after a 401 the cached token is suspect: ask for a fresh one
                authorization = await self._authorization(reauthorized, scope)
                if authorization:
                    sent["Authorization"] = authorization
            try:
                response = await self.transport.send(
                    method,
                    url,
                    self.host.reach,
                    what,
                    headers=sent,
                    data=body() if body is not None else None,
                )
            except errors.AddressRefused:
                if url.origin() == own_origin:
                    self.host.refused = True
                raise
            if response.status in REDIRECTS and "Location" in response.headers:
                location = response.headers["Location"]
                response.release()
                hops += 1
                url = self.transport.redirect_target(url, location, hops, what)
                continue
            if response.status == 401 and not reauthorized and url.origin() == own_origin:
                challenge = pick_challenge(response)
                response.release()
                if challenge is None:
                    raise errors.RegistryUnauthorized(
                        f"{what}: unauthorized, and no challenge given",
                        metadata={"status": str(response.status)},
                    )
                self._learn(challenge)
                reauthorized = True
                continue
            return response

    def _learn(self, challenge: Challenge) -> None:
        """Answer the registry's challenge from now on, with the scopes it names."""
        self.host.challenge = challenge
        scope = challenge.params.get("scope", "")
        for extra in scope.split():
            if extra not in self.scopes:
                self.extra_scopes.append(extra)

    async def _authorization(self, fresh: bool, scope: str | None) -> str | None:
        """The ``Authorization`` value the host's challenge asks for, if any;
        ``fresh`` fetches a new token even when one is cached."""
        challenge = self.host.challenge
        credentials = self.credentials
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return basic_header(credentials) if credentials.username else None
        if challenge.scheme == "bearer":
            scopes = (*self.scopes, scope) if scope else self.scopes
            token = await self.tokens.token(
                challenge, " ".join(scopes), credentials, self._fetch_token, fresh=fresh
            )
            return f"Bearer {token}"
        return None
