"""Protobuf messages and gRPC errors → the client's dataclasses and domain errors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from imagestore import errors
from imagestore.client import models
from imagestore.v1 import imagestore_pb2 as pb


def _time(value: Any, present: bool) -> datetime | None:
    if not present:
        return None
    return datetime.fromtimestamp(value.seconds + value.nanos / 1e9, UTC)


def platform(value: pb.Platform) -> models.Platform:
    return models.Platform(value.os, value.architecture, value.variant)


def image(value: pb.ImageSummary) -> models.Image:
    return models.Image(
        id=value.id,
        repo_tags=tuple(value.repo_tags),
        repo_digests=tuple(value.repo_digests),
        created=_time(value.created, value.HasField("created")),
        size=value.size,
        content_size=value.content_size,
        labels=dict(value.labels),
        platform=platform(value.platform),
        stored_at=_time(value.stored_at, value.HasField("stored_at")),
        labels_truncated=value.labels_truncated,
    )


def descriptor(value: pb.Descriptor) -> models.Descriptor:
    return models.Descriptor(value.media_type, value.digest, value.size)


def details(value: pb.InspectResponse) -> models.ImageDetails:
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
    return models.HistoryEntry(
        created=_time(value.created, value.HasField("created")),
        created_by=value.created_by,
        size=value.size,
        comment=value.comment,
        empty_layer=value.empty_layer,
        layer_digest=value.layer_digest,
    )


def remove_event(value: pb.RemoveEvent) -> models.RemoveEvent:
    if value.untagged:
        return models.RemoveEvent("untagged", value.untagged)
    return models.RemoveEvent("deleted", value.deleted)


def prune_result(value: pb.PruneResponse) -> models.PruneResult:
    return models.PruneResult(
        tuple(value.deleted_image_ids),
        tuple(value.untagged),
        tuple(value.deleted_blobs),
        value.reclaimed_bytes,
        value.stale_ingests,
        value.dry_run,
    )


def disk_usage(value: pb.DiskUsageResponse) -> models.DiskUsage:
    return models.DiskUsage(
        images=tuple(
            models.ImageUsage(
                u.id,
                tuple(u.repo_tags),
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
    )


def check_report(value: pb.CheckResponse) -> models.CheckReport:
    return models.CheckReport(
        ok=value.ok,
        problems=tuple(models.CheckProblem(p.kind, p.subject, p.detail) for p in value.problems),
        blobs_checked=value.blobs_checked,
        images_checked=value.images_checked,
        unrecorded_blobs=tuple(value.unrecorded_blobs),
    )


def blob_stat(value: pb.StatBlobResponse) -> models.BlobStat:
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
        ),
    )


def progress(value: pb.Progress) -> models.Progress:
    return models.Progress(value.id, value.status, value.current, value.total)


def loaded(value: pb.LoadResponse) -> models.LoadResult:
    return models.LoadResult(
        tuple(models.LoadedImage(i.id, tuple(i.names), tuple(i.moved)) for i in value.images)
    )


def auth(value: models.RegistryAuth | None) -> pb.RegistryAuth | None:
    if value is None:
        return None
    return pb.RegistryAuth(
        username=value.username,
        password=value.password,
        identity_token=value.identity_token,
        registry_token=value.registry_token,
    )


# ---- errors ------------------------------------------------------------------


def _classes(base: type[errors.ImageStoreError]) -> list[type[errors.ImageStoreError]]:
    found = [base]
    for sub in base.__subclasses__():
        found += _classes(sub)
    return found


#: the class of each reason (each names one; the base class and the reasonless
#: client-side classes are left out)
_BY_REASON = {cls.reason: cls for cls in _classes(errors.ImageStoreError)[1:] if cls.reason}
#: the category classes, by status code (for a reason this client does not know)
_BY_STATUS = {cls.status: cls for cls in errors.ImageStoreError.__subclasses__()}


def error(failure: grpc.RpcError) -> errors.ImageStoreError:
    """The domain exception a failed call stands for: by its ErrorInfo reason
    when the server sent one, else by status code. It holds what the server
    sent: ``reason`` (as sent; "" without an ErrorInfo), ``metadata``,
    ``retry_after`` (RetryInfo), ``field`` (BadRequest) and ``resource``
    (ResourceInfo)."""
    call: Any = failure
    code: grpc.StatusCode = call.code()
    message = call.details() or code.name.lower().replace("_", " ")
    reason, metadata = "", {}
    retry_after: float | None = None
    field: str | None = None
    resource: errors.Resource | None = None
    status = rpc_status.from_call(call)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        retry = error_details_pb2.RetryInfo()
        bad = error_details_pb2.BadRequest()
        about = error_details_pb2.ResourceInfo()
        if detail.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Unpack(retry):
            retry_after = retry.retry_delay.ToNanoseconds() / 1e9
        elif detail.Unpack(bad) and bad.field_violations:
            field = bad.field_violations[0].field
        elif detail.Unpack(about):
            resource = errors.Resource(about.resource_type, about.resource_name, about.owner)
    cls = _BY_REASON.get(reason) or _BY_STATUS.get(code.name) or errors.Internal
    if cls.status != code.name:  # a reason of another category: trust the code
        cls = _BY_STATUS.get(code.name, errors.Internal)
    exception = cls(message, metadata=metadata, resource=resource)
    exception.status = code.name
    if reason != cls.reason:  # one this client does not know, or none: as sent
        exception.reason = reason
    # as sent, not the class defaults
    exception.retry_after = retry_after
    exception.field = field
    return exception
