"""What the store's operations return: plain dataclasses, no protobuf."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from imagestore.oci.manifests import Descriptor
from imagestore.oci.platforms import Platform


class ImageSummary(NamedTuple):
    """One row of ListImages: an image (config digest) and all its names.

    A NamedTuple with times in nanoseconds (datetimes on demand): a listing
    builds 10,000s of them."""

    id: str
    repo_tags: tuple[str, ...]  # familiar "repo:tag"
    repo_digests: tuple[str, ...]  # familiar "repo@sha256:…"
    created_ns: int | None  # the config's "created", ns since the epoch
    size: int  # uncompressed layers
    content_size: int  # bytes its blobs take on disk
    labels: Mapping[str, str]
    platform: Platform
    stored_at_ns: int  # when it was first stored here

    @property
    def created(self) -> datetime | None:
        if self.created_ns is None:
            return None
        return datetime.fromtimestamp(self.created_ns / 1e9, UTC)

    @property
    def stored_at(self) -> datetime:
        return datetime.fromtimestamp(self.stored_at_ns / 1e9, UTC)


@dataclass(frozen=True, slots=True)
class ImageDetails:
    """What Inspect returns (docker image inspect)."""

    summary: ImageSummary
    author: str
    comment: str
    config: Mapping[str, Any]  # Env, Cmd, Entrypoint, WorkingDir, User, Labels, …
    diff_ids: tuple[str, ...]
    manifest_digest: str
    manifest_media_type: str
    config_descriptor: Descriptor
    layers: tuple[Descriptor, ...]
    last_tag_time: datetime | None
    raw_manifest: bytes
    raw_config: bytes


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One config history entry, newest first."""

    created: datetime | None
    created_by: str
    size: int
    comment: str
    empty_layer: bool
    layer_digest: str | None  # the compressed blob, when the entry made a layer


@dataclass(frozen=True, slots=True)
class RemoveEvent:
    """Docker's ordered rm output: untagged names, then deleted IDs and blobs."""

    kind: Literal["untagged", "deleted"]
    value: str  # a familiar name, an image ID, or a freed blob digest


@dataclass(frozen=True, slots=True)
class TagResult:
    target: str  # familiar name just set
    image_ids: tuple[str, ...]
    displaced: tuple[str, ...]  # images the name used to reach and no longer does


@dataclass(frozen=True, slots=True)
class CommitResult:
    """An image (or index) made visible under its names."""

    target_digest: str
    image_ids: tuple[str, ...]
    new_images: tuple[str, ...]  # images that were not in the store before
    moved_names: tuple[str, ...]  # names that pointed at another target before
    new_names: tuple[str, ...] = ()  # names that did not point here before (new or moved)


@dataclass(frozen=True, slots=True)
class PruneResult:
    deleted_images: tuple[str, ...]
    untagged: tuple[str, ...]
    deleted_blobs: tuple[str, ...]
    reclaimed: int  # bytes on disk
    stale_ingests: int
    dry_run: bool = False  # nothing was removed; the fields say what would have been


@dataclass(frozen=True, slots=True)
class ImageUsage:
    id: str
    repo_tags: tuple[str, ...]
    created: datetime | None
    content_size: int
    shared_size: int
    unique_size: int


@dataclass(frozen=True, slots=True)
class DiskUsage:
    images: tuple[ImageUsage, ...]
    total_size: int  # every blob on disk, once
    reclaimable: int  # what a default prune would free (same code as its dry run)
    image_count: int
    blob_count: int


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding of Check. Nothing is fixed silently."""

    kind: str  # e.g. "corrupt-blob", "missing-blob", "dangling-name"
    subject: str  # the digest or name concerned
    detail: str


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What Check found. ``unrecorded_blobs`` are blob files without a catalog
    record: garbage, not problems (a pull or load writes them again; prune, or a
    start-up once they are old, removes them)."""

    problems: tuple[Problem, ...] = field(default_factory=tuple)
    blobs_checked: int = 0
    images_checked: int = 0
    unrecorded_blobs: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems
