"""What the store's operations return: plain dataclasses, no protobuf."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any, NamedTuple

from imagestore import errors
from imagestore.oci.manifests import Descriptor
from imagestore.oci.platforms import Platform
from imagestore.oci.references import parse_reference


class Name(NamedTuple):
    """A name in both of Docker's forms; sorts by the familiar one."""

    familiar: str  # "redis:latest"
    canonical: str  # "docker.io/library/redis:latest"


@lru_cache(maxsize=1 << 16)
def name_of(canonical: str) -> Name:
    """A stored (canonical) name in both forms; cached, as listings meet the same
    names again and again."""
    return Name(parse_reference(canonical, default_tag=False).familiar(), canonical)


@dataclass(frozen=True, slots=True)
class IndexMember:
    """One manifest a named index lists, stored here or not."""

    platform: Platform | None  # None when the index gives none
    manifest: Descriptor
    image_id: str | None  # the config digest, when the manifest is stored


@dataclass(frozen=True, slots=True)
class NamedIndex:
    """A name pointing at an index, and every child the index lists."""

    name: Name
    index: Descriptor
    children: tuple[IndexMember, ...]


class ImageSummary(NamedTuple):
    """One row of ListImages: an image (config digest) and all its names.

    A NamedTuple with times in nanoseconds (datetimes on demand): a listing
    builds 10,000s of them."""

    id: str
    repo_tags: tuple[Name, ...]  # "repo:tag", by familiar form
    repo_digests: tuple[Name, ...]  # "repo@sha256:…", by familiar form
    created_ns: int | None  # the config's "created", ns since the epoch
    size: int  # uncompressed layers
    content_size: int  # bytes its blobs take on disk
    labels: Mapping[str, str]
    platform: Platform
    stored_at_ns: int  # when it was first stored here
    indexes: tuple[NamedIndex, ...] = ()  # names reaching it that point at an index

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
class RemoveResult:
    """What ``docker rmi`` did for one requested item, in Docker's order; or
    why that item failed (``error``; the other fields are then empty)."""

    item: str  # as requested
    untagged: tuple[Name, ...] = ()
    deleted_images: tuple[str, ...] = ()
    freed_blobs: tuple[str, ...] = ()  # other than the deleted images' configs
    error: errors.ImageStoreError | None = None


@dataclass(frozen=True, slots=True)
class TagResult:
    target: Name  # the name just set
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
    #: beside each of moved_names, the image it reached before ("" when none did)
    moved_from: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PruneResult:
    deleted_images: tuple[str, ...]
    untagged: tuple[Name, ...]
    deleted_blobs: tuple[str, ...]
    reclaimed: int  # bytes on disk
    stale_ingests: int
    dry_run: bool = False  # nothing was removed; the fields say what would have been


@dataclass(frozen=True, slots=True)
class ImageUsage:
    id: str
    repo_tags: tuple[Name, ...]
    created: datetime | None
    content_size: int
    shared_size: int
    unique_size: int


@dataclass(frozen=True, slots=True)
class DiskUsage:
    images: tuple[ImageUsage, ...]  # one page of them
    total_size: int  # every blob on disk, once
    reclaimable: int  # what a default prune would free (same code as its dry run)
    image_count: int
    blob_count: int
    next_page_token: str = ""  # "" on the last page


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding of Check. Nothing is fixed silently."""

    kind: str  # e.g. "corrupt-blob", "missing-blob", "dangling-name"
    subject: str  # the digest or name concerned
    detail: str


@dataclass(frozen=True, slots=True)
class CheckProgress:
    """How far a Check has come in hashing the blob files."""

    blobs_checked: int
    blobs_total: int
    bytes_checked: int
    bytes_total: int


@dataclass(frozen=True, slots=True)
class UnrecordedBlob:
    """A blob file without a catalog record: garbage, not damage."""

    digest: str


@dataclass(frozen=True, slots=True)
class CheckSummary:
    """The end of a Check: what it counted."""

    problems: int
    blobs_checked: int
    images_checked: int
    unrecorded_blobs: int

    @property
    def ok(self) -> bool:
        return not self.problems


#: what a Check stream yields: progress and findings as they come, the summary last
CheckEvent = CheckProgress | Problem | UnrecordedBlob | CheckSummary


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


class EventKind(StrEnum):
    """What an event says happened, in docker's words (``docker events``)."""

    TAG = "tag"  #: a name now points at the image (new, or moved from another)
    UNTAG = "untag"  #: a name no longer reaches the image (removed, or moved away)
    DELETE = "delete"  #: the image was deleted
    PULL = "pull"  #: a pull stored the image under the name
    PUSH = "push"  #: a push sent the image to a registry
    LOAD = "load"  #: a load stored the image (under the name, when it has one)
    PRUNE = "prune"  #: a prune ended; its own untag and delete events came before


@dataclass(frozen=True, slots=True)
class Event:
    """One change to the store, as the journal recorded it in its transaction."""

    cursor: int  #: where it is in the journal: resume after it to miss nothing
    time_ns: int  #: when the change was committed, ns since the epoch
    kind: EventKind
    image_id: str  #: the image concerned (config digest), "" for none
    name: Name | None  #: the name concerned, when there is one
    target_digest: str  #: the manifest or index the name points at, "" when unknown
    labels: Mapping[str, str]  #: the image's config labels
    remote: str = ""  #: a push's registry and repository, "host/path"
    reclaimed_bytes: int = 0  #: a prune's bytes freed on disk

    @property
    def time(self) -> datetime:
        """The commit time as a datetime (UTC; microseconds)."""
        return datetime.fromtimestamp(self.time_ns / 1e9, UTC)


@dataclass(frozen=True, slots=True)
class EventPage:
    """Events read from the journal, and its bounds in the same snapshot."""

    events: tuple[Event, ...]
    oldest: int  #: the oldest cursor kept (``last + 1`` when the journal is empty)
    last: int  #: the last cursor given (0 before the first event)
