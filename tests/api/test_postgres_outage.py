"""PostgreSQL crashes under load (``pg_ctl stop -m immediate``), then comes back.

While it is down every call that needs the catalog fails with UNAVAILABLE and
the reason CATALOG_UNAVAILABLE (never INTERNAL, never a hang); every change
acknowledged before the crash is there after ``pg_ctl start``, which replays
the WAL; a Load that met the outage leaves nothing behind; and the server
serves again by itself, without a restart.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import start_server
from tests.api.test_service import check_summary, error_info, load, load_requests
from tests.archives import ImageSpec, docker_archive
from tests.pg import PrivateCluster, private_cluster
from tests.store.builders import layer_tar

Stub = pb_grpc.ImageStoreServiceStub
#: how long the server may take to serve again once PostgreSQL is back
RECOVERY_TIMEOUT = 60.0


@pytest.fixture
def crashable() -> Iterator[PrivateCluster]:
    cluster = private_cluster()
    yield cluster
    cluster.stop()


def refusal(call: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    return call.code(), error_info(call).reason


class Tagger(threading.Thread):
    """Tags ``app:1`` again and again: the load the crash meets. It records the
    tags acknowledged and how each failure was answered."""

    def __init__(self, stub: Stub) -> None:
        super().__init__(daemon=True)
        self.stub = stub
        self.acknowledged: list[str] = []
        self.failures: list[tuple[grpc.StatusCode, str]] = []
        self.done = threading.Event()
        self.progress = threading.Condition()
        #: set by the test once PostgreSQL runs again: the next success is recovery
        self.restarted = threading.Event()
        self.recovered = threading.Event()

    def run(self) -> None:
        number = 0
        while not self.done.is_set():
            number += 1
            target = f"app:t{number}"
            try:
                self.stub.Tag(pb.TagRequest(source="app:1", target=target), timeout=30)
            except grpc.RpcError as failed:
                self.failures.append(refusal(failed))
                continue
            with self.progress:
                self.acknowledged.append(target)
                self.progress.notify_all()
            if self.restarted.is_set():
                self.recovered.set()

    def wait_for(self, count: int) -> None:
        with self.progress:
            assert self.progress.wait_for(lambda: len(self.acknowledged) >= count, timeout=60)


def test_a_postgresql_crash_under_load_is_unavailable_then_nothing_acknowledged_is_lost(
    tmp_path: Path, crashable: PrivateCluster
) -> None:
    url = crashable.create_database("outage")
    server = start_server(tmp_path / "root", "--catalog", url, "--listen", "127.0.0.1:0")
    channel = grpc.insecure_channel(server.address)
    stub: Stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
    tagger = Tagger(stub)
    try:
        load(stub, ImageSpec(tags=["app:1"], layers=[layer_tar({"a": b"1"})]))
        tagger.start()
        tagger.wait_for(5)  # the crash meets calls in flight
        crashable.crash()
        down = "UNAVAILABLE", "CATALOG_UNAVAILABLE"
        with pytest.raises(grpc.RpcError) as tag:
            stub.Tag(pb.TagRequest(source="app:1", target="app:down"), timeout=30)
        with pytest.raises(grpc.RpcError) as inspect:
            stub.Inspect(pb.InspectRequest(image="app:1"), timeout=30)
        with pytest.raises(grpc.RpcError) as listing:
            stub.ListImages(pb.ListImagesRequest(), timeout=30)
        archive = docker_archive(ImageSpec(tags=["late:1"], layers=[layer_tar({"b": b"2"})]))
        with pytest.raises(grpc.RpcError) as loading:
            list(stub.Load(load_requests(archive), timeout=30))
        for call in (tag, inspect, listing, loading):
            assert (call.value.code().name, error_info(call.value).reason) == down

        crashable.start()
        tagger.restarted.set()
        assert tagger.recovered.wait(RECOVERY_TIMEOUT), tagger.failures[-3:]
        tagger.done.set()
        tagger.join(60)

        # the crash and the outage were each answered UNAVAILABLE, never otherwise
        assert tagger.failures, "the tagger never met the outage"
        assert {(code.name, reason) for code, reason in tagger.failures} == {down}
        present = stub.Inspect(pb.InspectRequest(image="app:1"), timeout=30).image.repo_tags
        missing = set(tagger.acknowledged) - {name.familiar for name in present}
        assert not missing, f"acknowledged, then lost: {sorted(missing)}"
        assert "app:down" not in {name.familiar for name in present}
        images = stub.ListImages(pb.ListImagesRequest()).images
        assert "late:1" not in {name.familiar for image in images for name in image.repo_tags}
        summary = check_summary(stub)  # no half-loaded image, no blob without its record
        assert summary.ok, summary
        assert summary.unrecorded_blobs == 0, summary
    finally:
        tagger.done.set()
        channel.close()
        assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]
