"""Registry authentication: ``WWW-Authenticate`` challenges, Basic, and Bearer tokens.

A Bearer token is fetched from the challenge's realm for one scope
(``repository:<path>:pull[,push]``), with Basic credentials when there are
any, and cached by realm, service, scope and credential until shortly before
it expires (60 s when the server does not say). The cache is an LRU of
TOKEN_CACHE_SIZE tokens, and keeps none longer than MAX_CACHED_TOKEN bytes.

The realm is a URL the registry handed us, so a token request is sent like
any other (:class:`TokenFetcher`, through the transport's guard); it follows
redirects by hand, except one carrying a refresh token, which is never
redirected.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from yarl import URL

from imagestore import errors, jsonparse
from imagestore.addresses import AddressClass
from imagestore.dockerconfig import Credentials
from imagestore.registry.lru import LRU
from imagestore.registry.responses import fail_for, read_limited
from imagestore.registry.retry import connection_failure
from imagestore.registry.transport import REDIRECTS, Transport

#: a token answer larger than this is refused (containers/image uses 1 MiB)
MAX_TOKEN_RESPONSE = 1 << 20
DEFAULT_TOKEN_LIFETIME = 60.0
#: tokens kept: one per registry, repository, action set and credential in recent use
TOKEN_CACHE_SIZE = 512
#: a longer token is used once and not kept (real ones are JWTs of 1-4 KiB), so the
#: cache holds at most TOKEN_CACHE_SIZE x 16 KiB = 8 MiB
MAX_CACHED_TOKEN = 16 << 10
_EXPIRY_MARGIN = 5.0
_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


@dataclass(frozen=True, slots=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: scheme (lowercase) and parameters."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)


def parse_challenges(header: str) -> list[Challenge]:
    """``Bearer realm="…",service="…"`` (RFC 7235; several challenges may follow)."""
    challenges: list[Challenge] = []
    rest = header.strip()
    while rest:
        scheme_match = re.match(r"([A-Za-z][A-Za-z0-9_-]*)\s*", rest)
        if scheme_match is None:
            break
        scheme, rest = scheme_match.group(1).lower(), rest[scheme_match.end() :]
        params: dict[str, str] = {}
        while (param := _PARAM.match(rest)) and param.group(0).strip():
            # a bare word followed by space, not "=", is the next scheme
            params[param.group(1).lower()] = (
                re.sub(r"\\(.)", r"\1", param.group(2))
                if param.group(2) is not None
                else param.group(3)
            )
            rest = rest[param.end() :]
        challenges.append(Challenge(scheme, params))
        rest = rest.lstrip(", ")
    return challenges


def pick_challenge(response: aiohttp.ClientResponse) -> Challenge | None:
    """The challenge of a 401 answer to answer: Bearer if offered, else Basic."""
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


def basic_header(credentials: Credentials) -> str:
    """The ``Authorization`` value of HTTP Basic for ``credentials``."""
    pair = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: float


class FetchToken(Protocol):
    """GET ``realm?params`` with an Authorization header (or none), or POST a
    form (OAuth2); answers (status, JSON body)."""

    def __call__(
        self,
        realm: str,
        params: Mapping[str, str],
        authorization: str | None,
        form: Mapping[str, str] | None = None,
    ) -> Awaitable[tuple[int, object]]: ...


class TokenCache:
    """Bearer tokens, keyed by realm, service, scope and credential."""

    def __init__(self, size: int = TOKEN_CACHE_SIZE) -> None:
        self._tokens: LRU[tuple[str, str, str, str], _Token] = LRU(size)

    def __len__(self) -> int:
        return len(self._tokens)

    async def token(
        self,
        challenge: Challenge,
        scope: str,
        credentials: Credentials,
        fetch: FetchToken,
        *,
        fresh: bool = False,
    ) -> str:
        """A token for ``scope``; ``fresh`` asks the token service even when one
        is cached (a login check must reach it)."""
        if credentials.registry_token:
            return credentials.registry_token
        realm = challenge.params.get("realm", "")
        if not realm:
            raise errors.RegistryResponseInvalid("the registry's Bearer challenge names no realm")
        service = challenge.params.get("service", "")
        key = (realm, service, scope, credentials.cache_key)
        cached = self._tokens.get(key)
        if cached is not None and cached.expires_at > time.monotonic() and not fresh:
            return cached.value
        params = {"scope": scope} if scope else {}
        if service:
            params["service"] = service
        if credentials.identity_token:  # an OAuth2 refresh token from `docker login`
            form = {
                "grant_type": "refresh_token",
                "refresh_token": credentials.identity_token,
                "client_id": "imagestore",
                **params,
            }
            status, body = await fetch(realm, params, None, form)
        else:
            authorization = basic_header(credentials) if credentials.username else None
            status, body = await fetch(realm, params, authorization)
        if status in (401, 403):
            raise errors.RegistryUnauthorized(
                "the registry's token service refused the credentials"
                if credentials
                else "the registry's token service requires credentials",
                metadata={"status": str(status)},
            )
        if status != 200 or not isinstance(body, dict):
            raise errors.RegistryUnavailable(
                f"the registry's token service answered {status}", metadata={"status": str(status)}
            )
        value = body.get("token") or body.get("access_token")
        if not isinstance(value, str) or not value:
            raise errors.RegistryResponseInvalid("the registry's token service returned no token")
        lifetime = body.get("expires_in")
        seconds = (
            float(lifetime)
            if isinstance(lifetime, int | float) and lifetime > 0
            else DEFAULT_TOKEN_LIFETIME
        )
        now = time.monotonic()
        self._tokens.discard_if(lambda token: token.expires_at <= now)
        if len(value) <= MAX_CACHED_TOKEN:
            self._tokens.put(key, _Token(value, now + max(seconds - _EXPIRY_MARGIN, 1.0)))
        return value


class TokenFetcher:
    """The :class:`FetchToken` of a registry of address class ``reach``: its token
    requests go through ``transport`` (the realm is a URL the registry handed
    us: the guard applies), with the transport's retries."""

    def __init__(self, transport: Transport, reach: AddressClass) -> None:
        self.transport = transport
        self.reach = reach

    async def __call__(
        self,
        realm: str,
        params: Mapping[str, str],
        authorization: str | None,
        form: Mapping[str, str] | None = None,
    ) -> tuple[int, object]:
        """GET the realm (Basic or anonymous), or POST ``form`` (OAuth2).

        A GET follows redirects by hand like any request, its Authorization kept
        only for the realm's own origin; a POST carries a refresh token and is
        never redirected (a 307 would re-send the token to wherever it points)."""
        transport = self.transport
        try:
            url = URL(realm)
        except ValueError:
            url = URL()
        if url.scheme != "https" and not (
            url.scheme == "http" and transport.trust.plain_http_allowed(url.raw_authority)
        ):
            raise errors.RegistryResponseInvalid(
                f"refusing a token realm that is not https: {realm[:200]}"
            )
        if not url.raw_host:
            raise errors.RegistryResponseInvalid(
                f"refusing a token realm with no host: {realm[:200]}"
            )
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
                response = await transport.send(
                    "POST" if form is not None else "GET",
                    target,
                    self.reach,
                    what,
                    headers=headers,
                    data=dict(form) if form is not None else None,
                )
                async with response:
                    if response.status in REDIRECTS and "Location" in response.headers:
                        location = response.headers["Location"]
                        if form is not None:
                            raise errors.TokenRedirectRefused(
                                f"the registry's token service answered {response.status}"
                                f" (to {location[:200]}) to a refresh-token request; a request"
                                " carrying a refresh token is never redirected",
                                metadata={"status": str(response.status)},
                            )
                        hops += 1
                        target = transport.redirect_target(target, location, hops, what)
                        continue
                    if response.status >= 500 or response.status == 429:
                        raise await fail_for(response, what)
                    try:
                        body = await read_limited(
                            response, MAX_TOKEN_RESPONSE, "token answer", transport.speed_floor
                        )
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        raise connection_failure(exc, what) from None
                try:
                    return response.status, jsonparse.loads(body) if body else None
                except ValueError:
                    return response.status, None

        return await transport.with_retries(attempt, None)
