"""Protobuf messages → the client's dataclasses (and gRPC errors → domain errors,
by :mod:`imagestore.client.failures`, imported once a call fails)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import grpc

from imagestore.client import models
from imagestore.v1 import imagestore_pb2 as pb

if TYPE_CHECKING:
    from google.rpc import status_pb2

    from imagestore import errors


def _time(value: Any, present: bool) -> datetime | None:
    if not present:
        return None
    return datetime.fromtimestamp(value.seconds + value.nanos / 1e9, UTC)


def platform(value: pb.Platform) -> models.Platform:
    """A Platform message as the client's Platform."""
    return models.Platform(value.os, value.architecture, value.variant)


def platform_message(value: str | models.Platform | None) -> pb.Platform | None:
    """A platform as a request carries it: "os/arch[/variant]" or a Platform;
    None or "" for none."""
    if not value:
        return None
    chosen = models.Platform.parse(value) if isinstance(value, str) else value
    return pb.Platform(os=chosen.os, architecture=chosen.architecture, variant=chosen.variant)


def name(value: pb.ImageName) -> models.ImageName:
    """A name in both its forms."""
    return models.ImageName(value.familiar, value.canonical)


def names(values: Iterable[pb.ImageName]) -> tuple[models.ImageName, ...]:
    """Names in both their forms, in order."""
    return tuple(name(v) for v in values)


def named_index(value: pb.NamedIndex) -> models.NamedIndex:
    """A name on a multi-platform index, with every child it lists."""
    return models.NamedIndex(
        name=name(value.name),
        index=descriptor(value.index),
        children=tuple(
            models.IndexChild(
                platform=platform(c.platform) if c.HasField("platform") else None,
                manifest=descriptor(c.manifest),
                present=c.present,
                image_id=c.image_id,
            )
            for c in value.children
        ),
    )


def image(value: pb.ImageSummary) -> models.Image:
    """One image as ListImages and Inspect summarise it."""
    return models.Image(
        id=value.id,
        repo_tags=names(value.repo_tags),
        repo_digests=names(value.repo_digests),
        created=_time(value.created, value.HasField("created")),
        size=value.size,
        content_size=value.content_size,
        labels=dict(value.labels),
        platform=platform(value.platform),
        stored_at=_time(value.stored_at, value.HasField("stored_at")),
        labels_truncated=value.labels_truncated,
        indexes=tuple(named_index(i) for i in value.indexes),
    )


def descriptor(value: pb.Descriptor) -> models.Descriptor:
    """A blob's media type, digest and size."""
    return models.Descriptor(value.media_type, value.digest, value.size)


def details(value: pb.InspectResponse) -> models.ImageDetails:
    """An Inspect answer."""
    config = value.config
    return models.ImageDetails(
        image=image(value.image),
        author=value.author,
        comment=value.comment,
        config=models.ContainerConfig(
            env=tuple(config.env),
            cmd=tuple(config.cmd),
            entrypoint=tuple(config.entrypoint),
            working_dir=config.working_dir,
            user=config.user,
            labels=dict(config.labels),
            exposed_ports=tuple(config.exposed_ports),
            volumes=tuple(config.volumes),
            stop_signal=config.stop_signal,
            shell=tuple(config.shell),
            on_build=tuple(config.on_build),
        ),
        diff_ids=tuple(value.diff_ids),
        manifest=descriptor(value.manifest),
        config_descriptor=descriptor(value.config_descriptor),
        layers=tuple(descriptor(d) for d in value.layers),
        last_tag_time=_time(value.last_tag_time, value.HasField("last_tag_time")),
        raw_manifest=value.raw_manifest,
        raw_config=value.raw_config,
    )


def history_entry(value: pb.HistoryEntry) -> models.HistoryEntry:
    """One History row."""
    return models.HistoryEntry(
        created=_time(value.created, value.HasField("created")),
        created_by=value.created_by,
        size=value.size,
        comment=value.comment,
        empty_layer=value.empty_layer,
        layer_digest=value.layer_digest,
    )


def tag_result(value: pb.TagResponse) -> models.TagResult:
    """A Tag answer."""
    return models.TagResult(
        name(value.target), tuple(value.image_ids), tuple(value.displaced_image_ids)
    )


def remove_result(value: pb.RemoveResult) -> models.RemoveResult:
    """One Remove item, its error as the exception a failed call would raise."""
    failed = value.HasField("error") and value.error.code != grpc.StatusCode.OK.value[0]
    return models.RemoveResult(
        item=value.item,
        untagged=names(value.untagged),
        deleted_image_ids=tuple(value.deleted_image_ids),
        freed_blobs=tuple(value.freed_blobs),
        error=status_error(value.error) if failed else None,
    )


def prune_result(value: pb.PruneResponse) -> models.PruneResult:
    """A Prune answer."""
    return models.PruneResult(
        tuple(value.deleted_image_ids),
        names(value.untagged),
        tuple(value.deleted_blobs),
        value.reclaimed_bytes,
        value.stale_ingests,
        value.dry_run,
        value.deleted_image_count,
        value.untagged_count,
        value.deleted_blob_count,
        value.truncated,
    )


def disk_usage(value: pb.DiskUsageResponse) -> models.DiskUsage:
    """One DiskUsage page."""
    return models.DiskUsage(
        images=tuple(
            models.ImageUsage(
                u.id,
                names(u.repo_tags),
                u.content_size,
                u.shared_size,
                u.unique_size,
                _time(u.created, u.HasField("created")),
            )
            for u in value.images
        ),
        total_size=value.total_size,
        reclaimable=value.reclaimable,
        image_count=value.image_count,
        blob_count=value.blob_count,
        next_page_token=value.next_page_token,
    )


def check_event(value: pb.CheckResponse) -> models.CheckEvent | None:
    """One message of the Check stream; None for a kind this client does not know."""
    kind = value.WhichOneof("response")
    if kind == "progress":
        done = value.progress
        return models.CheckProgress(
            done.blobs_checked, done.blobs_total, done.bytes_checked, done.bytes_total
        )
    if kind == "problem":
        return models.CheckProblem(value.problem.kind, value.problem.subject, value.problem.detail)
    if kind == "unrecorded_blob":
        return models.UnrecordedBlob(value.unrecorded_blob)
    if kind == "summary":
        end = value.summary
        return models.CheckSummary(
            end.ok, end.problems, end.blobs_checked, end.images_checked, end.unrecorded_blobs
        )
    return None


def blob_stat(value: pb.StatBlobResponse) -> models.BlobStat:
    """A StatBlob answer."""
    return models.BlobStat(
        blob=descriptor(value.blob),
        diff_id=value.diff_id,
        uncompressed_size=value.uncompressed_size,
        stored_at=_time(value.stored_at, value.HasField("stored_at")),
        referenced=value.referenced,
        image_ids=tuple(value.image_ids),
        image_count=value.image_count,
        damaged=value.damaged,
        damage=value.damage,
    )


#: AuthMode values as the client spells them
_AUTH_MODES = {pb.AUTH_MODE_NONE: "none", pb.AUTH_MODE_TOKENS: "tokens"}


def server_info(value: pb.GetServerInfoResponse) -> models.ServerInfo:
    """A GetServerInfo answer."""
    limits, load, registry = value.limits, value.load_limits, value.registry_limits
    return models.ServerInfo(
        server_version=value.server_version,
        api_version=value.api_version,
        gzip_backend=value.gzip_backend,
        catalog=value.catalog,
        root=value.root,
        tls=value.tls,
        mutual_tls=value.mutual_tls,
        auth_mode=_AUTH_MODES.get(value.auth_mode, ""),
        image_count=value.image_count,
        blob_count=value.blob_count,
        stored_bytes=value.stored_bytes,
        limits=models.ServiceLimits(
            max_concurrent_rpcs=limits.max_concurrent_rpcs,
            max_concurrent_streams=limits.max_concurrent_streams,
            max_response_bytes=limits.max_response_bytes,
            max_layer_size=limits.max_layer_size,
            max_document_bytes=limits.max_document_bytes,
            max_concurrent_watches=limits.max_concurrent_watches,
        ),
        load_limits=models.LoadLimits(
            max_header_bytes=load.max_header_bytes,
            max_name_bytes=load.max_name_bytes,
            max_members=load.max_members,
            max_kept_bytes=load.max_kept_bytes,
            max_expanded_bytes=load.max_expanded_bytes,
        ),
        registry_limits=models.RegistryLimits(
            max_concurrent_downloads=registry.max_concurrent_downloads,
            max_concurrent_uploads=registry.max_concurrent_uploads,
            attempts=registry.attempts,
            backoff=registry.backoff.ToTimedelta(),
            connect_timeout=registry.connect_timeout.ToTimedelta(),
            idle_timeout=registry.idle_timeout.ToTimedelta(),
            min_speed=registry.min_speed,
            speed_window=registry.speed_window.ToTimedelta(),
            blob_timeout=registry.blob_timeout.ToTimedelta(),
            max_index_children=registry.max_index_children,
            max_manifest_bytes_per_pull=registry.max_manifest_bytes_per_pull,
            max_layers_per_pull=registry.max_layers_per_pull,
            max_concurrent_small_downloads=registry.max_concurrent_small_downloads,
        ),
    )


def _phase(value: int) -> models.Phase:
    try:
        return models.Phase[pb.Phase.Name(value).removeprefix("PHASE_")]
    except (KeyError, ValueError):  # a phase newer than this client
        return models.Phase.UNSPECIFIED


def progress(value: pb.Progress) -> models.Progress:
    """One progress message of Pull, Push or Load."""
    return models.Progress(
        phase=_phase(value.phase),
        text=value.text,
        blob=descriptor(value.blob) if value.HasField("blob") else None,
        subject=value.subject,
        current=value.current,
        total=value.total if value.HasField("total") else None,
        retry_after=(value.retry_after.ToTimedelta() if value.HasField("retry_after") else None),
    )


def pull_result(value: pb.PullResult) -> models.PullResult:
    """The last message of a Pull."""
    return models.PullResult(
        name=name(value.name),
        digest=value.digest,
        image_ids=tuple(value.image_ids),
        updated=value.updated,
        status=value.status,
        tags=tuple(
            models.PulledTag(name(t.name), t.digest, tuple(t.image_ids), t.updated)
            for t in value.tags
        ),
    )


def push_result(value: pb.PushResult) -> models.PushResult:
    """The last message of a Push."""
    return models.PushResult(name(value.name), value.digest, value.size)


def load_result(value: pb.LoadResult) -> models.LoadResult:
    """The last message of a Load."""
    return models.LoadResult(
        tuple(
            models.LoadedImage(i.id, names(i.names), names(i.moved), tuple(i.moved_from))
            for i in value.images
        )
    )


def _event_kind(value: int) -> models.EventKind:
    try:
        return models.EventKind[pb.EventKind.Name(value).removeprefix("EVENT_KIND_")]
    except (KeyError, ValueError):  # a kind newer than this client
        return models.EventKind.UNSPECIFIED


def event(value: pb.Event) -> models.Event:
    """One journal event of the WatchEvents stream."""
    return models.Event(
        cursor=value.cursor,
        time=_time(value.time, value.HasField("time")),
        kind=_event_kind(value.kind),
        image_id=value.image_id,
        name=name(value.name) if value.HasField("name") else None,
        target_digest=value.target_digest,
        labels=dict(value.labels),
        remote=value.remote,
        reclaimed_bytes=value.reclaimed_bytes,
    )


def auth(value: models.RegistryAuth | None) -> pb.RegistryAuth | None:
    """Registry credentials as a request carries them (None: anonymous)."""
    if value is None:
        return None
    return pb.RegistryAuth(
        username=value.username,
        password=value.password,
        identity_token=value.identity_token,
        registry_token=value.registry_token,
    )


# ---- errors ------------------------------------------------------------------


def error(failure: grpc.RpcError) -> errors.ImageStoreError:
    """The domain exception a failed call stands for (:func:`failures.error`)."""
    from imagestore.client import failures  # loaded once a call has failed

    return failures.error(failure)


def status_error(status: status_pb2.Status) -> errors.ImageStoreError:
    """The domain exception a ``google.rpc.Status`` stands for
    (:func:`failures.status_error`)."""
    from imagestore.client import failures

    return failures.status_error(status)
