"""What the client returns: plain dataclasses, no protobuf."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from imagestore import errors


@dataclass(frozen=True, slots=True)
class Platform:
    """An OS, CPU architecture and variant; ``str()`` gives "os/arch[/variant]"."""

    os: str
    architecture: str = ""
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``"os[/arch[/variant]]"`` → Platform; PlatformInvalid when malformed."""
        parts = text.split("/")
        if len(parts) > 3 or not all(parts):
            raise errors.PlatformInvalid(
                f"invalid platform {text!r}: want os[/arch[/variant]]",
                metadata={"platform": text},
                field="platform",
            )
        return cls(*parts)


@dataclass(frozen=True, slots=True)
class ImageName:
    """A name in both of docker's forms; ``str()`` gives the familiar one."""

    familiar: str  # as docker prints it: "redis:latest"
    canonical: str = ""  # fully qualified: "docker.io/library/redis:latest"

    def __str__(self) -> str:
        return self.familiar


@dataclass(frozen=True, slots=True)
class Image:
    """One image (config digest) with all its names, as ListImages shows it."""

    id: str
    repo_tags: tuple[ImageName, ...]
    repo_digests: tuple[ImageName, ...]
    created: datetime | None
    size: int  # uncompressed layers
    content_size: int  # its blobs on disk
    labels: Mapping[str, str]
    platform: Platform
    stored_at: datetime | None
    #: some labels were left out to keep the server's answer under its size limit
    labels_truncated: bool = False
    #: the multi-platform indexes that names reaching this image point at
    indexes: tuple[NamedIndex, ...] = ()


@dataclass(frozen=True, slots=True)
class Descriptor:
    """Points at a blob: its media type, digest and size."""

    media_type: str
    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class IndexChild:
    """One manifest an index lists, stored here (``present``) or not."""

    platform: Platform | None  # None when the index gives none
    manifest: Descriptor
    present: bool
    image_id: str = ""  # when present


@dataclass(frozen=True, slots=True)
class NamedIndex:
    """A name pointing at a multi-platform index, with every child it lists."""

    name: ImageName
    index: Descriptor
    children: tuple[IndexChild, ...]


@dataclass(frozen=True, slots=True)
class ContainerConfig:
    """The container defaults of an image's config (``Config`` in docker inspect)."""

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
    """One row of ``history``: a config history entry (or, without history, a layer)."""

    created: datetime | None
    created_by: str
    size: int
    comment: str
    empty_layer: bool
    layer_digest: str


@dataclass(frozen=True, slots=True)
class TagResult:
    """The name set, the images it now reaches, those it reached before."""

    target: ImageName
    image_ids: tuple[str, ...]
    displaced_image_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RemoveResult:
    """What Remove did for one requested item, or why it failed (``error``:
    the exception a call failing that way would raise)."""

    item: str
    untagged: tuple[ImageName, ...] = ()
    deleted_image_ids: tuple[str, ...] = ()
    freed_blobs: tuple[str, ...] = ()  # other than the images' configs
    error: errors.ImageStoreError | None = None

    @property
    def ok(self) -> bool:
        """The item was applied (no ``error``)."""
        return self.error is None


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What a prune removed (or, with ``dry_run``, would remove) and the bytes freed."""

    deleted_image_ids: tuple[str, ...]
    untagged: tuple[ImageName, ...]
    deleted_blobs: tuple[str, ...]
    reclaimed_bytes: int
    stale_ingests: int
    dry_run: bool = False
    #: how many image IDs, names and blobs there are in all (the lists are cut
    #: to fit one response when a prune removes more than it holds)
    deleted_image_count: int = 0
    untagged_count: int = 0
    deleted_blob_count: int = 0
    #: some list was cut to fit; the counts are whole
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class ImageUsage:
    """One image's disk usage: its blobs, those shared with other images, its own."""

    id: str
    repo_tags: tuple[ImageName, ...]
    content_size: int
    shared_size: int
    unique_size: int
    created: datetime | None


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """Disk usage: image rows (one page of them, or all) and the store's totals."""

    images: tuple[ImageUsage, ...]
    total_size: int
    reclaimable: int
    image_count: int
    blob_count: int
    #: of one page: pass it to get the next page; "" on the last (and on a walk of all)
    next_page_token: str = ""


@dataclass(frozen=True, slots=True)
class CheckProgress:
    """How far a Check has come."""

    blobs_checked: int
    blobs_total: int
    bytes_checked: int
    bytes_total: int


@dataclass(frozen=True, slots=True)
class CheckProblem:
    """One confirmed finding of Check ("corrupt-blob", "missing-blob", …)."""

    kind: str
    subject: str
    detail: str


@dataclass(frozen=True, slots=True)
class UnrecordedBlob:
    """A blob file without a catalog record: garbage (prune removes it), not damage."""

    digest: str


@dataclass(frozen=True, slots=True)
class CheckSummary:
    """The last message of a Check: counts of what it sent and checked."""

    ok: bool
    problems: int
    blobs_checked: int
    images_checked: int
    unrecorded_blobs: int


#: one message of the Check stream
CheckEvent = CheckProgress | CheckProblem | UnrecordedBlob | CheckSummary
#: what iterating a check yields (its summary ends it: ``result()`` is the CheckReport)
CheckUpdate = CheckProgress | CheckProblem | UnrecordedBlob


@dataclass(frozen=True, slots=True)
class CheckReport:
    """A whole Check collected (``check_report``): the summary and every finding."""

    ok: bool
    problems: tuple[CheckProblem, ...]
    blobs_checked: int
    images_checked: int
    #: blob files without a catalog record: garbage (prune removes them), not damage
    unrecorded_blobs: tuple[str, ...] = ()


class Phase(enum.Enum):
    """What a progress message is about (the proto's Phase, without its prefix)."""

    UNSPECIFIED = "unspecified"
    RESOLVING = "resolving"
    WAITING = "waiting"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    DOWNLOADED = "downloaded"
    COMPLETE = "complete"
    ALREADY_EXISTS = "already-exists"
    RETRYING = "retrying"
    PREPARING = "preparing"
    PUSHING = "pushing"
    PUSHED = "pushed"
    EXISTS_REMOTELY = "exists-remotely"
    MOUNTED = "mounted"
    SKIPPED = "skipped"
    SUMMARY = "summary"


@dataclass(frozen=True, slots=True)
class Progress:
    """One progress message of a pull, push or load.

    ``text`` is docker's words for it, ``subject`` what docker shows as the
    line's ID (12 hex of a blob's digest, a tag, a Load member's path, or ""),
    ``blob`` the blob it is about (None for lines about the whole operation).
    """

    phase: Phase
    text: str
    blob: Descriptor | None = None
    subject: str = ""
    current: int = 0
    total: int | None = None  # None: not known
    retry_after: timedelta | None = None  # with Phase.RETRYING


@dataclass(frozen=True, slots=True)
class PulledTag:
    """One tag of a pull with ``all_tags``."""

    name: ImageName
    digest: str
    image_ids: tuple[str, ...]
    updated: bool


@dataclass(frozen=True, slots=True)
class PullResult:
    """What a pull stored: ``updated`` is docker's "Downloaded newer image"
    (False: "Image is up to date"); with ``all_tags``, one entry per tag."""

    name: ImageName  # with all_tags: the repository
    digest: str  # the manifest or index ("" with all_tags)
    image_ids: tuple[str, ...]
    updated: bool
    status: str  # docker's final status line, as the server words it
    tags: tuple[PulledTag, ...] = ()


@dataclass(frozen=True, slots=True)
class PushResult:
    """What a push sent: the name, and the manifest (or index) digest and size."""

    name: ImageName
    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class LoadedImage:
    """One image a load stored, with the names it now has."""

    id: str
    names: tuple[ImageName, ...]
    moved: tuple[ImageName, ...]  # names that pointed at another image before
    #: beside each of ``moved``, the image ID it reached before ("" when none)
    moved_from: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a load stored: each image with its names."""

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


class EventKind(enum.Enum):
    """What an event says happened (the proto's EventKind, without its prefix;
    the values are docker's words, as ``events --filter event=`` takes them)."""

    UNSPECIFIED = "unspecified"  # also: a kind newer than this client
    TAG = "tag"
    UNTAG = "untag"
    DELETE = "delete"
    PULL = "pull"
    PUSH = "push"
    LOAD = "load"
    PRUNE = "prune"


@dataclass(frozen=True, slots=True)
class Event:
    """One change to the store, as its journal recorded it (``watch_events``).

    ``cursor`` orders events in commit order: pass it back to continue after
    this event. ``name`` is None when the change is about no name (a delete, a
    prune); ``remote`` is a push's "host/repository"; ``reclaimed_bytes`` a
    prune's freed bytes.
    """

    cursor: int
    time: datetime | None
    kind: EventKind
    image_id: str = ""
    name: ImageName | None = None
    target_digest: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    remote: str = ""
    reclaimed_bytes: int = 0
