"""What the server is told about registries (``imagestore serve`` flags)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DOCKER_CERTS_DIR = Path("/etc/docker/certs.d")


@dataclass(frozen=True)
class RegistryOptions:
    """Registry access policy and tuning; times are seconds (tests use milliseconds)."""

    #: hosts (``host[:port]``) or networks (CIDR) that may use plain HTTP or unverified TLS
    insecure_registries: tuple[str, ...] = ()
    #: extra CA bundles trusted for every registry
    ca_files: tuple[Path, ...] = ()
    #: Docker's ``certs.d`` convention: ``<dir>/<host[:port]>/{*.crt, *.cert, *.key}``
    certs_dir: Path | None = DOCKER_CERTS_DIR
    #: mirrors tried before Docker Hub, for docker.io images only (base URLs)
    mirrors: tuple[str, ...] = ()
    #: server-side credentials (Docker config format); none unless configured
    config_file: Path | None = None
    max_concurrent_downloads: int = 3
    max_concurrent_uploads: int = 5
    #: tries per request, the first included (Docker: 5 download attempts)
    attempts: int = 5
    #: first retry delay; each further one doubles
    backoff: float = 1.0
    connect_timeout: float = 30.0
    #: longest silence while reading a response before the try counts as failed
    idle_timeout: float = 60.0
    max_redirects: int = 10
