"""What the client returns: plain dataclasses, no protobuf."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True, slots=True)
class Image:
    """One image (config digest) with all its names, as ListImages shows it."""

    id: str
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    created: datetime | None
    size: int  # uncompressed layers
    content_size: int  # its blobs on disk
    labels: Mapping[str, str]
    platform: Platform
    stored_at: datetime | None
    #: some labels were left out to keep the server's answer under its size limit
    labels_truncated: bool = False


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class ContainerConfig:
    env: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    stop_signal: str = ""
    shell: tuple[str, ...] = ()
    on_build: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ImageDetails:
    """What Inspect returns: the image, its config and its manifest."""

    image: Image
    author: str
    comment: str
    config: ContainerConfig
    diff_ids: tuple[str, ...]
    manifest: Descriptor
    config_descriptor: Descriptor
    layers: tuple[Descriptor, ...]
    last_tag_time: datetime | None
    raw_manifest: bytes = b""
    raw_config: bytes = b""


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    created: datetime | None
    created_by: str
    size: int
    comment: str
    empty_layer: bool
    layer_digest: str


@dataclass(frozen=True, slots=True)
class TagResult:
    target: str
    image_ids: tuple[str, ...]
    displaced_image_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RemoveEvent:
    """``untagged`` a name, or ``deleted`` an image ID or blob digest."""

    kind: str
    value: str


@dataclass(frozen=True, slots=True)
class PruneResult:
    deleted_image_ids: tuple[str, ...]
    untagged: tuple[str, ...]
    deleted_blobs: tuple[str, ...]
    reclaimed_bytes: int
    stale_ingests: int
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class ImageUsage:
    id: str
    repo_tags: tuple[str, ...]
    content_size: int
    shared_size: int
    unique_size: int
    created: datetime | None


@dataclass(frozen=True, slots=True)
class DiskUsage:
    images: tuple[ImageUsage, ...]
    total_size: int
    reclaimable: int
    image_count: int
    blob_count: int


@dataclass(frozen=True, slots=True)
class CheckProblem:
    kind: str
    subject: str
    detail: str


@dataclass(frozen=True, slots=True)
class CheckReport:
    ok: bool
    problems: tuple[CheckProblem, ...]
    blobs_checked: int
    images_checked: int
    #: blob files without a catalog record: garbage (prune removes them), not damage
    unrecorded_blobs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Progress:
    """One progress line of a pull, push or load (``id``: a layer, a tag, or "")."""

    id: str
    status: str
    current: int = 0
    total: int = 0


@dataclass(frozen=True, slots=True)
class PullResult:
    digest: str
    image_ids: tuple[str, ...]
    status: str  # Docker's last line: "Downloaded newer image for …"


@dataclass(frozen=True, slots=True)
class PushResult:
    tag: str
    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class LoadedImage:
    id: str
    names: tuple[str, ...]
    moved: tuple[str, ...]  # names that pointed at another image before


@dataclass(frozen=True, slots=True)
class LoadResult:
    images: tuple[LoadedImage, ...]


@dataclass(frozen=True, slots=True)
class RegistryAuth:
    """Credentials for a registry, sent with a pull or push. ``repr`` hides secrets."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class BlobChunk:
    """Bytes of a blob and the offset of the first of them in the blob."""

    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class BlobStat:
    """One stored blob as the server's catalog records it (``stat_blob``)."""

    blob: Descriptor
    diff_id: str  # layers: the digest of the tar it unpacks to; else ""
    uncompressed_size: int  # layers: the tar's size; else 0
    stored_at: datetime | None
    referenced: bool  # a prune keeps it
    image_ids: tuple[str, ...]  # the images using it: the lowest 100 IDs at most
    image_count: int  # how many images use it in all
    damaged: bool
    damage: str  # Check's problem kind when damaged ("corrupt-blob", "size-mismatch")


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    """The server's own limits (``imagestore serve`` options of the same names)."""

    max_concurrent_rpcs: int
    max_concurrent_streams: int
    max_response_bytes: int
    max_layer_size: int
    max_document_bytes: int


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
