"""The catalog's records: plain values, the same for every catalog implementation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class BlobRow:
    """A blob the store holds: what its bytes were verified to be."""

    digest: str
    size: int
    media_type: str
    diff_id: str | None  #: layers: the digest of the uncompressed tar
    uncompressed_size: int | None
    stored_at: int  #: ns since the epoch


class ImageRow(NamedTuple):
    """One image record (a NamedTuple: listing builds 10,000s of them)."""

    id: str  #: the config digest
    created: int | None  #: the config's "created", ns since the epoch
    stored_at: int  #: when first stored here, ns
    size: int  #: the sum of its uncompressed layer sizes
    content_size: int  #: its distinct blobs' bytes on disk
    os: str
    architecture: str
    variant: str
    labels: dict[str, str]
    last_tag_time: int | None


@dataclass(frozen=True, slots=True)
class NameRow:
    """A tag (``repo:tag``) or digest reference (``repo@digest``), canonical."""

    name: str
    repository: str
    tag: str | None
    digest: str | None
    target: str  #: the manifest or index it points at
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class TargetRow:
    """A manifest or index a name can point at."""

    digest: str
    media_type: str
    kind: str  #: "manifest" or "index"
    image_id: str | None  #: manifests only
    stored_at: int


@dataclass(frozen=True, slots=True)
class ManifestBlob:
    """A manifest's config (position 0) or layer (1..n, base first)."""

    position: int
    blob_digest: str
    media_type: str
    size: int


@dataclass(frozen=True, slots=True)
class IndexChild:
    """A manifest an index lists, stored here or not."""

    position: int
    child_digest: str
    media_type: str
    size: int
    platform: str  #: os/arch[/variant], "" if none


@dataclass(frozen=True, slots=True)
class NamedIndexChild:
    """One child of an index a name points at (one row per name and child)."""

    name: str  #: the canonical name
    index_digest: str
    index_media_type: str
    index_size: int  #: the index blob's recorded size (0 without a record)
    child: IndexChild
    image_id: str | None  #: the child's image, when its manifest is stored


@dataclass(frozen=True, slots=True)
class EventRow:
    """One change in the events journal. Its ``cursor`` and ``time`` are given
    when the journal appends it, inside the transaction of the change (0 until
    then)."""

    kind: str  #: "tag", "untag", "delete", "pull", "push", "load" or "prune"
    image_id: str = ""  #: the image concerned, "" for none
    name: str = ""  #: the canonical name concerned, "" for none
    target: str = ""  #: the manifest or index the name points at, "" when unknown
    labels: Mapping[str, str] = field(default_factory=dict)  #: the image's config labels
    remote: str = ""  #: a push's "host/path"
    reclaimed: int = 0  #: a prune's bytes freed on disk
    cursor: int = 0  #: position in the journal: consecutive, in commit order
    time: int = 0  #: commit time, ns since the epoch


@dataclass(frozen=True, slots=True)
class ReplicaRow:
    """One replica's heartbeat: when it was last seen (the catalog's clock, ns),
    the collector epoch its last heartbeat had seen, and the digests it was
    reading then."""

    id: str
    last_seen: int
    seen_epoch: int
    reading: tuple[str, ...]
