"""The client's results shaped as docker shows them: table rows and inspect
objects, with docker's field names (``.ID``, ``.Repository``, ``.Config.Env``)."""

from __future__ import annotations

from datetime import UTC, datetime

from imagestore.cli import humanize
from imagestore.cli.template import Struct
from imagestore.client import HistoryEntry, Image, ImageDetails, ImageUsage

NONE = "<none>"
MISSING = "<missing>"

IMAGE_TABLE = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
IMAGE_TABLE_DIGESTS = (
    "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
)
IMAGE_HEADERS = {
    "ID": "IMAGE ID",
    "Repository": "REPOSITORY",
    "Tag": "TAG",
    "Digest": "DIGEST",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "Size": "SIZE",
    "SharedSize": "SHARED SIZE",
    "UniqueSize": "UNIQUE SIZE",
    "VirtualSize": "VIRTUAL SIZE",
    "Containers": "CONTAINERS",
}
HISTORY_TABLE = "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
HISTORY_HEADERS = {
    "ID": "IMAGE",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "CreatedBy": "CREATED BY",
    "Size": "SIZE",
    "Comment": "COMMENT",
}
#: reproducible builds say 1970: docker prints N/A for anything before 2000
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_GO_ZERO_TIME = "0001-01-01T00:00:00Z"


def short_id(image_id: str, *, truncate: bool = True) -> str:
    """docker's TruncateID: 12 hex, without ``sha256:``."""
    return image_id.removeprefix("sha256:")[:12] if truncate else image_id


def split_name(reference: str) -> tuple[str, str]:
    """``repo:tag`` or ``repo@digest`` → (repo, tag-or-digest); ports stay in repo."""
    if "@" in reference:
        repo, _, digest = reference.partition("@")
        return repo, digest
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        return reference[:colon], reference[colon + 1 :]
    return reference, "latest"


def image_rows(image: Image, *, digests: bool, truncate: bool) -> list[Struct]:
    """One row per (repository, tag) as ``docker images`` prints them."""
    tags: dict[str, list[str]] = {}
    by_repo: dict[str, list[str]] = {}
    for name in image.repo_tags:
        repo, tag = split_name(name.familiar)
        tags.setdefault(repo, []).append(tag)
    for name in image.repo_digests:
        repo, digest = split_name(name.familiar)
        by_repo.setdefault(repo, []).append(digest)
    found: list[tuple[str, str, str]] = []
    if not tags and not by_repo:
        found.append((NONE, NONE, NONE))
    for repo in sorted(tags):
        repo_digests = by_repo.pop(repo, []) if digests else []
        by_repo.pop(repo, None)
        for tag in sorted(tags[repo]):
            found += [(repo, tag, d) for d in repo_digests] or [(repo, tag, NONE)]
    for repo in sorted(by_repo):
        found += [(repo, NONE, d) for d in by_repo[repo]] if digests else [(repo, NONE, "")]
    return [_image_row(image, repo, tag, digest, truncate) for repo, tag, digest in found]


def _image_row(image: Image, repo: str, tag: str, digest: str, truncate: bool) -> Struct:
    size = humanize.size(image.size)
    return Struct(
        Containers="N/A",
        CreatedAt=humanize.go_time(image.created),
        CreatedSince=humanize.since(image.created),
        Digest=digest,
        ID=short_id(image.id, truncate=truncate),
        Repository=repo,
        SharedSize="N/A",
        Size=size,
        Tag=tag,
        UniqueSize="N/A",
        VirtualSize=size,
    )


def inspect_object(details: ImageDetails) -> Struct:
    """``docker image inspect``'s JSON, with docker's field names."""
    image, config = details.image, details.config
    return Struct(
        Id=image.id,
        RepoTags=[name.familiar for name in image.repo_tags],
        RepoDigests=[name.familiar for name in image.repo_digests],
        Comment=details.comment,
        Created=humanize.rfc3339(image.created),
        Author=details.author,
        Config=Struct(
            User=config.user,
            ExposedPorts={port: {} for port in config.exposed_ports},
            Env=list(config.env),
            Cmd=list(config.cmd),
            Entrypoint=list(config.entrypoint),
            Volumes={volume: {} for volume in config.volumes},
            WorkingDir=config.working_dir,
            Labels=dict(sorted(config.labels.items())),
            OnBuild=list(config.on_build),
            StopSignal=config.stop_signal,
            Shell=list(config.shell),
        ),
        Architecture=image.platform.architecture,
        Variant=image.platform.variant,
        Os=image.platform.os,
        Size=image.size,
        RootFS=Struct(Type="layers", Layers=list(details.diff_ids)),
        Metadata=Struct(
            LastTagTime=humanize.rfc3339(details.last_tag_time) or "0001-01-01T00:00:00Z"
        ),
        Descriptor=Struct(
            mediaType=details.manifest.media_type,
            digest=details.manifest.digest,
            size=details.manifest.size,
        ),
    )


def history_rows(image_id: str, entries: list[HistoryEntry], *, truncate: bool) -> list[Struct]:
    rows = []
    for position, entry in enumerate(entries):
        created = entry.created if entry.created and entry.created > _EPOCH else None
        created_by = entry.created_by.replace("\t", " ")
        if truncate and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        rows.append(
            Struct(
                ID=short_id(image_id, truncate=truncate) if position == 0 else MISSING,
                CreatedSince=humanize.since(created),
                CreatedAt=humanize.rfc3339(created) or "N/A",
                CreatedBy=created_by,
                Size=humanize.size(entry.size),
                Comment=entry.comment,
            )
        )
    return rows


def usage_row(usage: ImageUsage) -> tuple[str, str, str, str, str, str, str]:
    repo, tag = split_name(usage.repo_tags[0].familiar) if usage.repo_tags else (NONE, NONE)
    return (
        repo,
        tag,
        short_id(usage.id),
        humanize.since(usage.created),
        humanize.size(usage.content_size),
        humanize.size(usage.shared_size),
        humanize.size(usage.unique_size),
    )
