"""Every RPC through the generated stubs against the real server process."""

from __future__ import annotations

import io
import json
import random
import tarfile
import threading
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from imagestore import errors
from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc

from tests.api.conftest import Server, wait_until
from tests.archives import ImageSpec, docker_archive, sha
from tests.store.builders import layer_tar

Stub = pb_grpc.ImageStoreServiceStub
BASE = layer_tar({"etc/os-release": b"ID=test\n"})


def load_requests(
    archive: bytes, size: int = 1 << 20, declared: int = 0
) -> Iterator[pb.LoadRequest]:
    for start in range(0, len(archive), size):
        yield pb.LoadRequest(
            chunk=archive[start : start + size], declared_size=declared if start == 0 else 0
        )


def load(stub: Stub, *images: ImageSpec) -> pb.LoadResponse:
    responses: list[pb.LoadResponse] = list(stub.Load(load_requests(docker_archive(*images))))
    assert responses[-1].images, responses
    return responses[-1]


def app(n: int, *tags: str, **options: object) -> ImageSpec:
    return ImageSpec(tags=tags, layers=[BASE, layer_tar({"app": str(n).encode() * 100})], **options)  # type: ignore[arg-type]


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    """The google.rpc.ErrorInfo the server attached."""
    trailers: dict[str, Any] = dict(error.trailing_metadata() or ())  # type: ignore[arg-type]
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.domain == "imagestore"
    return info


def test_health_answers_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "imagestore.v1.ImageStoreService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_load_list_inspect_history(stub: Stub) -> None:
    image = app(1, "web:1", "web:latest", labels={"team": "a"})
    loaded = load(stub, image)
    assert [(i.id, sorted(i.names)) for i in loaded.images] == [
        (image.image_id, ["web:1", "web:latest"])
    ]

    listed = stub.ListImages(pb.ListImagesRequest())
    assert [i.id for i in listed.images] == [image.image_id]
    row = listed.images[0]
    assert list(row.repo_tags) == ["web:1", "web:latest"]
    assert row.size == sum(len(layer) for layer in image.layers)
    assert row.created.ToJsonString() == "2024-05-06T07:08:09Z"
    assert dict(row.labels) == {"team": "a"}
    assert row.platform.architecture == "amd64"

    details = stub.Inspect(pb.InspectRequest(image="web:1", include_raw=True))
    assert details.image.id == image.image_id
    assert list(details.diff_ids) == [sha(layer) for layer in image.layers]
    assert list(details.config.cmd) == ["/bin/app"]
    assert json.loads(details.raw_config) == json.loads(image.config())
    assert details.manifest.digest == sha(details.raw_manifest)
    assert len(details.layers) == 2
    without_raw = stub.Inspect(pb.InspectRequest(image=image.image_id[7:19]))
    assert without_raw.raw_manifest == b""
    assert without_raw.image.id == image.image_id

    history = stub.History(pb.HistoryRequest(image="web:1"))
    assert [e.created_by for e in history.entries] == ["COPY layer1 /", "COPY layer0 /"]
    assert history.entries[0].layer_digest == details.layers[1].digest


def test_tag_remove_prune_disk_usage_check(stub: Stub) -> None:
    old = app(1, "web:1")
    new = app(2, "web:2")
    load(stub, old, new)
    tagged = stub.Tag(pb.TagRequest(source="web:2", target="web:1"))
    assert list(tagged.displaced_image_ids) == [old.image_id]
    usage = stub.DiskUsage(pb.DiskUsageRequest())
    assert usage.image_count == 2
    assert usage.reclaimable > 0
    dry = stub.Prune(pb.PruneRequest(dry_run=True))
    assert list(dry.deleted_image_ids) == [old.image_id]
    assert dry.reclaimed_bytes == usage.reclaimable
    assert dry.dry_run
    pruned = stub.Prune(pb.PruneRequest())
    assert list(pruned.deleted_image_ids) == [old.image_id]
    assert not pruned.dry_run
    assert pruned.reclaimed_bytes == dry.reclaimed_bytes
    removed = stub.Remove(pb.RemoveRequest(images=["web:1"]))
    assert [e.untagged for e in removed.events if e.untagged] == ["web:1"]
    assert stub.Check(pb.CheckRequest()).ok
    gone = stub.Remove(pb.RemoveRequest(images=["web:2"]))
    assert next(e.deleted for e in gone.events if e.deleted) == new.image_id
    final = stub.DiskUsage(pb.DiskUsageRequest())
    assert (final.image_count, final.total_size) == (0, 0)


def test_save_streams_an_archive_that_loads_back(stub: Stub) -> None:
    image = app(7, "keep:1")
    load(stub, image)
    chunks = [r.chunk for r in stub.Save(pb.SaveRequest(images=["keep:1"]))]
    assert all(len(c) <= 1 << 20 for c in chunks)
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert {"oci-layout", "index.json"} <= set(names)
    assert manifest[0]["RepoTags"] == ["keep:1"]
    assert manifest[0]["Config"] == f"blobs/sha256/{image.image_id[7:]}"
    stub.Remove(pb.RemoveRequest(images=["keep:1"]))
    again = list(stub.Load(load_requests(b"".join(chunks))))
    assert again[-1].images[0].id == image.image_id


def test_read_blob_with_offset_and_limit(stub: Stub) -> None:
    load(stub, app(3, "b:1"))
    details = stub.Inspect(pb.InspectRequest(image="b:1", include_raw=True))
    config = b"".join(r.chunk for r in stub.ReadBlob(pb.ReadBlobRequest(digest=details.image.id)))
    assert config == details.raw_config
    part = list(stub.ReadBlob(pb.ReadBlobRequest(digest=details.image.id, offset=5, limit=7)))
    assert [(r.offset, r.chunk) for r in part] == [(5, details.raw_config[5:12])]


def _offsets_hold(messages: list[pb.ReadBlobResponse], start: int) -> bool:
    """Each message's offset is where the one before it ended, from ``start``."""
    expected = [start]
    for message in messages[:-1]:
        expected.append(expected[-1] + len(message.chunk))
    return [m.offset for m in messages] == expected


def test_read_blob_messages_carry_their_offsets(stub: Stub, server: Server) -> None:
    noise = random.Random(13).randbytes(5 << 19)  # incompressible: 2.5 MiB stored, 3 chunks
    load(stub, ImageSpec(["noise:1"], [layer_tar({"noise": noise})]))
    layer = stub.Inspect(pb.InspectRequest(image="noise:1")).layers[0]
    stored = (server.root / "blobs" / "sha256" / layer.digest[7:]).read_bytes()
    whole = list(stub.ReadBlob(pb.ReadBlobRequest(digest=layer.digest)))
    assert len(whole) == 3
    assert _offsets_hold(whole, 0)
    assert b"".join(m.chunk for m in whole) == stored
    start = 1_500_001
    tail = list(stub.ReadBlob(pb.ReadBlobRequest(digest=layer.digest, offset=start)))
    assert _offsets_hold(tail, start)
    assert b"".join(m.chunk for m in tail) == stored[start:]
    window = list(
        stub.ReadBlob(pb.ReadBlobRequest(digest=layer.digest, offset=start, limit=1 << 20))
    )
    assert _offsets_hold(window, start)
    assert b"".join(m.chunk for m in window) == stored[start : start + (1 << 20)]


def test_read_blob_at_and_past_the_end_follows_bytestream(stub: Stub) -> None:
    load(stub, app(4, "e:1"))
    config = stub.Inspect(pb.InspectRequest(image="e:1")).config_descriptor
    # At the end: nothing to read, and no error (google.bytestream's Read).
    assert list(stub.ReadBlob(pb.ReadBlobRequest(digest=config.digest, offset=config.size))) == []
    last = list(stub.ReadBlob(pb.ReadBlobRequest(digest=config.digest, offset=config.size - 1)))
    assert [m.offset for m in last] == [config.size - 1]
    # Past the end: OUT_OF_RANGE, as in google.bytestream.
    past = config.size + 1
    with pytest.raises(grpc.RpcError) as failure:
        list(stub.ReadBlob(pb.ReadBlobRequest(digest=config.digest, offset=past)))
    assert failure.value.code() == grpc.StatusCode.OUT_OF_RANGE
    info = error_info(failure.value)
    assert info.reason == errors.OutOfRange.reason
    assert dict(info.metadata) == {
        "digest": config.digest,
        "offset": str(past),
        "size": str(config.size),
    }
    assert f"offset {past} is past the end" in str(failure.value.details())
    # A negative offset is malformed whatever the blob: INVALID_ARGUMENT.
    with pytest.raises(grpc.RpcError) as failure:
        list(stub.ReadBlob(pb.ReadBlobRequest(digest=config.digest, offset=-1)))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_pagination_edges(stub: Stub) -> None:
    images = [app(i, f"p:{i}", created=f"2020-01-0{i + 1}T00:00:00Z") for i in range(5)]
    load(stub, *images)
    seen, token = [], ""
    while True:
        page = stub.ListImages(pb.ListImagesRequest(page_size=2, page_token=token))
        seen += [i.id for i in page.images]
        token = page.next_page_token
        if not token:
            break
    assert seen == [i.image_id for i in reversed(images)]
    assert len(stub.ListImages(pb.ListImagesRequest(page_size=100000)).images) == 5
    assert stub.ListImages(pb.ListImagesRequest(page_size=5)).next_page_token == ""


Code = grpc.StatusCode
ERROR_CASES = [
    (lambda s, _: s.Inspect(pb.InspectRequest(image="nothere")), Code.NOT_FOUND, "IMAGE_NOT_FOUND"),
    (
        lambda s, _: s.Tag(pb.TagRequest(source="x:1", target="Bad:Name")),
        Code.INVALID_ARGUMENT,
        "REFERENCE_INVALID",
    ),
    (
        lambda s, _: s.ListImages(pb.ListImagesRequest(filters=["color=red"])),
        Code.INVALID_ARGUMENT,
        "FILTER_INVALID",
    ),
    (
        lambda s, _: s.ListImages(pb.ListImagesRequest(page_token="junk!")),
        Code.INVALID_ARGUMENT,
        "PAGE_TOKEN_INVALID",
    ),
    (
        lambda s, _: list(s.ReadBlob(pb.ReadBlobRequest(digest="md5:abc"))),
        Code.INVALID_ARGUMENT,
        "DIGEST_INVALID",
    ),
    (
        lambda s, _: list(s.ReadBlob(pb.ReadBlobRequest(digest="sha256:" + "0" * 64))),
        Code.NOT_FOUND,
        "BLOB_NOT_FOUND",
    ),
    (
        lambda s, image_id: s.Remove(pb.RemoveRequest(images=[image_id])),
        Code.FAILED_PRECONDITION,
        "REMOVE_CONFLICT",
    ),
    (
        lambda s, _: list(s.Load(load_requests(b"not a tar" * 100))),
        Code.INVALID_ARGUMENT,
        "MALFORMED_CONTENT",
    ),
    (
        lambda s, _: list(s.Load(load_requests(b"x", declared=1 << 60))),
        Code.RESOURCE_EXHAUSTED,
        "DISK_FULL",
    ),
    (
        lambda s, _: s.Prune(pb.PruneRequest(filters=["until="])),
        Code.INVALID_ARGUMENT,
        "FILTER_INVALID",
    ),
]


@pytest.mark.parametrize(("call", "code", "reason"), ERROR_CASES)
def test_errors_carry_their_code_and_error_info(
    stub: Stub, call: Callable[[Stub, str], object], code: grpc.StatusCode, reason: str
) -> None:
    load(stub, app(1, "x:1", "y:1"))  # two repositories: Remove by ID needs force
    image_id = stub.Inspect(pb.InspectRequest(image="x:1")).image.id
    with pytest.raises(grpc.RpcError) as failure:
        call(stub, image_id)
    assert failure.value.code() == code
    assert error_info(failure.value).reason == reason


def test_an_ambiguous_prefix_names_its_candidates(stub: Stub) -> None:
    images = [app(i, f"a:{i}") for i in range(40)]
    load(stub, *images)
    firsts: dict[str, int] = {}
    for image in images:
        firsts[image.image_id[7]] = firsts.get(image.image_id[7], 0) + 1
    shared = next(k for k, n in firsts.items() if n > 1)
    with pytest.raises(grpc.RpcError) as failure:
        stub.Inspect(pb.InspectRequest(image=f"sha256:{shared}"))
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ambiguous" in str(failure.value.details())
    assert error_info(failure.value).metadata["candidates"]


def test_corrupt_content_is_data_loss(stub: Stub, server: Server) -> None:
    load(stub, app(1, "c:1"))
    layer = stub.Inspect(pb.InspectRequest(image="c:1")).layers[1].digest
    path = server.root / "blobs" / "sha256" / layer[7:]
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    with pytest.raises(grpc.RpcError) as failure:
        list(stub.ReadBlob(pb.ReadBlobRequest(digest=layer)))
    assert failure.value.code() == grpc.StatusCode.DATA_LOSS
    with pytest.raises(grpc.RpcError) as failure:
        list(stub.Save(pb.SaveRequest(images=["c:1"])))
    assert failure.value.code() == grpc.StatusCode.DATA_LOSS
    report = stub.Check(pb.CheckRequest())
    assert not report.ok
    assert [(p.kind, p.subject) for p in report.problems] == [("corrupt-blob", layer)]


def test_a_cancelled_load_leaves_nothing_after_prune(stub: Stub) -> None:
    archive = docker_archive(
        app(1, "big:1", created="2024-01-01T00:00:00Z"),
        ImageSpec(["z:1"], [layer_tar({"z": bytes(3 << 20)})]),
    )
    sent = threading.Event()

    def requests() -> Iterator[pb.LoadRequest]:
        yield pb.LoadRequest(chunk=archive[: len(archive) // 2])
        sent.set()
        threading.Event().wait(30)  # hold the stream open until cancelled

    call = stub.Load(requests())
    sent.wait(10)
    next(call, None)  # at least one progress message came back: the server is mid-load
    call.cancel()

    def emptied() -> bool:
        # The server finishes the cancelled load on its side (its lease ends
        # and takes the blobs it stored); then a prune leaves nothing.
        stub.Prune(pb.PruneRequest())
        usage = stub.DiskUsage(pb.DiskUsageRequest())
        return (usage.image_count, usage.blob_count) == (0, 0)

    wait_until(emptied)
    assert stub.Check(pb.CheckRequest()).ok


def test_a_cancelled_save_leaves_the_store_whole(stub: Stub) -> None:
    load(stub, ImageSpec(["big:1"], [layer_tar({"big": bytes(range(256)) * 20_000})]))
    call = stub.Save(pb.SaveRequest(images=["big:1"]))
    next(call)
    call.cancel()
    assert stub.Check(pb.CheckRequest()).ok
    stub.Remove(pb.RemoveRequest(images=["big:1"]))

    def emptied() -> bool:  # once the cancelled save has released its lease
        stub.Prune(pb.PruneRequest())
        return int(stub.DiskUsage(pb.DiskUsageRequest()).blob_count) == 0

    wait_until(emptied)


def test_loads_and_prunes_in_parallel_stay_consistent(stub: Stub) -> None:
    images = [app(i, f"par:{i}") for i in range(12)]
    failures: list[BaseException] = []

    def loader(image: ImageSpec) -> None:
        try:
            load(stub, image)
        except BaseException as exc:
            failures.append(exc)

    def pruner() -> None:
        for _ in range(10):
            try:
                stub.Prune(pb.PruneRequest())
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.ABORTED:
                    failures.append(exc)

    threads = [threading.Thread(target=loader, args=(i,)) for i in images]
    threads += [threading.Thread(target=pruner) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    listed = {i.id for i in stub.ListImages(pb.ListImagesRequest()).images}
    assert listed == {i.image_id for i in images}
    assert stub.Check(pb.CheckRequest()).ok
