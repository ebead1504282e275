"""Every RPC through the generated stubs against the real server process."""

from __future__ import annotations

import io
import json
import os
import random
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imagestore import errors
from imagestore.api import convert
from imagestore.registry.progress import Phase
from imagestore.store.store import Store
from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import Server, start_server, wait_until
from tests.archives import ImageSpec, docker_archive, sha, tar_of
from tests.store.builders import build_image, build_index, layer_tar
from tests.tools import feed_until_closed

Stub = pb_grpc.ImageStoreServiceStub
BASE = layer_tar({"etc/os-release": b"ID=test\n"})


def load_requests(
    archive: bytes, size: int = 1 << 20, declared: int = 0
) -> Iterator[pb.LoadRequest]:
    """A header (when a size is declared), then the archive in chunks."""
    if declared:
        yield pb.LoadRequest(header=pb.LoadHeader(declared_size=declared))
    for start in range(0, len(archive), size):
        yield pb.LoadRequest(chunk=archive[start : start + size])


def load_result(responses: list[pb.LoadResponse]) -> pb.LoadResult:
    """The result of a Load stream, after checking it is progress, then the result."""
    kinds = [r.WhichOneof("response") for r in responses]
    assert kinds[-1] == "result", kinds
    assert set(kinds[:-1]) <= {"progress"}, kinds
    return responses[-1].result


def load(stub: Stub, *images: ImageSpec) -> pb.LoadResult:
    result = load_result(list(stub.Load(load_requests(docker_archive(*images)))))
    assert result.images, result
    return result


def check_summary(stub: Stub) -> pb.CheckSummary:
    """The summary a whole Check stream ends with."""
    responses: list[pb.CheckResponse] = list(stub.Check(pb.CheckRequest(), timeout=60))
    return responses[-1].summary


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
    assert [(i.id, sorted(n.familiar for n in i.names)) for i in loaded.images] == [
        (image.image_id, ["web:1", "web:latest"])
    ]
    assert sorted(n.canonical for n in loaded.images[0].names) == [
        "docker.io/library/web:1",
        "docker.io/library/web:latest",
    ]

    listed = stub.ListImages(pb.ListImagesRequest())
    assert [i.id for i in listed.images] == [image.image_id]
    row = listed.images[0]
    assert [n.familiar for n in row.repo_tags] == ["web:1", "web:latest"]
    assert [n.canonical for n in row.repo_tags] == [
        "docker.io/library/web:1",
        "docker.io/library/web:latest",
    ]
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
    assert tagged.target == pb.ImageName(familiar="web:1", canonical="docker.io/library/web:1")
    assert list(tagged.displaced_image_ids) == [old.image_id]
    usage = stub.DiskUsage(pb.DiskUsageRequest())
    assert usage.image_count == 2
    assert usage.reclaimable > 0
    assert usage.next_page_token == ""
    dry = stub.Prune(pb.PruneRequest(dry_run=True))
    assert list(dry.deleted_image_ids) == [old.image_id]
    assert dry.reclaimed_bytes == usage.reclaimable
    assert dry.dry_run
    pruned = stub.Prune(pb.PruneRequest())
    assert list(pruned.deleted_image_ids) == [old.image_id]
    assert not pruned.dry_run
    assert pruned.reclaimed_bytes == dry.reclaimed_bytes
    (removed,) = stub.Remove(pb.RemoveRequest(images=["web:1"])).results
    assert removed.item == "web:1"
    assert [(n.familiar, n.canonical) for n in removed.untagged] == [
        ("web:1", "docker.io/library/web:1")
    ]
    assert not removed.deleted_image_ids  # web:2 still names it
    assert check_summary(stub).ok
    (gone,) = stub.Remove(pb.RemoveRequest(images=["web:2"])).results
    assert list(gone.deleted_image_ids) == [new.image_id]
    assert new.image_id not in gone.freed_blobs  # the config goes with the image
    assert gone.freed_blobs  # its manifest and layers
    final = stub.DiskUsage(pb.DiskUsageRequest())
    assert (final.image_count, final.total_size) == (0, 0)


def _item_error(result: pb.RemoveResult) -> tuple[int, str, dict[str, str], list[str]]:
    """An item's google.rpc.Status: code, ErrorInfo reason and metadata, and the
    names of the detail messages."""
    info = error_details_pb2.ErrorInfo()
    assert result.error.details[0].Unpack(info)
    assert info.domain == "imagestore"
    kinds = [detail.TypeName() for detail in result.error.details]
    return result.error.code, info.reason, dict(info.metadata), kinds


def test_remove_of_a_mixed_list_applies_each_item_and_reports_each(stub: Stub) -> None:
    gone = app(1, "gone:1")
    shared = app(2, "one:1", "two:1")
    load(stub, gone, shared)
    items = ["gone:1", "ghost", shared.image_id, "one:1", "gone:1"]
    results = stub.Remove(pb.RemoveRequest(images=items)).results
    assert [r.item for r in results] == items  # one result per item, in order
    assert [r.HasField("error") for r in results] == [False, True, True, False, True]
    assert list(results[0].deleted_image_ids) == [gone.image_id]
    assert [n.familiar for n in results[0].untagged] == ["gone:1"]
    code, reason, metadata, kinds = _item_error(results[1])
    assert (code, reason, metadata) == (
        grpc.StatusCode.NOT_FOUND.value[0], "IMAGE_NOT_FOUND", {"image": "ghost"},
    )  # fmt: skip
    assert results[1].error.message == "No such image: ghost:latest"
    assert kinds == ["google.rpc.ErrorInfo", "google.rpc.ResourceInfo"]
    assert not results[1].untagged
    code, reason, metadata, kinds = _item_error(results[2])
    assert (code, reason, metadata) == (
        grpc.StatusCode.FAILED_PRECONDITION.value[0], "REMOVE_CONFLICT",
        {"image": shared.image_id},
    )  # fmt: skip
    assert "must be forced" in results[2].error.message
    assert [n.canonical for n in results[3].untagged] == ["docker.io/library/one:1"]
    assert not results[3].deleted_image_ids  # two:1 still names it
    assert _item_error(results[4])[1] == "IMAGE_NOT_FOUND"  # removed by the first item
    listed = stub.ListImages(pb.ListImagesRequest(all=True)).images
    assert [(i.id, [n.familiar for n in i.repo_tags]) for i in listed] == [
        (shared.image_id, ["two:1"])
    ]
    # force settles conflicts only: an unknown name still fails, in its result
    (forced,) = stub.Remove(pb.RemoveRequest(images=["ghost"], force=True)).results
    assert _item_error(forced)[1] == "IMAGE_NOT_FOUND"
    # an invalid name names its request field
    (invalid,) = stub.Remove(pb.RemoveRequest(images=["UPPER:case"])).results
    bad = error_details_pb2.BadRequest()
    assert invalid.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert any(detail.Unpack(bad) for detail in invalid.error.details)
    assert [v.field for v in bad.field_violations] == ["images[0]"]
    with pytest.raises(grpc.RpcError) as empty:
        stub.Remove(pb.RemoveRequest())
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_names_come_back_familiar_and_canonical(stub: Stub) -> None:
    image = app(1, "registry.example.com/team/web:1", "web:2")
    load(stub, image)
    (row,) = stub.ListImages(pb.ListImagesRequest()).images
    assert [(n.familiar, n.canonical) for n in row.repo_tags] == [
        ("registry.example.com/team/web:1", "registry.example.com/team/web:1"),
        ("web:2", "docker.io/library/web:2"),
    ]
    usage = stub.DiskUsage(pb.DiskUsageRequest()).images[0]
    assert list(usage.repo_tags) == list(row.repo_tags)
    inspected = stub.Inspect(pb.InspectRequest(image="docker.io/library/web:2"))
    assert list(inspected.image.repo_tags) == list(row.repo_tags)
    stub.Remove(pb.RemoveRequest(images=["web:2"]))
    pruned = stub.Prune(pb.PruneRequest(all=True))
    assert [(n.familiar, n.canonical) for n in pruned.untagged] == [
        ("registry.example.com/team/web:1", "registry.example.com/team/web:1")
    ]


def test_disk_usage_pages_with_the_totals_on_every_page(stub: Stub) -> None:
    images = [app(n, f"web:{n}") for n in range(3)]
    load(stub, *images)
    whole = stub.DiskUsage(pb.DiskUsageRequest())
    first = stub.DiskUsage(pb.DiskUsageRequest(page_size=2))
    assert len(first.images) == 2
    assert first.next_page_token
    second = stub.DiskUsage(pb.DiskUsageRequest(page_size=2, page_token=first.next_page_token))
    assert len(second.images) == 1
    assert second.next_page_token == ""
    assert [i.id for i in [*first.images, *second.images]] == [i.id for i in whole.images]
    for page in (first, second):
        assert (page.image_count, page.blob_count, page.total_size, page.reclaimable) == (
            3, whole.blob_count, whole.total_size, whole.reclaimable,
        )  # fmt: skip
    with pytest.raises(grpc.RpcError) as bad:
        stub.DiskUsage(pb.DiskUsageRequest(page_token="bogus"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(bad.value).reason == "PAGE_TOKEN_INVALID"


def test_list_and_inspect_show_the_children_of_a_named_index(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with Store.open(root) as store:  # seeded before the server owns the root
        amd = build_image(store, [layer_tar({"a": b"amd"})], architecture="amd64")
        arm = build_image(store, [layer_tar({"a": b"arm"})], architecture="arm", variant="v7")
        index = build_index(
            store,
            [(amd, "linux/amd64"), (arm, "linux/arm/v7")],
            names=["multi:1"],
            absent=[("sha256:" + "e" * 64, "linux/s390x")],
        )
    server = start_server(root, "--listen", "127.0.0.1:0")
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
            rows = {row.id: row for row in stub.ListImages(pb.ListImagesRequest()).images}
            (named,) = rows[amd.image_id].indexes
            assert list(rows[arm.image_id].indexes) == [named]
            assert (named.name.familiar, named.name.canonical) == (
                "multi:1", "docker.io/library/multi:1",
            )  # fmt: skip
            assert named.index.digest == index.target_digest
            children = [
                (c.platform.architecture, c.platform.variant, c.manifest.digest, c.present,
                 c.image_id)
                for c in named.children
            ]  # fmt: skip
            assert children == [
                ("amd64", "", amd.manifest.digest, True, amd.image_id),
                ("arm", "v7", arm.manifest.digest, True, arm.image_id),
                ("s390x", "", "sha256:" + "e" * 64, False, ""),
            ]
            inspected = stub.Inspect(pb.InspectRequest(image=amd.image_id))
            assert list(inspected.image.indexes) == [named]
    finally:
        assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]


def test_check_streams_progress_then_problems_then_the_summary(stub: Stub, server: Server) -> None:
    image = app(1, "web:1")
    load(stub, image)
    layer = stub.Inspect(pb.InspectRequest(image="web:1")).layers[1].digest
    path = server.root / "blobs" / "sha256" / layer.removeprefix("sha256:")
    path.chmod(0o600)
    path.write_bytes(b"not the layer")
    responses = list(stub.Check(pb.CheckRequest(), timeout=60))
    kinds = [r.WhichOneof("response") for r in responses]
    assert kinds[0] == "progress"
    assert kinds[-1] == "summary"
    assert kinds.count("summary") == 1
    assert responses[0].progress.blobs_checked == 0
    assert responses[0].progress.blobs_total == 4  # config, manifest, two layers
    last = [r.progress for r in responses if r.WhichOneof("response") == "progress"][-1]
    assert last.blobs_checked == last.blobs_total
    assert last.bytes_checked == last.bytes_total
    problems = [r.problem for r in responses if r.WhichOneof("response") == "problem"]
    assert [(p.kind, p.subject) for p in problems] == [("corrupt-blob", layer)]
    summary = responses[-1].summary
    assert (summary.ok, summary.problems, summary.images_checked) == (False, 1, 1)
    assert summary.blobs_checked == last.blobs_total


def test_a_cancelled_check_stops_and_a_concurrent_one_is_refused(
    stub: Stub, server: Server
) -> None:
    load(stub, app(1, "web:1"))
    fifo = server.root / "blobs" / "sha256" / ("0" * 64)  # hashed first (digest order)
    os.mkfifo(fifo)
    writer: list[int] = []
    opened = threading.Event()

    def open_writer() -> None:  # returns once the check opened the FIFO to hash it
        writer.append(os.open(fifo, os.O_WRONLY))
        opened.set()

    thread = threading.Thread(target=open_writer, daemon=True)
    thread.start()
    running = stub.Check(pb.CheckRequest(), timeout=60)
    first = next(running)
    assert first.WhichOneof("response") == "progress"
    assert opened.wait(30)
    with pytest.raises(grpc.RpcError) as refused:
        list(stub.Check(pb.CheckRequest(), timeout=30))
    assert refused.value.code() == grpc.StatusCode.ABORTED
    assert error_info(refused.value).reason == "CHECK_RUNNING"
    running.cancel()
    stopped = feed_until_closed(writer[0])  # each write wakes the hashing
    assert stopped  # the FIFO never ended: the cancelled check stopped mid-file
    fifo.unlink()
    summary = check_summary(stub)  # the check is free again and runs to the end
    assert summary.ok
    assert summary.blobs_checked == 4


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
    again = load_result(list(stub.Load(load_requests(b"".join(chunks)))))
    assert again.images[0].id == image.image_id


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
    (  # a conflict is an item's error (its RemoveResult); no item fails the call
        lambda s, _: s.Remove(pb.RemoveRequest()),
        Code.INVALID_ARGUMENT,
        "ARGUMENT_MISSING",
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
    report = list(stub.Check(pb.CheckRequest()))
    assert not report[-1].summary.ok
    problems = [r.problem for r in report if r.WhichOneof("response") == "problem"]
    assert [(p.kind, p.subject) for p in problems] == [("corrupt-blob", layer)]


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
    assert check_summary(stub).ok


def test_a_cancelled_save_leaves_the_store_whole(stub: Stub) -> None:
    load(stub, ImageSpec(["big:1"], [layer_tar({"big": bytes(range(256)) * 20_000})]))
    call = stub.Save(pb.SaveRequest(images=["big:1"]))
    next(call)
    call.cancel()
    assert check_summary(stub).ok
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
    assert check_summary(stub).ok


def test_load_progress_has_a_phase_per_member_and_the_result_comes_last(stub: Stub) -> None:
    image = app(8, "phases:1")
    archive = docker_archive(image)
    responses = list(stub.Load(load_requests(archive, size=4096, declared=len(archive))))
    load_result(responses)
    lines = [r.progress for r in responses[:-1]]
    phases = {
        "stored": pb.PHASE_COMPLETE,
        "reused": pb.PHASE_ALREADY_EXISTS,
        "kept": pb.PHASE_SKIPPED,
        "ignored": pb.PHASE_SKIPPED,
    }
    assert lines
    assert all(line.phase == phases[line.text] for line in lines), lines
    assert all(line.subject for line in lines)
    assert [line.current for line in lines] == sorted(line.current for line in lines)
    assert lines[-1].current <= len(archive)
    assert sum(line.phase == pb.PHASE_COMPLETE for line in lines) == len(image.layers)

    # docker 25's layout: layers named by their diff_id, found stored already
    config = image.config()
    by_digest = {f"blobs/sha256/{sha(layer)[7:]}": layer for layer in image.layers}
    entry = {"Config": f"blobs/sha256/{sha(config)[7:]}", "Layers": list(by_digest)}
    entry["RepoTags"] = ["phases:2"]
    again = list(
        stub.Load(
            load_requests(
                tar_of(
                    {
                        f"blobs/sha256/{sha(config)[7:]}": config,
                        **by_digest,
                        "manifest.json": json.dumps([entry]).encode(),
                    }
                )
            )
        )
    )
    load_result(again)
    reused = [r.progress for r in again[:-1] if r.progress.phase == pb.PHASE_ALREADY_EXISTS]
    assert sorted(line.subject for line in reused) == sorted(by_digest)
    assert {line.text for line in reused} == {"reused"}


@pytest.mark.parametrize("second_header_first", [False, True])
def test_a_load_header_after_the_first_message_is_invalid_and_stores_nothing(
    stub: Stub, second_header_first: bool
) -> None:
    archive = docker_archive(app(9, "late:1"))

    def requests() -> Iterator[pb.LoadRequest]:
        if second_header_first:
            yield pb.LoadRequest(header=pb.LoadHeader(declared_size=len(archive)))
        yield pb.LoadRequest(chunk=archive[:4096])
        yield pb.LoadRequest(header=pb.LoadHeader(declared_size=len(archive)))
        yield pb.LoadRequest(chunk=archive[4096:])

    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Load(requests(), timeout=60))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "header" in str(caught.value.details())
    info = error_info(caught.value)
    assert info.reason == "MESSAGE_ORDER_INVALID"
    trailers: dict[str, Any] = dict(caught.value.trailing_metadata() or ())  # type: ignore[arg-type]
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    violations = [
        v.field
        for detail in status.details
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR)
        for v in _unpacked(detail).field_violations
    ]
    assert violations == ["header"]
    assert not list(stub.ListImages(pb.ListImagesRequest(all=True)).images)


def _unpacked(detail: Any) -> error_details_pb2.BadRequest:
    request = error_details_pb2.BadRequest()
    assert detail.Unpack(request)
    return request


def test_every_domain_phase_has_its_own_api_phase() -> None:
    assert set(convert.PHASES) == set(Phase)
    sent = sorted(convert.PHASES.values())
    assert sent == sorted(set(pb.Phase.values()) - {pb.PHASE_UNSPECIFIED})
