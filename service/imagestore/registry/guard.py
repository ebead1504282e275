"""Where a registry may send imagestore: the one SSRF guard.

A registry hands back URLs: redirects (3xx ``Location``), upload sessions
(201/202 ``Location``), its token realm, the token service's own redirects.
Every one of them is sent by :meth:`Transport.send` (registry/transport.py), which applies this
guard before any connection is made. The rule: a registry may not send
imagestore to an address more internal than its own (:class:`AddressClass`:
public → private/ULA/CGNAT → link-local/metadata → loopback/unspecified).

- **The registry's class** comes from its host as the caller named it, found
  once per endpoint: an address is its own class, ``localhost`` names are
  loopback, another name takes the most public class of the addresses it
  resolves to. A name that does not resolve, or one reached through a proxy,
  is public (the strictest).
- **Address hosts** in a URL are ranked directly, after normalisation (mapped,
  embedded and legacy numeric forms: see :mod:`imagestore.addresses`); a
  non-canonical numeric spelling is refused outright.
- **Names** are ranked as they resolve: each connection class has its own
  aiohttp connector whose :class:`GuardedResolver` drops every address more
  internal than the class allows, and the connection goes to the addresses it
  returned, and only those (no second lookup can swap them: DNS rebinding),
  with Host and SNI still the name. A pooled connection is reused only by
  requests of the same class. Nothing left, or a lookup that fails: no
  connection (a DNS failure never opens the door).
- ``--registry-allow-internal CIDR``: addresses inside count as public, for
  deliberate exceptions (a registry redirecting to storage on the LAN).
- **Through an HTTP(S) proxy** the proxy resolves names; address hosts are
  still ranked here.

A refusal is PERMISSION_DENIED with ErrorInfo reason ``ADDRESS_REFUSED`` and
metadata ``host``, ``address``, ``class`` and ``registry_class``.

**Test mode** (test-only): ``--registry-test-resolve NAME=ADDRESS[/CLASS]``
(hidden; ``IMAGESTORE_REGISTRY_TEST_RESOLVE``) answers lookups of NAME with
ADDRESS ranked as CLASS (default: the address's own), so a registry on
loopback can look remote (``registry.test=127.0.0.1/public``); a name given
several times answers successive lookups with its entries in turn (a
rebinding DNS server); ``NAME=`` does not resolve. ADDRESS must be loopback.
While test names are set, no other name is looked up (no DNS packet leaves)
and connections go to loopback addresses only: a guard that failed would
meet this fence, not another machine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from imagestore import errors
from imagestore.addresses import (
    AddressClass,
    IPAddress,
    Network,
    address_class,
    is_canonical,
    is_localhost_name,
    normalized,
    parse_address,
)

log = logging.getLogger("imagestore.registry")

_NUMERIC = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV


class RefusalError(OSError):
    """The resolver's refusal; aiohttp passes OSErrors from a resolver through
    (as the ``os_error`` of a ClientConnectorError), carrying the domain error."""

    def __init__(self, error: errors.AddressRefused) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True, slots=True)
class TestAnswer:
    """One test-mode answer: an address and the class it is ranked as."""

    address: IPAddress
    rank: AddressClass


def parse_test_hosts(entries: Sequence[str]) -> dict[str, list[TestAnswer | None]]:
    """``NAME=ADDRESS[/CLASS]`` entries (``NAME=``: does not resolve), by name."""
    hosts: dict[str, list[TestAnswer | None]] = {}
    for entry in entries:
        name, sep, answer = entry.strip().partition("=")
        name = name.lower().rstrip(".")
        if not sep or not name:
            raise errors.OptionInvalid(
                f"--registry-test-resolve wants NAME=ADDRESS: {entry!r}",
                metadata={"option": "registry-test-resolve"},
            )
        if not answer:
            hosts.setdefault(name, []).append(None)
            continue
        text, _, rank_name = answer.partition("/")
        address = parse_address(text)
        if address is None or not normalized(address).is_loopback:
            raise errors.OptionInvalid(
                f"--registry-test-resolve: {text!r} is not a loopback address (test names"
                " may only resolve to this machine)",
                metadata={"option": "registry-test-resolve"},
            )
        try:
            rank = (
                AddressClass[rank_name.upper().replace("-", "_")]
                if rank_name
                else address_class(address)
            )
        except KeyError:
            known = ", ".join(c.label for c in AddressClass)
            raise errors.OptionInvalid(
                f"--registry-test-resolve: unknown class {rank_name!r} (one of {known})",
                metadata={"option": "registry-test-resolve"},
            ) from None
        hosts.setdefault(name, []).append(TestAnswer(address, rank))
    return hosts


def _networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    try:
        return tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs)
    except ValueError as exc:
        raise errors.OptionInvalid(
            f"--registry-allow-internal: {exc}", metadata={"option": "registry-allow-internal"}
        ) from None


class AddressGuard:
    """The address policy of one server: exceptions, and the test-mode names."""

    def __init__(self, allow_internal: Sequence[str] = (), test_hosts: Sequence[str] = ()) -> None:
        self.allowed = _networks(allow_internal)
        self.test_hosts = parse_test_hosts(test_hosts)
        self._turns: Counter[str] = Counter()
        self._base: ThreadedResolver | None = None
        if self.test_mode:
            log.warning(
                "test mode: registry names resolve only through --registry-test-resolve,"
                " and connections go to loopback only"
            )

    @property
    def test_mode(self) -> bool:
        return bool(self.test_hosts)

    def classify(self, address: IPAddress) -> AddressClass:
        """The address's class; inside an --registry-allow-internal network, public."""
        plain = normalized(address)
        if any(plain in network or address in network for network in self.allowed):
            return AddressClass.PUBLIC
        return address_class(address)

    def refusal(
        self, host: str, address: IPAddress, rank: AddressClass, limit: AddressClass
    ) -> errors.AddressRefused | None:
        """Why a connection to ``address`` (ranked ``rank``) may not be made for a
        registry of class ``limit``, or None when it may."""
        metadata = {
            "host": host[:253],
            "address": str(address),
            "class": rank.label,
            "registry_class": limit.label,
        }
        if rank > limit:
            return errors.AddressRefused(
                f"refusing to connect to {host[:253]} ({address}, {rank.label}): the registry"
                f" is {limit.label}, and a registry may not send imagestore to a more internal"
                " address (--registry-allow-internal CIDR makes exceptions)",
                metadata=metadata,
            )
        if self.test_mode and not normalized(address).is_loopback:
            return errors.AddressRefused(
                f"refusing to connect to {host[:253]} ({address}): in test mode"
                " (--registry-test-resolve) connections go to loopback only",
                metadata={**metadata, "fence": "test mode"},
            )
        return None

    def check_url(self, url: URL, limit: AddressClass) -> None:
        """Refuse a URL whose host is an address more internal than ``limit`` (or a
        non-canonical spelling of one); names are checked as they resolve."""
        host = url.raw_host or ""
        address = parse_address(host)
        if address is None:
            if is_localhost_name(host) and limit < AddressClass.LOOPBACK:
                loopback = ipaddress.IPv4Address("127.0.0.1")
                refused = self.refusal(host, loopback, AddressClass.LOOPBACK, limit)
                assert refused is not None
                raise refused
            return
        refused = self.refusal(host, address, self.classify(address), limit)
        if refused is not None:
            raise refused
        if not is_canonical(host, address):
            raise errors.AddressRefused(
                f"refusing to connect to {host[:253]}: a non-canonical spelling of {address}",
                metadata={"host": host[:253], "address": str(address)},
            )

    async def lookup(
        self, host: str, port: int = 0, family: int = socket.AF_UNSPEC
    ) -> list[tuple[ResolveResult, AddressClass]]:
        """Resolve ``host`` once: each address with its class. Raises OSError when
        the name does not resolve."""
        if self.test_mode:
            return [self._test_answer(host, port)]
        if self._base is None:
            self._base = ThreadedResolver(asyncio.get_running_loop())
        found: list[tuple[ResolveResult, AddressClass]] = []
        for result in await self._base.resolve(host, port, socket.AddressFamily(family)):
            address = parse_address(result["host"])
            if address is not None:
                found.append((result, self.classify(address)))
        return found

    def _test_answer(self, host: str, port: int) -> tuple[ResolveResult, AddressClass]:
        name = host.lower().rstrip(".")
        answers = self.test_hosts.get(name)
        if answers is None and is_localhost_name(name):
            answers = [TestAnswer(ipaddress.IPv4Address("127.0.0.1"), AddressClass.LOOPBACK)]
        if answers is None:
            raise socket.gaierror(
                socket.EAI_NONAME, f"{host} does not resolve (test mode: only test names do)"
            )
        answer = answers[self._turns[name] % len(answers)]
        self._turns[name] += 1
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} does not resolve")
        family = socket.AF_INET6 if answer.address.version == 6 else socket.AF_INET
        result = ResolveResult(
            hostname=host,
            host=str(answer.address),
            port=port,
            family=family,
            proto=0,
            flags=_NUMERIC,
        )
        return result, answer.rank

    async def registry_class(self, host: str, *, direct: bool) -> AddressClass:
        """The class of a registry as named: see the module's docstring."""
        address = parse_address(host)
        if address is not None:
            return self.classify(address)
        if is_localhost_name(host):
            return AddressClass.LOOPBACK
        if not direct:
            return AddressClass.PUBLIC
        try:
            found = await self.lookup(host)
        except OSError:
            return AddressClass.PUBLIC  # the connection will fail and say so
        return min((rank for _, rank in found), default=AddressClass.PUBLIC)

    def screen(
        self,
        host: str,
        found: list[tuple[ResolveResult, AddressClass]],
        limit: AddressClass,
    ) -> list[ResolveResult]:
        """The resolved addresses a registry of class ``limit`` may be sent to;
        raises RefusalError when there are none."""
        kept: list[ResolveResult] = []
        first: errors.AddressRefused | None = None
        for result, rank in found:
            address = parse_address(result["host"])
            assert address is not None
            refused = self.refusal(host, address, rank, limit)
            if refused is None:
                kept.append(result)
            elif first is None:
                first = refused
        if not kept:
            if first is None:
                raise socket.gaierror(socket.EAI_NONAME, f"{host} has no usable address")
            raise RefusalError(first)
        return kept


class GuardedResolver(AbstractResolver):
    """The resolver of one connection class's connector: resolves once, drops the
    addresses the class may not reach, and the connection uses what is left."""

    def __init__(self, guard: AddressGuard, limit: AddressClass) -> None:
        self.guard = guard
        self.limit = limit

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return self.guard.screen(host, await self.guard.lookup(host, port, family), self.limit)

    async def close(self) -> None:
        return None
