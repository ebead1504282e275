"""The client's results shaped as docker shows them: table rows and inspect
objects, with docker's field names (``.ID``, ``.Repository``, ``.Config.Env``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from imagestore.cli import humanize
from imagestore.cli.struct import Struct

if TYPE_CHECKING:
    from imagestore.client import DiskUsage, HistoryEntry, Image, ImageDetails, ImageUsage

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
#: `df`: docker's system df columns (SIZE and RECLAIMABLE are bytes on disk)
SUMMARY_TABLE = "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}"
SUMMARY_HEADERS = {
    "Type": "TYPE",
    "TotalCount": "TOTAL",
    "Active": "ACTIVE",
    "Size": "SIZE",
    "Reclaimable": "RECLAIMABLE",
}
#: `df -v`: per image, bytes on disk (compressed): labelled apart from `images` SIZE
USAGE_TABLE = (
    "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    "\t{{.SharedSize}}\t{{.UniqueSize}}"
)
USAGE_HEADERS = {
    "Repository": "REPOSITORY",
    "Tag": "TAG",
    "ID": "IMAGE ID",
    "CreatedSince": "CREATED",
    "Size": "CONTENT SIZE",
    "SharedSize": "SHARED SIZE",
    "UniqueSize": "UNIQUE SIZE",
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
        # docker's Go nils: an empty list or map in the config is null in its JSON
        Config=Struct(
            User=config.user,
            ExposedPorts=_or_null({port: {} for port in config.exposed_ports}),
            Env=_or_null(list(config.env)),
            Cmd=_or_null(list(config.cmd)),
            Entrypoint=_or_null(list(config.entrypoint)),
            Volumes=_or_null({volume: {} for volume in config.volumes}),
            WorkingDir=config.working_dir,
            Labels=_or_null(dict(sorted(config.labels.items()))),
            OnBuild=_or_null(list(config.on_build)),
            StopSignal=config.stop_signal,
            Shell=_or_null(list(config.shell)),
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


def _or_null(value: list[str] | dict[str, Any]) -> list[str] | dict[str, Any] | None:
    """None (JSON null, Go's nil) for an empty list or map."""
    return value or None


def history_rows(
    image_id: str, entries: list[HistoryEntry], *, truncate: bool, human: bool = True
) -> list[Struct]:
    """docker history's rows; ``human`` False: sizes in bytes, CREATED in RFC 3339."""
    rows = []
    for position, entry in enumerate(entries):
        created = entry.created if entry.created and entry.created > _EPOCH else None
        created_by = entry.created_by.replace("\t", " ")
        if truncate and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        created_at = humanize.rfc3339_seconds(created) or "N/A"
        rows.append(
            Struct(
                ID=short_id(image_id, truncate=truncate) if position == 0 else MISSING,
                CreatedSince=humanize.since(created) if human else created_at,
                CreatedAt=created_at,
                CreatedBy=created_by,
                Size=humanize.size(entry.size) if human else str(entry.size),
                Comment=entry.comment,
            )
        )
    return rows


def usage_row(usage: ImageUsage) -> Struct:
    """One image of ``df -v``: its blobs on disk, shared and its own."""
    repo, tag = split_name(usage.repo_tags[0].familiar) if usage.repo_tags else (NONE, NONE)
    return Struct(
        Repository=repo,
        Tag=tag,
        ID=short_id(usage.id),
        CreatedSince=humanize.since(usage.created),
        Size=humanize.size(usage.content_size),
        SharedSize=humanize.size(usage.shared_size),
        UniqueSize=humanize.size(usage.unique_size),
    )


def summary_row(usage: DiskUsage, *, active: int, reclaimable: int) -> Struct:
    """``df``'s Images row, docker's wording: sizes in go-units (4 digits), the
    reclaimable share of the size in whole percent."""
    freed = humanize.size(reclaimable, 4)
    if usage.total_size > 0:
        freed += f" ({reclaimable * 100 // usage.total_size}%)"
    return Struct(
        Type="Images",
        TotalCount=str(usage.image_count),
        Active=str(active),
        Size=humanize.size(usage.total_size, 4),
        Reclaimable=freed,
    )


def tree_rows(images: list[Image], *, absent: bool, truncate: bool) -> list[tuple[str, ...]]:
    """``images --tree``: a name that points at an index, then each platform of
    it stored here (``absent``: the others too, marked), in the list's order;
    any other tag as a row of its own. Columns: IMAGE, ID, SIZE, PLATFORMS
    (an index: how many of its platforms are stored)."""
    rows: list[tuple[str, ...]] = []
    shown: set[str] = set()
    by_id = {found.id: found for found in images}
    # an index's digest name (repo@sha256:…) only when no tag names it, as docker
    tagged = {n.index.digest for i in images for n in i.indexes if "@" not in n.name.familiar}
    for image in images:
        for named in image.indexes:
            familiar = named.name.familiar
            if familiar in shown or ("@" in familiar and named.index.digest in tagged):
                continue
            shown.add(named.name.familiar)
            stored = sum(child.present for child in named.children)
            rows.append(
                (
                    named.name.familiar,
                    short_id(named.index.digest, truncate=truncate),
                    "",
                    f"{stored} of {len(named.children)} stored",
                )
            )
            children = [c for c in named.children if c.present or absent]
            for position, child in enumerate(children):
                branch = "└─ " if position == len(children) - 1 else "├─ "
                platform = str(child.platform) if child.platform else "unknown"
                if child.present:
                    size = by_id[child.image_id].size if child.image_id in by_id else None
                    rows.append(
                        (
                            branch + platform,
                            short_id(child.image_id, truncate=truncate),
                            humanize.size(size) if size is not None else "",
                            "",
                        )
                    )
                else:
                    rows.append((branch + platform, "", "not stored", ""))
        for name in image.repo_tags:
            if name.familiar not in shown:
                shown.add(name.familiar)
                rows.append(
                    (
                        name.familiar,
                        short_id(image.id, truncate=truncate),
                        humanize.size(image.size),
                        str(image.platform),
                    )
                )
        if not image.repo_tags and not image.indexes:
            rows.append(
                (f"{NONE}:{NONE}", short_id(image.id, truncate=truncate), humanize.size(image.size),
                 str(image.platform))
            )  # fmt: skip
    return rows
