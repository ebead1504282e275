"""What Inspect, History, Tag, Remove, Prune, DiskUsage and the blob calls return."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from imagestore.client.models.images import Descriptor, Image, ImageName

if TYPE_CHECKING:
    from imagestore import errors


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
