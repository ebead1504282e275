"""GetServerInfo: the server's versions, settings and limits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    """The server's own limits (``imagestore serve`` options of the same names)."""

    max_concurrent_rpcs: int
    max_concurrent_streams: int
    max_response_bytes: int
    max_layer_size: int
    max_document_bytes: int
    max_concurrent_watches: int = 0  #: 0 from a server older than WatchEvents


@dataclass(frozen=True, slots=True)
class LoadLimits:
    """What one Load may cost (the ``--load-max-*`` options)."""

    max_header_bytes: int
    max_name_bytes: int
    max_members: int
    max_kept_bytes: int
    max_expanded_bytes: int


@dataclass(frozen=True, slots=True)
class RegistryLimits:
    """How the server treats registries on pull and push (its registry options)."""

    max_concurrent_downloads: int
    max_concurrent_uploads: int
    attempts: int
    backoff: timedelta
    connect_timeout: timedelta
    idle_timeout: timedelta
    min_speed: int  # bytes/s; 0: no floor
    speed_window: timedelta
    blob_timeout: timedelta  # zero: no limit
    max_index_children: int
    max_manifest_bytes_per_pull: int
    max_layers_per_pull: int
    max_concurrent_small_downloads: int  # layers of at most 1 MiB, besides the others


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What a server is and how it is set up (``server_info``; no secrets)."""

    server_version: str
    api_version: str
    gzip_backend: str  # "isa-l" or "zlib"
    catalog: str  # "sqlite"
    root: str  # the store's directory on the server's machine
    tls: bool
    mutual_tls: bool
    auth_mode: str  # "none" or "tokens" ("" when the server does not say)
    image_count: int
    blob_count: int
    stored_bytes: int
    limits: ServiceLimits
    load_limits: LoadLimits
    registry_limits: RegistryLimits
