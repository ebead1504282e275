"""Host names and addresses: which are this machine, which are local-only."""

from __future__ import annotations

import ipaddress


def host_of(hostport: str) -> str:
    """``host`` of ``host:port``, ``[v6]:port`` or a bare host."""
    if hostport.startswith("["):
        return hostport[1 : hostport.index("]")]
    return hostport.rsplit(":", 1)[0] if hostport.count(":") == 1 else hostport


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address: reachable only from this machine."""
    if host == "localhost":
        return True
    return is_ip(host) and ipaddress.ip_address(host).is_loopback


def is_local(host: str) -> bool:
    """Loopback or link-local (``*.localhost`` too): never a place a remote
    registry may send us."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    return is_ip(host) and (
        ipaddress.ip_address(host).is_loopback or ipaddress.ip_address(host).is_link_local
    )
