"""The real server on a PostgreSQL catalog (``serve --catalog postgresql://…``).

A server serves Load, ListImages, Inspect, Tag and Remove from PostgreSQL; a
second server on another root and the same database sees the first one's
changes on its next call (the catalog's generation is the database's, so no
answer it keeps outlives another process's commit); and a lost database
connection fails the call that meets it with CATALOG_UNAVAILABLE while the
next call reconnects.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import psycopg
import pytest

from imagestore.store.postgres import SINGLETON_KEYS, WRITE_LOCK_KEY
from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import Server, start_server, wait_until
from tests.api.test_service import error_info, load
from tests.archives import ImageSpec
from tests.pg import Cluster, database_for
from tests.store.builders import layer_tar
from tests.store.test_replicas import advisory_lock_held

Stub = pb_grpc.ImageStoreServiceStub


@pytest.fixture
def url(postgres_cluster: Cluster, tmp_path: Path) -> Iterator[str]:
    database = database_for(tmp_path)
    yield postgres_cluster.create_database(database)
    postgres_cluster.drop_database(database)


def serve(root: Path, url: str, *options: str) -> Server:
    return start_server(
        root, "--catalog", url, "--listen", "127.0.0.1:0", "--grace-period", "5", *options
    )


def stub_of(server: Server) -> tuple[grpc.Channel, Stub]:
    channel = grpc.insecure_channel(server.address)
    grpc.channel_ready_future(channel).result(timeout=10)
    return channel, pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]


def tags(stub: Stub, image: str) -> list[str]:
    return [n.familiar for n in stub.Inspect(pb.InspectRequest(image=image)).image.repo_tags]


def listed(stub: Stub) -> list[list[str]]:
    images = stub.ListImages(pb.ListImagesRequest()).images
    return sorted(sorted(n.familiar for n in image.repo_tags) for image in images)


def test_a_server_on_postgresql_loads_lists_inspects_tags_and_removes(
    tmp_path: Path, url: str
) -> None:
    server = serve(tmp_path / "root", url)
    channel, stub = stub_of(server)
    try:
        info = stub.GetServerInfo(pb.GetServerInfoRequest())
        assert info.catalog == "postgresql"
        load(stub, ImageSpec(tags=["app:1"], layers=[layer_tar({"a": b"1"})]))
        load(stub, ImageSpec(tags=["other:1"], layers=[layer_tar({"b": b"2"})]))
        assert listed(stub) == [["app:1"], ["other:1"]]
        assert tags(stub, "app:1") == ["app:1"]
        stub.Tag(pb.TagRequest(source="app:1", target="app:2"))
        assert tags(stub, "app:1") == ["app:1", "app:2"]
        stub.Remove(pb.RemoveRequest(images=["app:1"]))
        assert tags(stub, "app:2") == ["app:2"]
        stub.Remove(pb.RemoveRequest(images=["app:2"]))
        with pytest.raises(grpc.RpcError) as gone:
            stub.Inspect(pb.InspectRequest(image="app:2"))
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
        assert listed(stub) == [["other:1"]]
    finally:
        channel.close()
        assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]
    assert not (tmp_path / "root" / "catalog.db").exists()  # the catalog is the database


def test_a_second_server_on_the_same_database_sees_the_first_ones_changes(
    tmp_path: Path, url: str
) -> None:
    # One shared blob directory (Inspect reads the image's config file).
    shared = str(tmp_path / "shared-blobs")
    first = serve(tmp_path / "first", url, "--blob-dir", shared)
    second = serve(tmp_path / "second", url, "--blob-dir", shared)
    first_channel, first_stub = stub_of(first)
    second_channel, second_stub = stub_of(second)
    try:
        load(first_stub, ImageSpec(tags=["app:1"], layers=[layer_tar({"a": b"1"})]))
        # Asked twice: the second server keeps its answer until the catalog changes.
        assert tags(second_stub, "app:1") == ["app:1"]
        assert tags(second_stub, "app:1") == ["app:1"]
        assert listed(second_stub) == [["app:1"]]
        first_stub.Tag(pb.TagRequest(source="app:1", target="app:2"))
        assert tags(second_stub, "app:1") == ["app:1", "app:2"]
        assert listed(second_stub) == [["app:1", "app:2"]]
        second_stub.Tag(pb.TagRequest(source="app:2", target="app:3"))
        assert tags(first_stub, "app:1") == ["app:1", "app:2", "app:3"]
    finally:
        for channel in (first_channel, second_channel):
            channel.close()
        for server in (first, second):
            assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]


def test_a_lost_connection_is_catalog_unavailable_and_the_next_call_reconnects(
    tmp_path: Path, url: str, postgres_cluster: Cluster
) -> None:
    server = serve(tmp_path / "root", url)
    channel, stub = stub_of(server)
    try:
        load(stub, ImageSpec(tags=["app:1"], layers=[layer_tar({"a": b"1"})]))
        assert tags(stub, "app:1") == ["app:1"]
        with psycopg.connect(postgres_cluster.url("postgres"), autocommit=True) as admin:
            ended = admin.execute(
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (database_for(tmp_path),),
            ).fetchall()
        assert ended
        assert all(row[0] for row in ended)  # each one gone before we go on
        # Every connection the server had is dead: the next read meets one.
        with pytest.raises(grpc.RpcError) as lost:
            stub.ListImages(pb.ListImagesRequest())
        assert lost.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_info(lost.value).reason == "CATALOG_UNAVAILABLE"
        assert listed(stub) == [["app:1"]]  # the pool checked its connections: fresh ones
        stub.Tag(pb.TagRequest(source="app:1", target="app:2"))
        assert tags(stub, "app:1") == ["app:1", "app:2"]
    finally:
        channel.close()
        assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]


#: a short heartbeat and replica timeout: the tests see a killed replica die quickly
FAST = ("--heartbeat-interval", "0.05", "--replica-timeout", "1")


def test_a_killed_replicas_ingest_files_are_swept_by_another_replicas_prune(
    tmp_path: Path, url: str
) -> None:
    shared = tmp_path / "shared-blobs"
    first = serve(tmp_path / "first", url, "--blob-dir", str(shared), *FAST)
    second = serve(tmp_path / "second", url, "--blob-dir", str(shared), *FAST)
    channel, stub = stub_of(second)
    try:
        # what the first one's unfinished ingest leaves, named with its ID
        first_id = (tmp_path / "first" / "replica-id").read_text().strip()
        leftover = shared / "ingest" / f"{first_id}-0123456789abcdef"
        leftover.write_bytes(b"half a layer")
        assert stub.Prune(pb.PruneRequest()).stale_ingests == 0  # its owner is alive
        assert leftover.exists()
        first.stop(signal.SIGKILL)

        def swept() -> bool:
            stub.Prune(pb.PruneRequest())
            return not leftover.exists()

        wait_until(swept, timeout=30)  # once the first one's heartbeat is too old
    finally:
        channel.close()
        first.stop()
        assert second.stop() == 0, "".join(second.stderr_lines)[-3000:]


def test_the_sqlite_catalog_refuses_another_blob_directory(tmp_path: Path) -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "imagestore", "serve", "--root", str(tmp_path / "root"),
         "--blob-dir", str(tmp_path / "blobs"), "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "--blob-dir needs a PostgreSQL --catalog" in refused.stderr


def test_a_prune_on_one_server_refuses_a_prune_on_another(tmp_path: Path, url: str) -> None:
    shared = str(tmp_path / "shared-blobs")
    first = serve(tmp_path / "first", url, "--blob-dir", shared)
    second = serve(tmp_path / "second", url, "--blob-dir", shared)
    first_channel, first_stub = stub_of(first)
    second_channel, second_stub = stub_of(second)
    try:
        with ThreadPoolExecutor(1) as pool, psycopg.connect(url, autocommit=True) as hung:
            # a process holding the writers' lock: the first prune takes the
            # cluster's prune lock, then waits for it
            with hung.transaction():
                hung.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
                running = pool.submit(first_stub.Prune, pb.PruneRequest(), timeout=60)
                wait_until(lambda: advisory_lock_held(url, SINGLETON_KEYS["prune"]))
                with pytest.raises(grpc.RpcError) as refused:
                    second_stub.Prune(pb.PruneRequest())
            assert refused.value.code() == grpc.StatusCode.ABORTED
            assert error_info(refused.value).reason == "PRUNE_RUNNING"
            running.result(timeout=60)
        second_stub.Prune(pb.PruneRequest())  # free again
    finally:
        for channel in (first_channel, second_channel):
            channel.close()
        for server in (first, second):
            assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]
