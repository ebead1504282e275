"""Host names and addresses: which are this machine, and how internal an address is.

Addresses are ranked by :class:`AddressClass`, from public to loopback. The
registry client's SSRF guard (``registry/guard.py``) uses the rank: a registry
may not send imagestore to an address more internal than its own. Encodings
that hide an address are undone before it is ranked: IPv4-mapped,
IPv4-compatible and IPv4-translated IPv6 (``::ffff:127.0.0.1``), NAT64
(``64:ff9b::/96``, ``64:ff9b:1::/48``), 6to4 (``2002::/16``) and Teredo
(``2001::/32``) embed an IPv4 address, which counts as much as the IPv6 one;
``2130706433``, ``0x7f.1`` and ``0177.0.0.1`` are the IPv4 forms that
``inet_aton`` (and so many resolvers) accept.
"""

from __future__ import annotations

import ipaddress
from enum import IntEnum

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressClass(IntEnum):
    """How internal an address is; a larger value is more internal."""

    PUBLIC = 0
    #: RFC 1918, CGNAT (100.64/10), ULA (fc00::/7) and other site-local ranges
    PRIVATE = 1
    #: link-local (169.254/16, fe80::/10) and cloud metadata endpoints
    LINK_LOCAL = 2
    #: this machine: loopback, unspecified (0.0.0.0, ::), and multicast or reserved
    #: ranges, which are never a registry's business either
    LOOPBACK = 3

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


def _networks(*cidrs: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


#: cloud metadata services: AWS, GCP, Azure, OpenStack, Oracle (169.254.169.254),
#: AWS over IPv6 (fd00:ec2::254), Alibaba (100.100.100.200), Azure's wireserver
METADATA = _networks("169.254.169.254/32", "fd00:ec2::254/128", "100.100.100.200/32")
METADATA += _networks("168.63.129.16/32")
_RANKS: tuple[tuple[AddressClass, tuple[Network, ...]], ...] = (
    (
        AddressClass.LOOPBACK,
        _networks(
            "127.0.0.0/8",
            "0.0.0.0/8",  # "this network": 0.0.0.0 reaches this machine
            "224.0.0.0/4",  # multicast
            "240.0.0.0/4",  # reserved, and the broadcast address
            "::1/128",
            "::/128",
            "ff00::/8",
        ),
    ),
    (AddressClass.LINK_LOCAL, _networks("169.254.0.0/16", "fe80::/10") + METADATA),
    (
        AddressClass.PRIVATE,
        _networks(
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",  # carrier-grade NAT
            "192.0.0.0/24",  # IETF protocol assignments
            "198.18.0.0/15",  # benchmarking
            "fc00::/7",  # unique local
            "fec0::/10",  # site-local (deprecated, still routed inside sites)
        ),
    ),
)
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")
_COMPATIBLE = ipaddress.ip_network("::/96")


def host_of(hostport: str) -> str:
    """``host`` of ``host:port``, ``[v6]:port`` or a bare host."""
    if hostport.startswith("["):
        return hostport[1 : hostport.index("]")]
    return hostport.rsplit(":", 1)[0] if hostport.count(":") == 1 else hostport


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address: reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_localhost_name(host: str) -> bool:
    """``localhost`` and ``*.localhost``: this machine by definition (RFC 6761)."""
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def parse_address(host: str) -> IPAddress | None:
    """The address a URL host stands for, or None for a name: IPv6 with or without
    brackets and zone, dotted IPv4, and the legacy IPv4 forms ``inet_aton`` takes."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError:
            return None
    return legacy_ipv4(text.removesuffix("."))


def legacy_ipv4(text: str) -> ipaddress.IPv4Address | None:
    """``a.b.c.d`` and the shorter and non-decimal forms of ``inet_aton``
    (``127.1``, ``2130706433``, ``0x7f.0.0.1``, ``0177.0.0.1``), or None."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        value = _number(part)
        if value is None:
            return None
        values.append(value)
    *leading, last = values
    if any(value > 0xFF for value in leading) or last >= 1 << (8 * (5 - len(values))):
        return None
    number = 0
    for value in leading:  # the leading parts are the first bytes; the last fills the rest
        number = number << 8 | value
    return ipaddress.IPv4Address(number << (8 * (5 - len(values))) | last)


def _number(part: str) -> int | None:
    lowered = part.lower()
    try:
        if lowered.startswith("0x"):
            return int(lowered[2:] or "0", 16)
        if len(lowered) > 1 and lowered.startswith("0"):
            return int(lowered, 8)
        return int(lowered, 10) if lowered.isdigit() else None
    except ValueError:
        return None


def is_canonical(host: str, address: IPAddress) -> bool:
    """Whether ``host`` spells ``address`` the usual way (dotted quad, or IPv6)."""
    text = host.strip("[]").split("%", 1)[0]
    return address.version == 6 or text == str(address)


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, compatible, translated,
    NAT64, 6to4, Teredo), which is where a packet to it may end up."""
    found: list[ipaddress.IPv4Address] = []
    value = int(address)
    low32 = ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    elif (
        address in _SIIT
        or address in _NAT64
        or (address in _COMPATIBLE and value > 1)  # "::" and "::1" are themselves
    ):
        found.append(low32)
    elif address in _NAT64_LOCAL:
        # RFC 6052 with a /48 prefix: bits 48-63 and 72-87 (bits 64-71 are zero)
        high = (value >> 64) & 0xFFFF
        rest = (value >> 40) & 0xFFFF
        found.append(ipaddress.IPv4Address(high << 16 | rest))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    return found


def address_class(address: IPAddress) -> AddressClass:
    """The rank of an address, counting any IPv4 address it embeds."""
    candidates: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        candidates.extend(embedded_ipv4(address))
    return max(_rank(candidate) for candidate in candidates)


def _rank(address: IPAddress) -> AddressClass:
    for rank, networks in _RANKS:
        if any(address in network for network in networks):
            return rank
    return AddressClass.PUBLIC


def normalized(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address as its IPv4 address; others unchanged."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
