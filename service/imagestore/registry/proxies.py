"""Proxy settings, read explicitly from the environment.

aiohttp's ``trust_env=True`` would read these too, but also ``~/.netrc``, and
it attaches netrc credentials to whatever host a redirect names. So the
session does not trust the environment; this module reads what curl and
urllib read and the client passes ``proxy=`` per request:
``<scheme>_proxy`` (``http``, ``https``; lower case wins over upper case),
``all_proxy`` for a scheme without its own, ``no_proxy`` (``*``, names and
their subdomains, ``host:port``, and CIDR networks, as Go reads it).
Only ``http://`` proxies are supported (as before); others are ignored with a
warning at start-up.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from yarl import URL

from imagestore.addresses import parse_address

log = logging.getLogger("imagestore.registry")


@dataclass(frozen=True, slots=True)
class Proxy:
    """Where to send a request instead, and the proxy's own credentials (a
    ``Proxy-Authorization`` value, from the proxy URL's user and password)."""

    url: URL
    authorization: str | None


def _variables(environ: Mapping[str, str]) -> dict[str, str]:
    """``<scheme>_proxy`` values by scheme; a lower-case name wins (urllib's rule)."""
    found: dict[str, str] = {}
    for lower_case_only in (False, True):
        for name, value in environ.items():
            if not name.lower().endswith("_proxy") or (lower_case_only and name != name.lower()):
                continue
            scheme = name.lower().removesuffix("_proxy")
            if value.strip():
                found[scheme] = value.strip()
            elif lower_case_only:
                found.pop(scheme, None)
    return found


def _proxy(value: str, scheme: str) -> Proxy | None:
    url = URL(value if "://" in value else f"http://{value}")
    if url.scheme != "http" or not url.host:
        log.warning("ignoring %s_proxy: only http:// proxies are supported", scheme)
        return None
    authorization = None
    if url.user is not None:
        pair = f"{url.user}:{url.password or ''}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode()
    return Proxy(url.with_user(None), authorization)


class Proxies:
    """The proxy for each registry URL, from one reading of the environment."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        variables = _variables(environ)
        self.no_proxy = [
            entry.strip().lower() for entry in variables.pop("no", "").split(",") if entry.strip()
        ]
        fallback = variables.get("all")
        self.by_scheme: dict[str, Proxy] = {}
        for scheme in ("http", "https"):
            value = variables.get(scheme, fallback)
            proxy = _proxy(value, scheme) if value else None
            if proxy is not None:
                self.by_scheme[scheme] = proxy

    def for_url(self, url: URL) -> Proxy | None:
        """The proxy to use for ``url``, or None to connect directly."""
        proxy = self.by_scheme.get(url.scheme)
        if proxy is None or self.bypassed(url):
            return None
        return proxy

    def bypassed(self, url: URL) -> bool:
        """Whether ``no_proxy`` names this URL's host."""
        host = (url.raw_host or "").lower().rstrip(".")
        hostport = f"{host}:{url.port}"
        address = parse_address(host)
        for entry in self.no_proxy:
            if entry == "*":
                return True
            if "/" in entry:
                if address is not None and _in_network(address, entry):
                    return True
                continue
            name = entry.lstrip("*").lstrip(".").strip("[]")
            if name in (host, hostport) or host.endswith(f".{name}"):
                return True
        return False


def _in_network(address: ipaddress.IPv4Address | ipaddress.IPv6Address, cidr: str) -> bool:
    try:
        return address in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False
