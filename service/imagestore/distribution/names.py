"""Repository paths of the endpoint and the store's canonical names, both ways.

The store keeps names canonical (``docker.io/library/redis:7``); the endpoint
serves one tree of repositories, so every registry's names need a path in it:

- a path whose first component is not a host is on Docker Hub, as Docker reads
  it: ``library/redis`` and ``redis`` are ``docker.io/library/redis``,
  ``foo/bar`` is ``docker.io/foo/bar``;
- a first component that holds a ``.``, or is ``localhost``, is a registry
  host: ``quay.io/org/app`` is ``quay.io/org/app``, and ``docker.io/…`` is
  Docker Hub again;
- ``host:port`` is not a valid path component, so a port is written after an
  ``_``: ``127.0.0.1_5000/demo/app`` is ``127.0.0.1:5000/demo/app``,
  ``localhost_5000/x`` is ``localhost:5000/x``. This cannot be mistaken for
  another name: a host name holds no ``_``, and neither does a Docker Hub
  namespace;
- with ``ns=<host>`` (what containerd sends a mirror) the whole path is a
  repository of that registry: ``library/redis?ns=docker.io``,
  ``demo/app?ns=127.0.0.1:5000``.

The reverse, :func:`path_of`, gives each canonical repository the shortest
path that reads back as it (the Hub's short form unless its first component
would be taken for a host, then ``docker.io/…``), so the two round-trip; names
of IPv6 registries (``[::1]:5000/…``) have no path and are not served.
"""

from __future__ import annotations

import re

from imagestore import errors
from imagestore.distribution.errors import Code, RegistryError
from imagestore.oci.digests import parse_digest
from imagestore.oci.references import DEFAULT_DOMAIN, TAG, normalize_domain, parse_reference

#: a registry host and port as a path component: ``127.0.0.1_5000``
_HOST_PORT = re.compile(r"(?P<host>.+)_(?P<port>[0-9]{1,5})")
#: the aliases of Docker Hub a path may start with
_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
#: longest path accepted (a repository name is at most 255 characters, its
#: host and port come on top)
MAX_PATH = 512


def _invalid(path: str, why: str) -> errors.ReferenceInvalid:
    return errors.ReferenceInvalid(
        f"invalid repository name {path[:300]!r}: {why}", metadata={"reference": path[:300]}
    )


def _host_of(component: str) -> str | None:
    """The registry a first path component names, or None (a Hub namespace)."""
    match = _HOST_PORT.fullmatch(component)
    host, port = (match["host"], match["port"]) if match else (component, None)
    if host != "localhost" and "." not in host:
        return None
    return f"{host}:{port}" if port is not None else host


def repository(path: str, ns: str | None = None) -> str:
    """The canonical repository a path names (``ReferenceInvalid`` when it names none)."""
    if not path or len(path) > MAX_PATH:
        raise _invalid(path, f"want 1 to {MAX_PATH} characters")
    if ns:
        try:
            domain = normalize_domain(ns)
        except errors.InvalidArgument:
            raise _invalid(path, f"invalid ns registry {ns[:100]!r}") from None
        rest = path
    else:
        first, slash, remainder = path.partition("/")
        host = _host_of(first) if slash else None
        domain, rest = (host, remainder) if host is not None else (DEFAULT_DOMAIN, path)
    if domain in _HUB_HOSTS:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in rest:
        rest = "library/" + rest
    try:
        parsed = parse_reference(f"{domain}/{rest}", default_tag=False)
    except errors.InvalidArgument:
        raise _invalid(path, "not a repository path") from None
    if parsed.tag is not None or parsed.digest is not None or parsed.domain != domain:
        raise _invalid(path, "not a repository path")
    return parsed.name


def path_of(canonical: str) -> str | None:
    """The path that names a canonical repository (None: an IPv6 registry's,
    which no path component can spell)."""
    domain, _, rest = canonical.partition("/")
    if domain == DEFAULT_DOMAIN:
        candidates = [rest, f"{DEFAULT_DOMAIN}/{rest}"]
    else:
        host, colon, port = domain.rpartition(":")
        component = f"{host}_{port}" if colon and port.isdigit() else domain
        candidates = [f"{component}/{rest}"]
    for path in candidates:
        try:
            if repository(path) == canonical:
                return path
        except errors.InvalidArgument:
            continue
    return None


def manifest_reference(text: str, invalid: Code) -> str:
    """The ``<reference>`` of a manifest path: a digest (parsed: DIGEST_INVALID
    when malformed) or a tag; anything else is ``invalid``."""
    if ":" in text:
        return parse_digest(text)
    if not TAG.fullmatch(text):
        raise RegistryError(invalid, f"invalid tag {text[:130]!r}")
    return text
