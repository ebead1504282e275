"""Attacks on the server's capacity: streams nobody reads, more calls than it
takes at once, and answers larger than a client accepts.

Bounds enforced (server defaults unless a test says otherwise):

- 100 ReadBlob streams of a 64 MiB blob that the client never reads: 32
  (``--max-concurrent-streams``) run, the other 68 are refused at once with
  RESOURCE_EXHAUSTED, reason TOO_MANY_CONCURRENT_CALLS and a 1 s RetryInfo.
  While they are open the server grows by at most STREAM_THREADS threads (the
  stream step pool and the unary workers: none per stream), at most 32 + 16
  descriptors (one blob file per running stream) and at most 192 MiB of
  memory (6 MiB per running stream); health and Inspect keep
  answering within 2 s. Once the streams are cancelled, the slots come back
  and the blob files are closed.
- ``--max-concurrent-rpcs 8``: with 8 Loads held open by their clients, any
  further call of the service is refused with the same reason, naming the
  limit; health checks and reflection still answer.
- Three images with ~3 MiB of labels each: a client with gRPC's default 4 MiB
  receive limit pages through ListImages (a page ends before the 3.5 MiB
  ``--max-response-bytes``) and inspects each of them (labels cut to fit,
  ``labels_truncated`` set, every label kept whole); 256 KiB labels come
  through whole everywhere. With a 1 MiB budget, oversized rows are cut and
  flagged, and an include_raw Inspect too large to send is SIZE_LIMIT_EXCEEDED.
"""

from __future__ import annotations

import hashlib
import random
import string
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.archives import ImageSpec, docker_archive, tar_of
from tests.hostile.conftest import (
    PROBE_BOUND,
    SEED,
    MiB,
    Stub,
    Target,
    load_archive,
    retry_delay,
    rpc_error,
)

BUSY = "TOO_MANY_CONCURRENT_CALLS"
DEFAULT_STREAMS = 32
UNREAD_STREAMS = 100
BLOB_BYTES = 64 * MiB
#: thread growth while the unread streams are open: the stream step pool
#: (min(16, cpus + 4)) and the default executor's unary workers, nothing per stream
STREAM_THREADS = 16
#: descriptors: one blob file per running stream, plus a little for sockets
STREAM_FDS = DEFAULT_STREAMS + 16
#: memory: 6 MiB per running stream (measured ~4.5): the chunk read ahead, the
#: one being sent, and what gRPC buffers before the client's window closes
STREAM_RSS = DEFAULT_STREAMS * 6 * MiB
DEFAULT_RESPONSE_BYTES = 3584 << 10
GRPC_DEFAULT_RECEIVE = 4 * MiB
LABEL_BYTES = 256 << 10
BIG_LABELS = 12  # x 256 KiB: ~3 MiB of labels per image


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def assert_busy(error: grpc.RpcError, limit: str, maximum: int) -> None:
    code, reason, metadata = rpc_error(error)
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, BUSY)
    assert metadata == {"limit": limit, "max": str(maximum)}
    assert f"--{limit}" in str(error.details())
    assert retry_delay(error) == 1.0


def remove_all_but_seed(target: Target) -> None:
    listed, _ = page_through(target.stub, show_all=True)
    others = [image.id for image in listed if image.id != target.seed_id]
    if others:
        target.stub.Remove(pb.RemoveRequest(images=others, force=True), timeout=30)
    target.stub.Prune(pb.PruneRequest(), timeout=60)


def page_through(stub: Stub, show_all: bool = False) -> tuple[list[pb.ImageSummary], list[int]]:
    """Every row, following next_page_token; and each page's size in bytes."""
    rows: list[pb.ImageSummary] = []
    sizes: list[int] = []
    token = ""
    while True:
        request = pb.ListImagesRequest(all=show_all, page_token=token)
        page = stub.ListImages(request, timeout=30)
        rows += page.images
        sizes.append(page.ByteSize())
        token = page.next_page_token
        if not token:
            return rows, sizes


# ---- streams nobody reads -------------------------------------------------------


def test_unread_read_blob_streams_are_capped_and_hold_no_thread(target: Target) -> None:
    noise = random.Random(7).randbytes(BLOB_BYTES)  # incompressible: the blob stays 64 MiB
    load_archive(target.stub, docker_archive(ImageSpec(["big/blob:1"], [tar_of({"b": noise})])))
    layer = target.stub.Inspect(pb.InspectRequest(image="big/blob:1"), timeout=30).layers[0]
    assert layer.size >= BLOB_BYTES
    request = pb.ReadBlobRequest(digest=layer.digest)
    refused_count = UNREAD_STREAMS - DEFAULT_STREAMS

    with target.watch() as seen:
        calls = [target.stub.ReadBlob(request, timeout=300) for _ in range(UNREAD_STREAMS)]
        try:
            # The calls over the cap end at once; the others stay open, unread.
            wait_for(lambda: sum(c.done() for c in calls) >= refused_count, "the refusals")
            refused = [call for call in calls if call.done()]
            running = [call for call in calls if not call.done()]
            assert len(refused) == refused_count
            for call in refused:
                assert_busy(call, "max-concurrent-streams", DEFAULT_STREAMS)
            # Every running stream is live: its first chunk comes when asked for.
            for call in running:
                assert len(next(call).chunk) > 0
            assert sum(c.done() for c in calls) == refused_count
            # Still full: one more stream is refused, while unary calls are not.
            with pytest.raises(grpc.RpcError) as extra:
                next(target.stub.ReadBlob(request, timeout=30))
            assert_busy(extra.value, "max-concurrent-streams", DEFAULT_STREAMS)
            assert target.stub.Inspect(pb.InspectRequest(image=SEED), timeout=PROBE_BOUND)
        finally:
            for call in calls:
                call.cancel()
    seen.assert_within(rss=STREAM_RSS, threads=STREAM_THREADS, fds=STREAM_FDS)

    # Cancelled streams give their slots back (as the server notices the
    # cancellations): 32 streams are soon admitted side by side again, and
    # one of them, read to the end, brings the whole blob.
    def admitted_together() -> bool:
        batch = [target.stub.ReadBlob(request, timeout=300) for _ in range(DEFAULT_STREAMS)]
        try:
            firsts = [next(call).chunk for call in batch]
            whole = hashlib.sha256(firsts[0])
            for response in batch[0]:
                whole.update(response.chunk)
            assert "sha256:" + whole.hexdigest() == layer.digest
        except grpc.RpcError as exc:
            assert_busy(exc, "max-concurrent-streams", DEFAULT_STREAMS)
            return False
        finally:
            for call in batch:
                call.cancel()
        return True

    wait_for(admitted_together, "32 streams admitted again")
    # Their blob files are closed again. (Not a count of all descriptors: each
    # stream-pool thread that read the catalog keeps its own reader connection.)
    blob_dir = str(target.server.root / "blobs")

    def open_blob_files() -> int:
        return sum(f.path.startswith(blob_dir) for f in target.process.open_files())

    wait_for(lambda: open_blob_files() == 0, "the blob files to close")
    remove_all_but_seed(target)
    target.assert_clean()


# ---- more calls than the server takes ------------------------------------------

RPC_CAP = 8


@pytest.mark.parametrize("server_options", [("--max-concurrent-rpcs", str(RPC_CAP))])
def test_calls_over_the_cap_are_refused_while_health_and_reflection_answer(
    target: Target,
) -> None:
    release = threading.Event()

    def held_open() -> Iterator[pb.LoadRequest]:
        release.wait(120)  # sends nothing until the test lets go
        return
        yield  # pragma: no cover - a generator that yields nothing

    def refused() -> bool:
        try:
            target.stub.ListImages(pb.ListImagesRequest(), timeout=PROBE_BOUND)
        except grpc.RpcError as exc:
            assert_busy(exc, "max-concurrent-rpcs", RPC_CAP)
            return True
        return False

    def held_load() -> Any:
        return target.stub.Load(held_open(), timeout=120)

    def full() -> bool:
        # A Load that arrived while a probe held a slot was refused: open it again.
        for index, load in enumerate(loads):
            if load.done():
                assert_busy(load, "max-concurrent-rpcs", RPC_CAP)
                loads[index] = held_load()
        return refused()

    loads = [held_load() for _ in range(RPC_CAP)]
    try:
        wait_for(full, "the held Loads to fill the server")
        # Every call of the service is refused now, streams and unary alike...
        for attempt in (
            lambda: target.stub.Inspect(pb.InspectRequest(image=SEED), timeout=PROBE_BOUND),
            lambda: list(target.stub.Save(pb.SaveRequest(images=[SEED]), timeout=PROBE_BOUND)),
            lambda: list(target.stub.Load(iter([pb.LoadRequest()]), timeout=PROBE_BOUND)),
        ):
            with pytest.raises(grpc.RpcError) as failure:
                attempt()
            assert_busy(failure.value, "max-concurrent-rpcs", RPC_CAP)
        # ...while health checks and reflection answer, on a connection of their own
        # and on the attacker's.
        with grpc.insecure_channel(target.server.address) as fresh:
            for channel in (fresh, target.channel):
                health = health_pb2_grpc.HealthStub(channel)
                for service in ("", "imagestore.v1.ImageStoreService"):
                    answer = health.Check(
                        health_pb2.HealthCheckRequest(service=service), timeout=PROBE_BOUND
                    )
                    assert answer.status == health_pb2.HealthCheckResponse.SERVING
                reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
                request = reflection_pb2.ServerReflectionRequest(list_services="")
                answers = list(reflection.ServerReflectionInfo(iter([request]), timeout=10))
                names = {s.name for s in answers[0].list_services_response.service}
                assert "imagestore.v1.ImageStoreService" in names
        assert not any(load.done() for load in loads)  # the held calls are untouched
    finally:
        for load in loads:
            load.cancel()
        release.set()
    # The slots come back once the held calls are gone.
    wait_for(lambda: not refused(), "the slots to come back")
    assert target.stub.Inspect(pb.InspectRequest(image=SEED), timeout=PROBE_BOUND)
    target.assert_clean()


# ---- answers larger than a client accepts ---------------------------------------


def label_value(rng: random.Random, size: int) -> str:
    return "".join(rng.choices(string.ascii_letters, k=size))


def big_label_image(index: int) -> ImageSpec:
    """~3 MiB of labels: 12 of 256 KiB, and a few small ones."""
    rng = random.Random(index)
    labels = {f"big.{i:02d}": label_value(rng, LABEL_BYTES) for i in range(BIG_LABELS)}
    labels |= {"small.a": "a", "small.b": f"image {index}"}
    return ImageSpec([f"labels/big:{index}"], [tar_of({"f": b"%d" % index})], labels=labels)


def one_big_label_image() -> ImageSpec:
    labels = {"one.big": label_value(random.Random(99), LABEL_BYTES), "small": "x"}
    return ImageSpec(["labels/one:1"], [tar_of({"g": b"one"})], labels=labels)


@pytest.fixture
def labelled(target: Target) -> Iterator[dict[str, ImageSpec]]:
    """The three ~3 MiB-label images and one with a single 256 KiB label, by ID."""
    specs = [big_label_image(i) for i in range(3)] + [one_big_label_image()]
    for spec in specs:
        load_archive(target.stub, docker_archive(spec))
    yield {spec.image_id: spec for spec in specs}
    remove_all_but_seed(target)
    target.assert_clean()


def assert_whole_subset(kept: dict[str, str], full: dict[str, str]) -> None:
    """Labels left out are left out whole: every label kept is intact."""
    assert kept.keys() <= full.keys()
    for key, value in kept.items():
        assert value == full[key], f"label {key} was cut"


def test_a_default_client_pages_through_and_inspects_images_with_huge_labels(
    target: Target, labelled: dict[str, ImageSpec]
) -> None:
    with target.watch(), grpc.insecure_channel(target.server.address) as default_client:
        stub: Stub = pb_grpc.ImageStoreServiceStub(default_client)  # type: ignore[no-untyped-call]
        rows, sizes = page_through(stub)
        assert {row.id for row in rows} == {*labelled, target.seed_id}
        assert max(sizes) <= DEFAULT_RESPONSE_BYTES < GRPC_DEFAULT_RECEIVE
        assert len(sizes) >= 3  # two ~3 MiB rows never share a page
        for row in rows:  # each row fits a page whole: nothing is cut
            spec = labelled.get(row.id)
            assert not row.labels_truncated
            assert dict(row.labels) == (spec.labels if spec else {})

        for image_id, spec in labelled.items():
            answer = stub.Inspect(pb.InspectRequest(image=image_id), timeout=30)
            assert answer.ByteSize() <= DEFAULT_RESPONSE_BYTES
            if len(spec.labels) == 2:  # the single 256 KiB label: whole
                assert not answer.labels_truncated
                assert dict(answer.config.labels) == spec.labels == dict(answer.image.labels)
                continue
            # ~3 MiB of labels appear twice in an Inspect (image and config):
            # cut to fit, flagged, the rest whole and the small ones kept.
            assert answer.labels_truncated
            assert answer.image.labels_truncated
            assert dict(answer.image.labels) == dict(answer.config.labels)
            assert_whole_subset(dict(answer.config.labels), spec.labels)
            assert {"small.a", "small.b"} <= answer.config.labels.keys()
            assert 3 <= len(answer.config.labels) - 2 < BIG_LABELS
            # The raw config fits beside the cut labels, and has them all.
            raw = stub.Inspect(pb.InspectRequest(image=image_id, include_raw=True), timeout=30)
            assert raw.raw_config == spec.config()
            assert raw.labels_truncated


@pytest.mark.parametrize("server_options", [("--max-response-bytes", str(MiB))])
def test_a_small_response_budget_cuts_rows_and_refuses_raw_documents_it_cannot_send(
    target: Target, labelled: dict[str, ImageSpec]
) -> None:
    rows, sizes = page_through(target.stub)
    assert {row.id for row in rows} == {*labelled, target.seed_id}
    assert max(sizes) <= MiB
    for row in rows:
        spec = labelled.get(row.id)
        if spec is not None and len(spec.labels) > 2:
            assert row.labels_truncated
            assert_whole_subset(dict(row.labels), spec.labels)
            assert 1 <= len(row.labels) - 2 < 4  # ~1 MiB holds three 256 KiB labels at most
        else:
            assert not row.labels_truncated
            assert dict(row.labels) == (spec.labels if spec else {})

    big = next(i for i, spec in labelled.items() if len(spec.labels) > 2)
    answer = target.stub.Inspect(pb.InspectRequest(image=big), timeout=30)
    assert answer.labels_truncated
    assert answer.ByteSize() <= MiB
    with pytest.raises(grpc.RpcError) as failure:
        target.stub.Inspect(pb.InspectRequest(image=big, include_raw=True), timeout=30)
    code, reason, metadata = rpc_error(failure.value)
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SIZE_LIMIT_EXCEEDED")
    assert metadata["limit"] == "max-response-bytes"
    assert int(metadata["size"]) > int(metadata["max"]) == MiB
    assert "ReadBlob" in str(failure.value.details())
