"""Repeated reads are answered from memory until the store next changes.

Unit tests of ``RecentAnswers`` against a store whose generation the test sets,
with reads the test releases (events, never sleeps); then the real server:
an Inspect after a Tag or a Remove sees the change.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from imagestore.api import answers
from imagestore.api.answers import RecentAnswers
from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.test_service import load
from tests.archives import ImageSpec
from tests.store.builders import layer_tar


class FakeStore:
    """What RecentAnswers reads of a store: its generation."""

    shared = False

    def __init__(self, generation: int | None = 1) -> None:
        self.generation = generation


def request(image: str) -> pb.InspectRequest:
    return pb.InspectRequest(image=image)


class Reads:
    """Answers made on demand, counted; ``gate`` (when set) holds each read."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.count = 0
        self.gate = gate
        self.started = asyncio.Event()

    def of(self, image: str, size: int = 0) -> Any:
        async def read() -> pb.InspectResponse:
            self.count += 1
            self.started.set()
            if self.gate is not None:
                await self.gate.wait()
            return pb.InspectResponse(
                image=pb.ImageSummary(id=f"sha256:{self.count:064x}", labels={"x": "y" * size})
            )

        return read


def run(test: Any) -> None:
    asyncio.run(test())


def test_a_repeated_question_is_answered_once_per_generation() -> None:
    async def test() -> None:
        store = FakeStore()
        kept = RecentAnswers(store)  # type: ignore[arg-type]
        reads = Reads()
        first = await kept.answer("Inspect", request("a"), reads.of("a"))
        assert await kept.answer("Inspect", request("a"), reads.of("a")) is first
        assert reads.count == 1
        other = await kept.answer("Inspect", request("b"), reads.of("b"))  # its own key
        assert other is not first
        assert reads.count == 2
        assert await kept.answer("History", request("a"), reads.of("a")) is not first
        store.generation = 2  # the store changed: everything is read again
        again = await kept.answer("Inspect", request("a"), reads.of("a"))
        assert again is not first
        assert reads.count == 4

    run(test)


def test_an_answer_read_while_the_store_changed_is_not_kept() -> None:
    async def test() -> None:
        store = FakeStore()
        kept = RecentAnswers(store)  # type: ignore[arg-type]
        reads = Reads(gate=asyncio.Event())
        reading = asyncio.ensure_future(kept.answer("Inspect", request("a"), reads.of("a")))
        await reads.started.wait()
        store.generation = 2  # a commit lands while the read is running
        assert reads.gate is not None
        reads.gate.set()
        stale = await reading
        fresh = await kept.answer("Inspect", request("a"), reads.of("a"))
        assert fresh is not stale
        assert reads.count == 2
        assert await kept.answer("Inspect", request("a"), reads.of("a")) is fresh

    run(test)


class SharedStore:
    """A shared catalog's store: its generation is read by
    ``confirm_generation_async``, which ``gate`` holds when it is cleared."""

    shared = True
    generation = None  # what its listener heard: not what kept answers go by

    def __init__(self) -> None:
        self.value = 1
        self.confirmed = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def confirm_generation_async(self) -> int:
        self.confirmed += 1
        value = self.value  # the counter as the query finds it
        self.entered.set()
        await self.gate.wait()
        return value


def test_a_shared_catalog_s_generation_is_read_after_each_call_began_one_read_for_many() -> None:
    async def test() -> None:
        store = SharedStore()
        kept = RecentAnswers(store)  # type: ignore[arg-type]
        reads = Reads()
        first = await kept.answer("Inspect", request("a"), reads.of("a"))
        assert store.confirmed == 1
        store.gate.clear()
        store.entered.clear()
        early = asyncio.ensure_future(kept.answer("Inspect", request("a"), reads.of("a")))
        await store.entered.wait()  # its read has begun
        # Two calls begin during that read: it may predate a commit acknowledged
        # before they began, so they wait for the next read, which they share.
        late = [
            asyncio.ensure_future(kept.answer("Inspect", request("a"), reads.of("a")))
            for _ in range(2)
        ]
        await asyncio.sleep(0)  # one turn of the loop: both are waiting
        store.value = 2  # another replica's commit
        store.gate.set()
        assert await early is first  # its generation was still 1
        answers = await asyncio.gather(*late)
        assert all(answer is not first for answer in answers)
        assert store.confirmed == 3  # three calls, two reads after the first
        assert await kept.answer("Inspect", request("a"), reads.of("a")) in answers

    run(test)


def test_nothing_is_kept_for_a_catalog_that_cannot_tell_its_changes() -> None:
    async def test() -> None:
        kept = RecentAnswers(FakeStore(generation=None))  # type: ignore[arg-type]
        reads = Reads()
        await kept.answer("Inspect", request("a"), reads.of("a"))
        await kept.answer("Inspect", request("a"), reads.of("a"))
        assert reads.count == 2

    run(test)


def test_answers_are_bounded_in_count_and_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(answers, "MAX_ANSWERS", 2)
    monkeypatch.setattr(answers, "MAX_ANSWER_BYTES", 3000)
    monkeypatch.setattr(answers, "MAX_KEPT_ANSWER_BYTES", 2000)

    async def test() -> None:
        kept = RecentAnswers(FakeStore())  # type: ignore[arg-type]
        reads = Reads()
        a = await kept.answer("Inspect", request("a"), reads.of("a"))
        await kept.answer("Inspect", request("b"), reads.of("b"))
        await kept.answer("Inspect", request("c"), reads.of("c"))  # "a" leaves: 2 at most
        assert await kept.answer("Inspect", request("a"), reads.of("a")) is not a
        assert reads.count == 4
        big = await kept.answer("Inspect", request("big"), reads.of("big", size=1500))
        await kept.answer("Inspect", request("big2"), reads.of("big2", size=1500))
        # two answers of ~1.5 kB exceed 3000 bytes: the older one left
        assert await kept.answer("Inspect", request("big"), reads.of("big")) is not big
        huge = await kept.answer("Inspect", request("huge"), reads.of("huge", size=2500))
        assert await kept.answer("Inspect", request("huge"), reads.of("huge")) is not huge
        assert reads.count == 9

    run(test)


def test_inspect_sees_every_change_through_the_real_server(
    stub: pb_grpc.ImageStoreServiceStub,
) -> None:
    load(stub, ImageSpec(tags=["app:1"], layers=[layer_tar({"a": b"1"})]))
    inspect = pb.InspectRequest(image="app:1")
    first = stub.Inspect(inspect)
    assert stub.Inspect(inspect) == first  # asked again: the same answer
    assert [n.familiar for n in first.image.repo_tags] == ["app:1"]
    stub.Tag(pb.TagRequest(source="app:1", target="app:2"))
    tagged = stub.Inspect(inspect)
    assert [n.familiar for n in tagged.image.repo_tags] == ["app:1", "app:2"]
    assert [e.created_by for e in stub.History(pb.HistoryRequest(image="app:2")).entries]
    stub.Remove(pb.RemoveRequest(images=["app:1"]))
    with pytest.raises(grpc.RpcError) as gone:
        stub.Inspect(inspect)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    assert [n.familiar for n in stub.Inspect(pb.InspectRequest(image="app:2")).image.repo_tags] == [
        "app:2"
    ]
