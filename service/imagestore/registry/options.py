"""What the server is told about registries (``imagestore serve`` flags).

The limits here are the registry half of the hostile-input policy: no registry
can make a pull hold memory, connections or download slots without bound, and
one slow registry cannot hold up pulls from another. The defaults let real
content through with a wide margin (see each field).
"""

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
    #: networks (CIDR) whose addresses count as public for the SSRF guard: any
    #: registry may send us there (a registry redirecting to storage on the LAN)
    allow_internal: tuple[str, ...] = ()
    #: TEST ONLY: ``NAME=ADDRESS[/CLASS]`` answers for the guard's lookups, and no
    #: connection but to loopback (see registry/guard.py); empty in production
    test_resolve: tuple[str, ...] = ()
    #: layers downloading at once from one registry (Docker's default, 3); each
    #: registry has its own slots, so a slow one cannot starve the others
    max_concurrent_downloads: int = 3
    #: layers of at most 1 MiB (each read whole, then stored in one step) downloading
    #: at once from one registry, besides those slots: a registry's time per request,
    #: not its bandwidth, bounds an image of many small layers, so more of them wait
    #: on it at once; at most this many MiB of such bodies are held per registry
    max_concurrent_small_downloads: int = 16
    #: blobs uploading at once to one registry (Docker's default, 5)
    max_concurrent_uploads: int = 5
    #: tries per request, the first included (Docker: 5 download attempts)
    attempts: int = 5
    #: first retry delay; each further one doubles
    backoff: float = 1.0
    connect_timeout: float = 30.0
    #: longest silence while reading a response before the try counts as failed
    idle_timeout: float = 60.0
    max_redirects: int = 10
    #: slowest transfer accepted, in bytes/s averaged over ``speed_window``; a try
    #: below it fails like a stall and is retried (0: no floor). 1 KiB/s is far
    #: below any working link, and catches a registry that drips a byte now and then
    min_speed: int = 1 << 10
    #: the window the minimum speed is averaged over: ``min_speed x speed_window``
    #: bytes must arrive in every such window (30 s rides out a TCP retransmit storm)
    speed_window: float = 30.0
    #: longest one blob or manifest download may take, all tries and retry delays
    #: included (0: none). 2 h moves a 10 GiB layer at 12 Mbit/s
    blob_timeout: float = 7200.0
    #: entries an index may list (refused before any is fetched); real indexes list
    #: a few dozen platforms (and attestations), a 4 MiB index could list ~27,000
    max_index_children: int = 1000
    #: bytes of manifests, indexes and image configs one pull may fetch; a 20-platform
    #: index of ordinary images needs well under 1 MiB
    max_manifest_bytes_per_pull: int = 64 << 20
    #: distinct layers one pull may bring in (each costs ~0.6 KiB of bookkeeping);
    #: Docker stops at 127 layers per image, so 20 platforms of 500 layers fit
    max_layers_per_pull: int = 10_000
