"""Domain results → protobuf messages: the one place that knows both."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from imagestore import errors, hashing
from imagestore.api.admission import Limits
from imagestore.api.interceptors import status_message
from imagestore.archive.load import LoadedImage, LoadLimits, LoadProgress
from imagestore.dockerconfig import Credentials
from imagestore.oci.manifests import MAX_DOCUMENT_SIZE, Descriptor
from imagestore.oci.platforms import Platform, parse_platform
from imagestore.registry.options import RegistryOptions
from imagestore.registry.progress import Phase, ProgressEvent
from imagestore.registry.pull import PullResult
from imagestore.registry.push import PushResult
from imagestore.store import models
from imagestore.store.store import BlobStat, Totals
from imagestore.v1 import imagestore_pb2 as pb
from imagestore.version import __version__


def timestamp(value: datetime | int | None) -> Timestamp | None:
    """A Timestamp from a datetime or nanoseconds; None stays unset."""
    if value is None:
        return None
    stamp = Timestamp()
    if isinstance(value, int):
        stamp.FromNanoseconds(value)
    else:
        stamp.FromDatetime(value)
    return stamp


def duration(seconds: float) -> Duration:
    """A Duration from seconds."""
    value = Duration()
    value.FromNanoseconds(round(seconds * 1e9))
    return value


def platform(value: Platform) -> pb.Platform:
    return pb.Platform(os=value.os, architecture=value.architecture, variant=value.variant)


def descriptor(value: Descriptor) -> pb.Descriptor:
    return pb.Descriptor(media_type=value.media_type, digest=value.digest, size=value.size)


def image_name(canonical: str) -> pb.ImageName:
    """A name in both of Docker's forms, from its canonical one
    ("docker.io/library/redis:latest" -> familiar "redis:latest")."""
    return name(models.name_of(canonical))


def request_platform(value: pb.Platform) -> str:
    """A request's Platform as the normalised "os/arch[/variant]" text the store
    and the registry take; "" when unset (the default). One that does not
    parse, or an architecture or variant without an os, is PlatformInvalid."""
    if not (value.os or value.architecture or value.variant):
        return ""
    if not value.os:
        raise errors.PlatformInvalid(
            "a platform needs its os (e.g. os: linux, architecture: arm64)",
            metadata={"platform": f"/{value.architecture}/{value.variant}"[:100]},
        )
    if value.variant and not value.architecture:
        raise errors.PlatformInvalid(
            "a platform with a variant needs its architecture",
            metadata={"platform": f"{value.os}//{value.variant}"[:100]},
        )
    text = "/".join(part for part in (value.os, value.architecture, value.variant) if part)
    return str(parse_platform(text))  # refused here, where the field is known


# Bytes a nested message's length prefix may grow by once labels are put back.
_PREFIX_SLACK = 16


def _varint_bytes(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def field_bytes(message: Message) -> int:
    """What ``message`` costs as one element of a repeated field (field number <= 15)."""
    size = message.ByteSize()
    return 1 + _varint_bytes(size) + size


def _label_bytes(key: str, value: str) -> int:
    """An upper bound of one map<string, string> entry on the wire."""
    k, v = len(key.encode()), len(value.encode())
    entry = 1 + _varint_bytes(k) + k + 1 + _varint_bytes(v) + v
    return 1 + _varint_bytes(entry) + entry


def _fit_labels(message: Message, maps: Sequence[MutableMapping[str, str]], max_bytes: int) -> None:
    """Keep in ``maps`` (the same labels, shown in several places) the labels
    that fit with the rest of ``message`` in ``max_bytes``: the smallest first,
    each whole, so as many as possible come through intact."""
    full = [dict(labels) for labels in maps]
    for labels in maps:
        labels.clear()
    room = max_bytes - message.ByteSize() - _PREFIX_SLACK
    cost: dict[str, int] = {}
    for labels in full:
        for key, value in labels.items():
            cost[key] = cost.get(key, 0) + _label_bytes(key, value)
    for key in sorted(cost, key=lambda name: (cost[name], name)):
        if cost[key] > room:
            break  # sorted by cost: none of the rest fits either
        room -= cost[key]
        for labels, source in zip(maps, full, strict=True):
            if key in source:
                labels[key] = source[key]
    if message.ByteSize() > max_bytes:  # the bound was not enough: keep none
        for labels in maps:
            labels.clear()


def name(value: models.Name) -> pb.ImageName:
    """A store's name, already in both forms (no parsing: a listing has 10,000s)."""
    return pb.ImageName(familiar=value.familiar, canonical=value.canonical)


def named_index(value: models.NamedIndex) -> pb.NamedIndex:
    """A name on an index, with every child (present here or not)."""
    return pb.NamedIndex(
        name=name(value.name),
        index=descriptor(value.index),
        children=[
            pb.IndexChild(
                platform=platform(child.platform) if child.platform is not None else None,
                manifest=descriptor(child.manifest),
                present=child.image_id is not None,
                image_id=child.image_id or "",
            )
            for child in value.children
        ],
    )


def image_summary(value: models.ImageSummary, *, max_bytes: int | None = None) -> pb.ImageSummary:
    """The row as ListImages sends it; with ``max_bytes``, labels that would make
    it larger are left out and ``labels_truncated`` says so."""
    message = pb.ImageSummary(
        id=value.id,
        repo_tags=[name(tag) for tag in value.repo_tags],
        repo_digests=[name(reference) for reference in value.repo_digests],
        created=timestamp(value.created_ns),
        size=value.size,
        content_size=value.content_size,
        labels=value.labels,
        platform=platform(value.platform),
        stored_at=timestamp(value.stored_at_ns),
        indexes=[named_index(index) for index in value.indexes],
    )
    if max_bytes is not None and message.ByteSize() > max_bytes:
        message.labels_truncated = True
        _fit_labels(message, [message.labels], max_bytes)
    return message


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable):
        return [str(item) for item in value]
    return []


def _keys(value: Any) -> list[str]:
    return sorted(str(key) for key in value) if isinstance(value, Mapping) else []


def container_config(config: Mapping[str, Any]) -> pb.ContainerConfig:
    labels = config.get("Labels")
    return pb.ContainerConfig(
        env=_strings(config.get("Env")),
        cmd=_strings(config.get("Cmd")),
        entrypoint=_strings(config.get("Entrypoint")),
        working_dir=str(config.get("WorkingDir") or ""),
        user=str(config.get("User") or ""),
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {},
        exposed_ports=_keys(config.get("ExposedPorts")),
        volumes=_keys(config.get("Volumes")),
        stop_signal=str(config.get("StopSignal") or ""),
        shell=_strings(config.get("Shell")),
        on_build=_strings(config.get("OnBuild")),
    )


def inspect_response(
    value: models.ImageDetails, *, include_raw: bool, max_bytes: int | None = None
) -> pb.InspectResponse:
    """What Inspect sends. With ``max_bytes``, labels that would make it larger
    are left out (``labels_truncated``); when it is still too large (raw
    documents, a huge environment), SizeLimitExceeded points at ReadBlob."""
    message = pb.InspectResponse(
        image=image_summary(value.summary),
        author=value.author,
        comment=value.comment,
        config=container_config(value.config),
        diff_ids=value.diff_ids,
        manifest=pb.Descriptor(
            media_type=value.manifest_media_type,
            digest=value.manifest_digest,
            size=len(value.raw_manifest),
        ),
        config_descriptor=descriptor(value.config_descriptor),
        layers=[descriptor(layer) for layer in value.layers],
        last_tag_time=timestamp(value.last_tag_time),
        raw_manifest=value.raw_manifest if include_raw else b"",
        raw_config=value.raw_config if include_raw else b"",
    )
    if max_bytes is None or message.ByteSize() <= max_bytes:
        return message
    message.labels_truncated = message.image.labels_truncated = True
    _fit_labels(message, [message.image.labels, message.config.labels], max_bytes)
    size = message.ByteSize()
    if size > max_bytes:
        what = "its raw manifest and config" if include_raw else "its config"
        raise errors.SizeLimitExceeded(
            f"the description of image {value.summary.id} is {size} bytes, over the server's"
            f" response limit of {max_bytes} (--max-response-bytes) because of {what}:"
            f" read the config {value.config_descriptor.digest} and the manifest"
            f" {value.manifest_digest} with ReadBlob",
            metadata={"limit": "max-response-bytes", "max": str(max_bytes), "size": str(size)},
        )
    return message


def history_entry(value: models.HistoryRow) -> pb.HistoryEntry:
    return pb.HistoryEntry(
        created=timestamp(value.created),
        created_by=value.created_by,
        size=value.size,
        comment=value.comment,
        empty_layer=value.empty_layer,
        layer_digest=value.layer_digest or "",
    )


def remove_result(value: models.RemoveResult, position: int) -> pb.RemoveResult:
    """One requested item's result; its error (at ``images[position]``) as the
    google.rpc.Status a call failing with it would carry."""
    if value.error is not None:
        field = f"images[{position}]" if value.error.status == "INVALID_ARGUMENT" else None
        return pb.RemoveResult(item=value.item, error=status_message(value.error, field))
    return pb.RemoveResult(
        item=value.item,
        untagged=[name(untagged) for untagged in value.untagged],
        deleted_image_ids=value.deleted_images,
        freed_blobs=value.freed_blobs,
    )


def prune_response(value: models.PruneResult, max_bytes: int) -> pb.PruneResponse:
    """Prune's answer in at most ``max_bytes``: the lists are cut when they do not
    fit (image IDs first, then names, then blobs); the counts stay whole."""
    response = pb.PruneResponse(
        reclaimed_bytes=value.reclaimed,
        stale_ingests=value.stale_ingests,
        dry_run=value.dry_run,
        deleted_image_count=len(value.deleted_images),
        untagged_count=len(value.untagged),
        deleted_blob_count=len(value.deleted_blobs),
    )
    untagged = [name(item) for item in value.untagged]
    whole = pb.PruneResponse(
        deleted_image_ids=value.deleted_images, untagged=untagged, deleted_blobs=value.deleted_blobs
    )
    whole.MergeFrom(response)
    if whole.ByteSize() <= max_bytes:
        return whole
    response.truncated = True
    room = max_bytes - response.ByteSize()

    def fits(size: int) -> bool:
        nonlocal room
        room -= 1 + _varint_bytes(size) + size  # one element of a repeated field
        return room >= 0

    for image_id in value.deleted_images:
        if not fits(len(image_id)):
            return response
        response.deleted_image_ids.append(image_id)
    for item in untagged:
        if not fits(item.ByteSize()):
            return response
        response.untagged.append(item)
    for digest in value.deleted_blobs:
        if not fits(len(digest)):
            return response
        response.deleted_blobs.append(digest)
    return response  # not reached: the whole answer did not fit


def disk_usage_response(value: models.DiskUsage) -> pb.DiskUsageResponse:
    """One page of image rows, with the totals."""
    return pb.DiskUsageResponse(
        images=[
            pb.ImageUsage(
                id=image.id,
                repo_tags=[name(tag) for tag in image.repo_tags],
                content_size=image.content_size,
                shared_size=image.shared_size,
                unique_size=image.unique_size,
                created=timestamp(image.created),
            )
            for image in value.images
        ],
        total_size=value.total_size,
        reclaimable=value.reclaimable,
        image_count=value.image_count,
        blob_count=value.blob_count,
        next_page_token=value.next_page_token,
    )


def check_response(value: models.CheckEvent) -> pb.CheckResponse:
    """One message of the Check stream."""
    if isinstance(value, models.CheckProgress):
        return pb.CheckResponse(
            progress=pb.CheckProgress(
                blobs_checked=value.blobs_checked,
                blobs_total=value.blobs_total,
                bytes_checked=value.bytes_checked,
                bytes_total=value.bytes_total,
            )
        )
    if isinstance(value, models.Problem):
        return pb.CheckResponse(
            problem=pb.CheckProblem(kind=value.kind, subject=value.subject, detail=value.detail)
        )
    if isinstance(value, models.UnrecordedBlob):
        return pb.CheckResponse(unrecorded_blob=value.digest)
    return pb.CheckResponse(
        summary=pb.CheckSummary(
            ok=value.ok,
            problems=value.problems,
            blobs_checked=value.blobs_checked,
            images_checked=value.images_checked,
            unrecorded_blobs=value.unrecorded_blobs,
        )
    )


#: a Load member's action -> its phase (the action stays the line's text)
_LOAD_PHASES: dict[str, pb.Phase] = {
    "stored": pb.PHASE_COMPLETE,
    "reused": pb.PHASE_ALREADY_EXISTS,
    "kept": pb.PHASE_SKIPPED,
    "ignored": pb.PHASE_SKIPPED,
}


def load_progress(value: LoadProgress) -> pb.LoadResponse:
    """One archive member handled, under its path."""
    return pb.LoadResponse(
        progress=pb.Progress(
            phase=_LOAD_PHASES.get(value.action, pb.PHASE_UNSPECIFIED),
            text=value.action,
            subject=value.path,
            current=value.bytes_read,
        )
    )


def load_result(images: list[LoadedImage]) -> pb.LoadResponse:
    """The last message of a Load."""
    return pb.LoadResponse(
        result=pb.LoadResult(
            images=[
                pb.LoadedImage(
                    id=image.image_id,
                    names=[image_name(name) for name in image.names],
                    moved=[image_name(name) for name in image.moved],
                    moved_from=image.moved_from,
                )
                for image in images
            ]
        )
    )


#: the domain's phases -> the API's (one entry each: a test holds them equal)
PHASES: dict[Phase, pb.Phase] = {
    Phase.RESOLVING: pb.PHASE_RESOLVING,
    Phase.WAITING: pb.PHASE_WAITING,
    Phase.DOWNLOADING: pb.PHASE_DOWNLOADING,
    Phase.VERIFYING: pb.PHASE_VERIFYING,
    Phase.DOWNLOADED: pb.PHASE_DOWNLOADED,
    Phase.COMPLETE: pb.PHASE_COMPLETE,
    Phase.ALREADY_EXISTS: pb.PHASE_ALREADY_EXISTS,
    Phase.RETRYING: pb.PHASE_RETRYING,
    Phase.PREPARING: pb.PHASE_PREPARING,
    Phase.PUSHING: pb.PHASE_PUSHING,
    Phase.PUSHED: pb.PHASE_PUSHED,
    Phase.EXISTS_REMOTELY: pb.PHASE_EXISTS_REMOTELY,
    Phase.MOUNTED: pb.PHASE_MOUNTED,
    Phase.SKIPPED: pb.PHASE_SKIPPED,
    Phase.SUMMARY: pb.PHASE_SUMMARY,
}


def progress(value: ProgressEvent) -> pb.Progress:
    """A pull's or push's progress line."""
    message = pb.Progress(
        phase=PHASES[value.phase],
        text=value.text,
        blob=descriptor(value.blob) if value.blob is not None else None,
        subject=value.subject,
        current=value.current,
        retry_after=duration(value.retry_after) if value.retry_after is not None else None,
    )
    if value.total is not None:
        message.total = value.total
    return message


def pull_result(value: PullResult) -> pb.PullResponse:
    """The last message of a Pull."""
    return pb.PullResponse(
        result=pb.PullResult(
            name=image_name(value.name),
            digest=value.digest,
            image_ids=value.image_ids,
            updated=value.updated,
            status=value.status,
            tags=[
                pb.PulledTag(
                    name=image_name(tag.name),
                    digest=tag.digest,
                    image_ids=tag.image_ids,
                    updated=tag.updated,
                )
                for tag in value.tags
            ],
        )
    )


def push_result(value: PushResult) -> pb.PushResponse:
    """The last message of a Push."""
    return pb.PushResponse(
        result=pb.PushResult(name=image_name(value.name), digest=value.digest, size=value.size)
    )


def credentials(value: pb.RegistryAuth) -> Credentials:
    return Credentials(
        username=value.username,
        password=value.password,
        identity_token=value.identity_token,
        registry_token=value.registry_token,
    )


@dataclass(frozen=True)
class ServerSetup:
    """What a server runs with, as GetServerInfo reports it (never a secret)."""

    root: str
    catalog: str
    tls: bool
    mutual_tls: bool
    token_auth: bool
    limits: Limits
    max_layer_size: int
    load: LoadLimits
    registry: RegistryOptions


def server_info(setup: ServerSetup, totals: Totals) -> pb.GetServerInfoResponse:
    registry, load = setup.registry, setup.load
    return pb.GetServerInfoResponse(
        server_version=__version__,
        api_version=pb.DESCRIPTOR.package,
        gzip_backend=hashing.backend(),
        catalog=setup.catalog,
        root=setup.root,
        tls=setup.tls,
        mutual_tls=setup.mutual_tls,
        auth_mode=pb.AUTH_MODE_TOKENS if setup.token_auth else pb.AUTH_MODE_NONE,
        image_count=totals.images,
        blob_count=totals.blobs,
        stored_bytes=totals.stored_bytes,
        limits=pb.ServiceLimits(
            max_concurrent_rpcs=setup.limits.max_concurrent_rpcs,
            max_concurrent_streams=setup.limits.max_concurrent_streams,
            max_concurrent_watches=setup.limits.max_concurrent_watches,
            max_response_bytes=setup.limits.max_response_bytes,
            max_layer_size=setup.max_layer_size,
            max_document_bytes=MAX_DOCUMENT_SIZE,
        ),
        load_limits=pb.LoadLimits(
            max_header_bytes=load.tar.max_header_bytes,
            max_name_bytes=load.tar.max_name_bytes,
            max_members=load.tar.max_members,
            max_kept_bytes=load.max_kept_bytes,
            max_expanded_bytes=load.max_expanded_bytes,
        ),
        registry_limits=pb.RegistryLimits(
            max_concurrent_downloads=registry.max_concurrent_downloads,
            max_concurrent_uploads=registry.max_concurrent_uploads,
            attempts=registry.attempts,
            backoff=duration(registry.backoff),
            connect_timeout=duration(registry.connect_timeout),
            idle_timeout=duration(registry.idle_timeout),
            min_speed=registry.min_speed,
            speed_window=duration(registry.speed_window),
            blob_timeout=duration(registry.blob_timeout),
            max_index_children=registry.max_index_children,
            max_manifest_bytes_per_pull=registry.max_manifest_bytes_per_pull,
            max_layers_per_pull=registry.max_layers_per_pull,
            max_concurrent_small_downloads=registry.max_concurrent_small_downloads,
        ),
    )


def stat_blob_response(value: BlobStat) -> pb.StatBlobResponse:
    record = value.record
    return pb.StatBlobResponse(
        blob=pb.Descriptor(media_type=record.media_type, digest=record.digest, size=record.size),
        diff_id=record.diff_id or "",
        uncompressed_size=record.uncompressed_size or 0,
        stored_at=timestamp(record.stored_at),
        referenced=value.referenced,
        image_ids=value.image_ids,
        image_count=value.image_count,
        damaged=value.damage is not None,
        damage=value.damage or "",
    )


_EVENT_KINDS: dict[models.EventKind, pb.EventKind] = {
    kind: pb.EventKind.Value("EVENT_KIND_" + kind.name)  # type: ignore[misc]
    for kind in models.EventKind
}


def event(value: models.Event) -> pb.Event:
    """A journal event as WatchEvents sends it."""
    message = pb.Event(
        cursor=value.cursor,
        time=timestamp(value.time_ns),
        kind=_EVENT_KINDS[value.kind],
        image_id=value.image_id,
        target_digest=value.target_digest,
        labels=value.labels,
        remote=value.remote,
        reclaimed_bytes=value.reclaimed_bytes,
    )
    if value.name is not None:
        message.name.CopyFrom(name(value.name))
    return message
