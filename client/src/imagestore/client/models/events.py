"""WatchEvents: the store's journal of changes."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from imagestore.client.models.images import ImageName


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
