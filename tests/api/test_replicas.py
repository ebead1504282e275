"""Replicas: several servers on one PostgreSQL database see each other's
changes at once.

Two real server processes, each with its own root, share the database and the
blob files (the second root's ``blobs`` is a link to the first's). A watcher on
one server receives an event committed on the other; an Inspect answer kept on
one server shows the other's Tag on the very next call after that Tag returned;
and when a server's listening connection is killed, its answers stay right and
its watchers, woken when it is back, miss no event.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest

from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import Server, start_server, wait_until
from tests.api.test_events import KIND, Watcher
from tests.api.test_postgres import Stub, serve, stub_of, tags
from tests.api.test_service import load
from tests.archives import ImageSpec
from tests.pg import Cluster, database_for
from tests.store.builders import layer_tar


@dataclass
class Replicas:
    """Two servers on one database: ``a`` and ``b``, and their stubs."""

    a: Server
    b: Server
    on_a: Stub
    on_b: Stub
    database: str


@pytest.fixture
def replicas(postgres_cluster: Cluster, tmp_path: Path) -> Iterator[Replicas]:
    database = database_for(tmp_path)
    url = postgres_cluster.create_database(database)
    servers: list[Server] = []
    channels: list[grpc.Channel] = []
    try:
        servers.append(serve(tmp_path / "a", url))
        (tmp_path / "b").mkdir(mode=0o700)
        (tmp_path / "b" / "blobs").symlink_to(tmp_path / "a" / "blobs")
        servers.append(serve(tmp_path / "b", url))
        stubs = []
        for server in servers:
            channel, stub = stub_of(server)
            channels.append(channel)
            stubs.append(stub)
        load(stubs[0], ImageSpec(tags=["app:1"], layers=[layer_tar({"a": b"1"})]))
        yield Replicas(servers[0], servers[1], stubs[0], stubs[1], database)
    finally:
        for channel in channels:
            channel.close()
        for server in servers:
            assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]
        postgres_cluster.drop_database(database)


def watch_from_now(stub: Stub) -> Watcher:
    watcher = Watcher(stub, pb.WatchEventsRequest())
    watcher.wait_caught_up()
    return watcher


def tagged(watcher: Watcher, start: int = 0) -> list[tuple[str, str]]:
    with watcher.changed:
        return [(KIND(e.kind), e.name.familiar) for e in watcher.events[start:]]


def test_a_watcher_on_one_server_receives_an_event_committed_on_another(
    replicas: Replicas,
) -> None:
    watcher = watch_from_now(replicas.on_a)
    try:
        replicas.on_b.Tag(pb.TagRequest(source="app:1", target="app:2"))
        watcher.wait_count(1)  # no commit on A: the notification woke it
        assert tagged(watcher) == [("EVENT_KIND_TAG", "app:2")]
        replicas.on_a.Tag(pb.TagRequest(source="app:1", target="app:3"))
        replicas.on_b.Tag(pb.TagRequest(source="app:1", target="app:4"))
        watcher.wait_count(3)
        assert tagged(watcher, 1) == [("EVENT_KIND_TAG", "app:3"), ("EVENT_KIND_TAG", "app:4")]
        cursors = [e.cursor for e in watcher.events]
        assert cursors == list(range(cursors[0], cursors[0] + 3))  # in commit order, no gap
    finally:
        watcher.stop()


def test_an_answer_kept_on_one_server_shows_another_s_tag_on_its_next_call(
    replicas: Replicas,
) -> None:
    expected = ["app:1"]
    assert tags(replicas.on_a, "app:1") == expected
    for n in range(2, 12):
        assert tags(replicas.on_a, "app:1") == expected  # kept: asked again, same answer
        replicas.on_b.Tag(pb.TagRequest(source="app:1", target=f"app:{n}"))
        expected = sorted([*expected, f"app:{n}"])
        # The Tag has returned: A's very next call must see it, notified or not.
        assert tags(replicas.on_a, "app:1") == expected
        replicas.on_b.Remove(pb.RemoveRequest(images=[f"app:{n}"]))
        expected.remove(f"app:{n}")
        assert tags(replicas.on_a, "app:1") == expected


def listener_of(server: Server, admin: psycopg.Connection) -> int:
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
        (f"imagestore-listener-{server.process.pid}",),
    ).fetchall()
    assert len(rows) == 1, rows
    return int(rows[0][0])


def test_a_server_whose_listener_is_killed_answers_right_and_its_watchers_miss_nothing(
    replicas: Replicas, postgres_cluster: Cluster
) -> None:
    watcher = watch_from_now(replicas.on_a)
    assert tags(replicas.on_a, "app:1") == ["app:1"]  # an answer A keeps
    try:
        with psycopg.connect(postgres_cluster.url("postgres"), autocommit=True) as admin:
            listener = listener_of(replicas.a, admin)
            # Its listener cannot come back until the end of the block: B's
            # commits meanwhile are notified to nobody on A.
            admin.execute(f'ALTER DATABASE "{replicas.database}" ALLOW_CONNECTIONS false')
            try:
                ended = admin.execute(
                    "SELECT pg_terminate_backend(%s, 10000)", (listener,)
                ).fetchone()
                assert ended == (True,)
                replicas.on_b.Tag(pb.TagRequest(source="app:1", target="app:2"))
                # No stale answer: A's next call sees B's Tag without a notification.
                assert tags(replicas.on_a, "app:1") == ["app:1", "app:2"]
                replicas.on_b.Tag(pb.TagRequest(source="app:1", target="app:3"))
                assert tags(replicas.on_a, "app:1") == ["app:1", "app:2", "app:3"]
            finally:
                admin.execute(f'ALTER DATABASE "{replicas.database}" ALLOW_CONNECTIONS true')
            # Back: the watcher is woken and reads what it missed, by cursor.
            watcher.wait_count(2)
            assert tagged(watcher) == [("EVENT_KIND_TAG", "app:2"), ("EVENT_KIND_TAG", "app:3")]
            assert listener_of(replicas.a, admin) != listener  # a new connection
        replicas.on_b.Tag(pb.TagRequest(source="app:1", target="app:4"))
        watcher.wait_count(3)  # and it follows notifications again
        assert tagged(watcher, 2) == [("EVENT_KIND_TAG", "app:4")]
        assert watcher.error is None
    finally:
        watcher.stop()


def test_max_connection_age_moves_clients_to_a_new_connection(tmp_path: Path) -> None:
    """A replica added later gets calls only from new connections: with
    --max-connection-age the server ends old ones (GOAWAY), and the client's
    next call connects again (to whichever address round_robin picks)."""
    states: list[grpc.ChannelConnectivity] = []
    server = start_server(
        tmp_path / "root", "--listen", "127.0.0.1:0", "--max-connection-age", "1s"
    )
    try:
        channel = grpc.insecure_channel(server.address)
        channel.subscribe(states.append, try_to_connect=True)
        stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
        assert stub.ListImages(pb.ListImagesRequest()).images == []
        wait_until(lambda: grpc.ChannelConnectivity.READY in states)
        ready = states.index(grpc.ChannelConnectivity.READY)
        wait_until(lambda: grpc.ChannelConnectivity.IDLE in states[ready:])  # sent away
        assert stub.ListImages(pb.ListImagesRequest()).images == []  # connects again
        channel.close()
    finally:
        server.stop()
