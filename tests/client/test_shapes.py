"""The client's conversions of the v1 messages, without a server: oneof streams,
Phase, optional totals, names in both forms, platforms as messages, a Remove
item's google.rpc.Status as the domain exception a call would raise, Load's
header."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2

from imagestore import errors
from imagestore.client import (
    CheckProblem,
    CheckProgress,
    CheckSummary,
    Descriptor,
    ImageName,
    Phase,
    Platform,
    UnrecordedBlob,
    convert,
)
from imagestore.client.requests import CHUNK, load_requests
from imagestore.v1 import imagestore_pb2 as pb

DIGEST = "sha256:" + "ab" * 32


def test_platforms_are_parsed_and_sent_as_messages() -> None:
    assert Platform.parse("linux/arm64/v8") == Platform("linux", "arm64", "v8")
    assert str(Platform.parse("windows")) == "windows"
    for bad in ("linux//v8", "linux/arm64/v8/x", "", "/amd64"):
        with pytest.raises(errors.PlatformInvalid) as refused:
            Platform.parse(bad)
        assert refused.value.metadata == {"platform": bad}
    sent = convert.platform_message("linux/arm/v7")
    assert sent == pb.Platform(os="linux", architecture="arm", variant="v7")
    assert convert.platform_message(Platform("linux", "amd64")) == pb.Platform(
        os="linux", architecture="amd64"
    )
    assert convert.platform_message("") is None
    assert convert.platform_message(None) is None


def test_every_phase_of_the_proto_has_a_client_phase() -> None:
    for number in pb.Phase.values():
        message = pb.Progress(phase=number)  # type: ignore[arg-type]
        phase = convert.progress(message).phase
        assert phase.name == pb.Phase.Name(number).removeprefix("PHASE_")
    assert convert.progress(pb.Progress(phase=999)).phase is Phase.UNSPECIFIED  # type: ignore[arg-type]


def test_progress_keeps_its_blob_subject_and_an_unknown_total_apart_from_zero() -> None:
    blob = pb.Descriptor(media_type="application/x", digest=DIGEST, size=10)
    downloading = convert.progress(
        pb.Progress(
            phase=pb.PHASE_DOWNLOADING,
            text="Downloading",
            blob=blob,
            subject=DIGEST[7:19],
            current=4,
            total=10,
        )
    )
    assert downloading.phase is Phase.DOWNLOADING
    assert downloading.blob == Descriptor("application/x", DIGEST, 10)
    assert (downloading.subject, downloading.current, downloading.total) == (DIGEST[7:19], 4, 10)
    assert convert.progress(pb.Progress(phase=pb.PHASE_DOWNLOADING)).total is None
    assert convert.progress(pb.Progress(phase=pb.PHASE_DOWNLOADING, total=0)).total == 0
    summary = convert.progress(pb.Progress(phase=pb.PHASE_SUMMARY, text="Digest: x"))
    assert (summary.blob, summary.subject, summary.retry_after) == (None, "", None)
    retrying = convert.progress(
        pb.Progress(phase=pb.PHASE_RETRYING, retry_after=Duration(seconds=5, nanos=500_000_000))
    )
    assert retrying.retry_after == timedelta(seconds=5.5)


def test_results_carry_names_in_both_forms() -> None:
    redis = pb.ImageName(familiar="redis:7", canonical="docker.io/library/redis:7")
    pulled = convert.pull_result(
        pb.PullResult(
            name=pb.ImageName(familiar="redis", canonical="docker.io/library/redis"),
            updated=True,
            tags=[pb.PulledTag(name=redis, digest=DIGEST, image_ids=["sha256:1"], updated=False)],
        )
    )
    assert pulled.name == ImageName("redis", "docker.io/library/redis")
    assert str(pulled.name) == "redis"
    assert pulled.updated
    assert [(str(t.name), t.name.canonical, t.updated) for t in pulled.tags] == [
        ("redis:7", "docker.io/library/redis:7", False)
    ]
    pushed = convert.push_result(pb.PushResult(name=redis, digest=DIGEST, size=7))
    assert (pushed.name.canonical, pushed.digest, pushed.size) == (redis.canonical, DIGEST, 7)
    loaded = convert.load_result(
        pb.LoadResult(images=[pb.LoadedImage(id="sha256:1", names=[redis], moved=[redis])])
    )
    assert loaded.images[0].names == loaded.images[0].moved == (ImageName(*_forms(redis)),)


def _forms(name: pb.ImageName) -> tuple[str, str]:
    return name.familiar, name.canonical


def test_index_children_come_with_the_image() -> None:
    manifest = pb.Descriptor(digest=DIGEST, size=3)
    summary = pb.ImageSummary(
        id="sha256:1",
        indexes=[
            pb.NamedIndex(
                name=pb.ImageName(familiar="app:1", canonical="docker.io/library/app:1"),
                index=pb.Descriptor(digest="sha256:" + "cd" * 32, size=9),
                children=[
                    pb.IndexChild(
                        platform=pb.Platform(os="linux", architecture="amd64"),
                        manifest=manifest,
                        present=True,
                        image_id="sha256:1",
                    ),
                    pb.IndexChild(manifest=manifest),
                ],
            )
        ],
    )
    [index] = convert.image(summary).indexes
    assert str(index.name) == "app:1"
    assert [(c.platform, c.present, c.image_id) for c in index.children] == [
        (Platform("linux", "amd64"), True, "sha256:1"),
        (None, False, ""),
    ]


def test_a_remove_items_error_is_the_exception_the_call_would_raise() -> None:
    info = error_details_pb2.ErrorInfo(
        reason="IMAGE_NOT_FOUND", domain="imagestore", metadata={"image": "nope:latest"}
    )
    about = error_details_pb2.ResourceInfo(resource_type="image", resource_name="nope:latest")
    status = status_pb2.Status(code=code_pb2.NOT_FOUND, message="No such image: nope:latest")
    status.details.add().Pack(info)
    status.details.add().Pack(about)
    failed = convert.remove_result(pb.RemoveResult(item="nope", error=status))
    assert not failed.ok
    assert isinstance(failed.error, errors.ImageNotFound)
    assert failed.error.message == "No such image: nope:latest"
    assert failed.error.metadata == {"image": "nope:latest"}
    assert failed.error.resource == errors.Resource("image", "nope:latest", "")
    assert (failed.untagged, failed.deleted_image_ids) == ((), ())

    unknown = status_pb2.Status(code=code_pb2.FAILED_PRECONDITION, message="later")
    unknown.details.add().Pack(error_details_pb2.ErrorInfo(reason="A_NEWER_REASON"))
    newer = convert.remove_result(pb.RemoveResult(item="x", error=unknown)).error
    assert isinstance(newer, errors.FailedPrecondition)
    assert newer.reason == "A_NEWER_REASON"

    done = convert.remove_result(
        pb.RemoveResult(
            item="app:1",
            untagged=[pb.ImageName(familiar="app:1", canonical="docker.io/library/app:1")],
            deleted_image_ids=["sha256:1"],
            freed_blobs=[DIGEST],
        )
    )
    assert done.ok
    assert (done.untagged[0].familiar, done.deleted_image_ids, done.freed_blobs) == (
        "app:1",
        ("sha256:1",),
        (DIGEST,),
    )


def test_check_messages_by_kind() -> None:
    events = [
        convert.check_event(message)
        for message in (
            pb.CheckResponse(progress=pb.CheckProgress(blobs_checked=1, blobs_total=2)),
            pb.CheckResponse(problem=pb.CheckProblem(kind="corrupt-blob", subject=DIGEST)),
            pb.CheckResponse(unrecorded_blob=DIGEST),
            pb.CheckResponse(summary=pb.CheckSummary(ok=False, problems=1, blobs_checked=2)),
            pb.CheckResponse(),  # a kind this client does not know
        )
    ]
    assert events == [
        CheckProgress(1, 2, 0, 0),
        CheckProblem("corrupt-blob", DIGEST, ""),
        UnrecordedBlob(DIGEST),
        CheckSummary(False, 1, 2, 0, 0),
        None,
    ]


def test_load_sends_a_header_when_the_size_is_known(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar"
    archive.write_bytes(b"x" * (CHUNK + 5))
    with archive.open("rb") as handle:
        sent = list(load_requests(handle))
    assert [m.WhichOneof("request") for m in sent] == ["header", "chunk", "chunk"]
    assert sent[0].header.declared_size == CHUNK + 5
    with archive.open("rb") as handle:
        handle.seek(5)  # what is left of it is what will be sent
        assert next(iter(load_requests(handle))).header.declared_size == CHUNK
    unknown = list(load_requests(io.BytesIO(b"y" * 10)))
    assert [(m.WhichOneof("request"), m.chunk) for m in unknown] == [("chunk", b"y" * 10)]
