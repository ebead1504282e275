"""An image as ListImages shows it: its names, platform, and the indexes naming it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime


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
            from imagestore import errors  # the errors load when one is raised

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
