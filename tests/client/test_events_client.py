"""watch_events in both clients against the real server: every change made by
concurrent clients, in commit order, with no gaps; a reconnect from the
stream's cursor that loses and repeats nothing; an expired cursor; filters;
the caught-up mark; deadlines on the watch."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagestore import errors
from imagestore.client import (
    AsyncImageStoreClient,
    Event,
    EventKind,
    EventStream,
    ImageName,
    ImageStoreClient,
)
from tests.api.conftest import Server, start_server
from tests.archives import ImageSpec, docker_archive, tar_of

APP = ImageSpec(["app:1"], [tar_of({"a": b"a" * 3000})], labels={"team": "blue"})
WRITERS = 4
TAGS_EACH = 10
#: no watch in these tests may outlive this: a missing event fails, never hangs
WATCH_TIMEOUT = 60.0


@pytest.fixture
def client(server: Server) -> Iterator[ImageStoreClient]:
    with ImageStoreClient(server.address, timeout=30) as opened:
        opened.load(io.BytesIO(docker_archive(APP))).result()
        yield opened


def _watch_until(stream: EventStream, count: int, into: list[Event]) -> threading.Thread:
    """A thread reading ``count`` events from the stream, then leaving it."""

    def read() -> None:
        for event in stream:
            into.append(event)
            if len(into) == count:
                break

    thread = threading.Thread(target=read)
    thread.start()
    return thread


def test_a_watcher_sees_every_change_of_concurrent_clients_in_commit_order(
    client: ImageStoreClient, server: Server
) -> None:
    caught_up = threading.Event()
    stream = client.watch_events(timeout=WATCH_TIMEOUT, on_caught_up=lambda cursor: caught_up.set())
    seen: list[Event] = []
    watcher = _watch_until(stream, WRITERS * TAGS_EACH, seen)
    assert caught_up.wait(WATCH_TIMEOUT), "the server never said it caught up"

    def write(writer: int) -> None:
        with ImageStoreClient(server.address, timeout=30) as own:
            for i in range(TAGS_EACH):
                own.tag("app:1", f"w{writer}/t:{i}")

    writers = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    watcher.join(WATCH_TIMEOUT)
    assert not watcher.is_alive()

    cursors = [e.cursor for e in seen]
    assert cursors == list(range(cursors[0], cursors[0] + len(seen)))  # commit order, no gap
    assert stream.caught_up is not None
    assert cursors[0] == stream.caught_up + 1  # nothing before the mark is replayed
    assert {e.kind for e in seen} == {EventKind.TAG}
    names = [e.name.familiar for e in seen if e.name is not None]
    assert sorted(names) == sorted(f"w{w}/t:{i}" for w in range(WRITERS) for i in range(TAGS_EACH))
    for w in range(WRITERS):  # each writer's tags were committed one after the other
        own = [n for n in names if n.startswith(f"w{w}/")]
        assert own == [f"w{w}/t:{i}" for i in range(TAGS_EACH)]
    first = seen[0]
    assert first.image_id == APP.image_id
    assert first.labels == {"team": "blue"}
    assert first.time is not None
    assert first.name is not None
    assert first.name.canonical == f"docker.io/{first.name.familiar}"
    assert first.target_digest.startswith("sha256:")


def test_a_reconnect_from_the_cursor_loses_and_repeats_nothing(client: ImageStoreClient) -> None:
    for i in range(5):
        client.tag("app:1", f"before:{i}")
    first: list[Event] = []
    with client.watch_events(since_oldest=True, timeout=WATCH_TIMEOUT) as stream:
        for event in stream:
            first.append(event)
            if len(first) == 3:
                break
        resume = stream.cursor
    assert resume == first[-1].cursor
    for i in range(3):
        client.tag("app:1", f"after:{i}")
    rest: list[Event] = []
    again = client.watch_events(resume, timeout=WATCH_TIMEOUT)
    wanted = {"before:3", "before:4", "after:0", "after:1", "after:2"}
    for event in again:
        rest.append(event)
        if event.name is not None and event.name.familiar == "after:2":
            break
    everything = [*first, *rest]
    cursors = [e.cursor for e in everything]
    assert cursors == sorted(set(cursors))  # nothing twice, in order
    tagged = [e.name.familiar for e in everything if e.kind is EventKind.TAG and e.name]
    assert set(tagged) >= wanted
    assert tagged[-5:] == ["before:3", "before:4", "after:0", "after:1", "after:2"]


def test_an_expired_cursor_is_out_of_range_with_the_oldest_kept(tmp_path: Path) -> None:
    small = start_server(
        tmp_path / "root",
        "--listen", "127.0.0.1:0",
        "--events-max-count", "3",
    )  # fmt: skip
    try:
        with ImageStoreClient(small.address, timeout=30) as client:
            client.load(io.BytesIO(docker_archive(APP))).result()
            for i in range(10):
                client.tag("app:1", f"many:{i}")
            with pytest.raises(errors.CursorExpired) as expired:
                list(client.watch_events(1, timeout=WATCH_TIMEOUT))
            assert expired.value.status == "OUT_OF_RANGE"
            assert expired.value.metadata["cursor"] == "1"
            oldest = int(expired.value.metadata["oldest"])
            assert oldest > 1
            kept: list[Event] = []
            with client.watch_events(since_oldest=True, timeout=WATCH_TIMEOUT) as stream:
                for event in stream:
                    kept.append(event)
                    if len(kept) == 3:
                        break
            assert kept[0].cursor == oldest
            with pytest.raises(errors.CursorInvalid):
                list(client.watch_events(10**9, timeout=WATCH_TIMEOUT))
    finally:
        assert small.stop() == 0, "".join(small.stderr_lines)[-3000:]


def test_filters_pick_the_events(client: ImageStoreClient) -> None:
    client.tag("app:1", "gone:1")
    client.remove(["gone:1"])
    with client.watch_events(
        since_oldest=True, filters=["event=untag"], timeout=WATCH_TIMEOUT
    ) as stream:
        untag = next(iter(stream))
    assert untag.kind is EventKind.UNTAG
    assert untag.name == ImageName("gone:1", "docker.io/library/gone:1")
    with pytest.raises(errors.FilterInvalid):
        list(client.watch_events(filters=["colour=red"], timeout=WATCH_TIMEOUT))


def test_the_async_watch_sees_changes_and_ends_at_its_deadline(
    client: ImageStoreClient, server: Server
) -> None:
    async def scenario() -> None:
        async with AsyncImageStoreClient(server.address, timeout=30) as watcher:
            caught_up = asyncio.Event()
            stream = watcher.watch_events(
                timeout=WATCH_TIMEOUT, on_caught_up=lambda cursor: caught_up.set()
            )
            seen: list[Event] = []

            async def read() -> None:
                async for event in stream:
                    seen.append(event)
                    if len(seen) == 2:
                        return

            reading = asyncio.create_task(read())
            await caught_up.wait()
            await watcher.tag("app:1", "async:1")
            await watcher.tag("app:1", "async:2")
            await reading
            assert [e.name.familiar for e in seen if e.name] == ["async:1", "async:2"]

            # a watch with nothing to say ends at its deadline, and says so
            quiet = watcher.watch_events(filters=["event=prune"], timeout=1.0)
            with pytest.raises(errors.DeadlineExceeded):
                async for _ in quiet:
                    pass
            assert quiet.caught_up is not None

    asyncio.run(scenario())
