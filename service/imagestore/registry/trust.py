"""Which registries are trusted how: plain HTTP, unverified TLS, and the TLS context for each.

Plain HTTP is allowed for loopback registries and the ``--insecure-registry``
hosts (host, host:port or CIDR), which also get unverified TLS (Docker's
meaning of the flag). A TLS context trusts the system CAs, ``--registry-ca``
and the host's ``certs.d/<host:port>/`` folder (``*.crt`` CAs, ``*.cert`` +
``*.key`` client pairs).

Registries are named by callers, so nothing here grows with the names it is
given: a context costs ~840 KiB, so hosts without their own certs.d folder share
one (two with the unverified kind), the others are kept in a small LRU, and
whether a host has a folder is looked up once per host (an LRU too).
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

from yarl import URL

from imagestore import errors
from imagestore.addresses import host_of, is_loopback
from imagestore.registry.lru import LRU
from imagestore.registry.options import RegistryOptions

#: per-host TLS contexts kept (~840 KiB each); only hosts with their own certs.d
#: folder get one, so the operator's folders bound them, this bounds the memory
TLS_CACHE_SIZE = 32
#: hosts whose certs.d lookup (folder or none) is remembered
CERTS_FOLDER_CACHE_SIZE = 256


class Trust:
    """The TLS and plain-HTTP policy of the registry options, with its contexts."""

    def __init__(self, options: RegistryOptions) -> None:
        self.options = options
        #: (verified) for hosts with no certs.d folder: the common case shares these
        self._shared: dict[bool, ssl.SSLContext] = {}
        self._contexts: LRU[tuple[str, bool], ssl.SSLContext] = LRU(TLS_CACHE_SIZE)
        # whether a host has a certs.d folder, looked up once (not on every request)
        self._certs_folders: LRU[str, tuple[Path | None]] = LRU(CERTS_FOLDER_CACHE_SIZE)

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
        """Loopback registries and --insecure-registry hosts may use plain HTTP."""
        return is_loopback(host_of(hostport)) or self.is_insecure(hostport)

    def ssl_for(self, url: URL) -> ssl.SSLContext | bool:
        """The ``ssl=`` argument of a request to ``url`` (False: plain HTTP)."""
        if url.scheme != "https":
            return False
        return self.ssl_context(url.raw_authority)

    def ssl_context(self, hostport: str) -> ssl.SSLContext:
        """System CAs plus --registry-ca and ``certs.d/<host>/``; unverified for
        --insecure-registry hosts. Shared unless the host has a certs.d folder."""
        insecure = self.is_insecure(hostport)
        folder = self._certs_folder(hostport)
        if folder is None:
            shared = self._shared.get(insecure)
            if shared is None:
                shared = self._shared[insecure] = self._new_context(None, insecure)
            return shared
        key = (hostport, insecure)
        context = self._contexts.get(key)
        if context is None:
            context = self._new_context(folder, insecure)
            self._contexts.put(key, context)
        return context

    def _new_context(self, folder: Path | None, insecure: bool) -> ssl.SSLContext:
        context = ssl.create_default_context()
        for ca in self.options.ca_files:
            context.load_verify_locations(cafile=str(ca))
        if folder is not None:
            for ca in sorted(folder.glob("*.crt")):
                context.load_verify_locations(cafile=str(ca))
            for cert in sorted(folder.glob("*.cert")):
                key_file = cert.with_suffix(".key")
                if not key_file.is_file():
                    raise errors.RegistryCertsInvalid(
                        f"{cert} has no matching {key_file.name}", metadata={"path": str(cert)}
                    )
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
