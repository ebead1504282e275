"""Pull, push and load: their progress lines, results, and registry credentials."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import timedelta

from imagestore.client.models.images import Descriptor, ImageName


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
