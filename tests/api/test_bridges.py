"""The thread/async bridges of ``imagestore.bridges`` and the server's pools
(``imagestore.api.pools``), with real threads.

Every test synchronises on events (``threading.Event`` for the blocking side,
``asyncio.Event`` for the loop), never on sleeps. "The coroutine waits" is
shown by letting the loop turn many times (``settle()``: zero-length yields,
no clock) while the blocking side is held, and by the order in which the two
sides log their ends. Each test also checks that asyncio logged nothing (no
exception left unretrieved, no task destroyed pending).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import os
import random
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from imagestore import bridges, hashing
from imagestore.api import pools as server_pools
from imagestore.api.pools import Pools
from imagestore.bridges import InputCancelledError, WorkerPool, with_events
from imagestore.registry import blocking

#: a deadline for a thread waiting on the test, so a broken bridge fails instead of hanging
HOLD = 30.0
T = TypeVar("T")
#: loop turns that let a coroutine finish if nothing holds it
TURNS = 50

pytestmark = pytest.mark.timeout(120)


class JobError(Exception):
    """An error of the test's own type, raised on the blocking side."""


class Signal:
    """An event set from any thread and awaited on the loop."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def set(self) -> None:
        self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self) -> None:
        await self._event.wait()


async def settle() -> None:
    """Let the loop turn many times: whatever is not held finishes."""
    for _ in range(TURNS):
        await asyncio.sleep(0)


def run_async(test: Callable[[], Awaitable[None]]) -> None:
    """Run ``test()`` in a fresh loop; fail on anything asyncio logged meanwhile."""
    logged: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: logged.append(ctx))
        await test()
        gc.collect()  # an unretrieved outcome is reported when it is collected
        await settle()

    asyncio.run(main())
    assert not logged, [context.get("message") for context in logged]


async def blocked_pool(pool: WorkerPool) -> tuple[threading.Event, asyncio.Task[None]]:
    """Fill a one-thread ``pool`` with a job that runs until the returned event is set."""
    release = threading.Event()
    started = Signal()

    def hold() -> None:
        started.set()
        release.wait(HOLD)

    task = asyncio.ensure_future(pool.run(hold))
    await started.wait()
    return release, task


async def collect(stream: AsyncIterator[T], into: list[T]) -> None:
    """Append every item of ``stream`` to ``into`` (what came before an error stays)."""
    async for item in stream:
        into.append(item)


async def drained(pool: WorkerPool) -> None:
    """Return once every job queued on ``pool`` before this call has been taken (FIFO)."""
    await pool.run(lambda: None)


# ---- run: one blocking call ------------------------------------------------------


def test_run_returns_the_result_on_a_thread_of_the_pool() -> None:
    async def test() -> None:
        pool = WorkerPool("test-run", 2)
        try:
            name = await pool.run(lambda: threading.current_thread().name)
            assert name.startswith("test-run")
            assert await pool.run(divmod, 7, 2) == (3, 1)
            assert await pool.run(sorted, [3, 1, 2], reverse=True) == [3, 2, 1]
        finally:
            pool.join()

    run_async(test)


def test_a_batch_pool_runs_its_jobs_as_batch_work_and_a_plain_one_does_not() -> None:
    """Transfers are throughput work: waking, their threads do not preempt the
    event loop (docs/design.md §2)."""

    started_as = os.sched_getscheduler(0)  # SCHED_OTHER, unless pytest itself runs as batch

    async def test() -> None:
        batch, plain = WorkerPool("test-batch", 1, batch=True), WorkerPool("test-plain", 1)
        try:
            assert await batch.run(os.sched_getscheduler, 0) == os.SCHED_BATCH
            assert await plain.run(os.sched_getscheduler, 0) == started_as
        finally:
            batch.join()
            plain.join()
        assert await blocking.in_thread(os.sched_getscheduler, 0) == os.SCHED_BATCH
        assert os.sched_getscheduler(0) == started_as  # the loop's own thread

    run_async(test)


def test_the_hasher_threads_a_transfer_starts_are_batch_work_too() -> None:
    """A decoder started on a transfer thread hashes on a thread of its own,
    which inherits the transfer thread's policy."""
    layer = gzip.compress(random.Random(3).randbytes(3 << 20), compresslevel=1)

    def hashers() -> set[int]:
        found = set()
        for task in Path("/proc/self/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                if (task / "comm").read_text().strip() == "imagestore-hash":
                    found.add(int(task.name))
        return found

    def policies_while_decoding() -> list[int]:
        before = hashers()  # any an earlier test left are not this one's
        with hashing.Decoder() as decoder:
            decoder.update(layer)
            assert decoder.threads_used == 2
            policies = [os.sched_getscheduler(tid) for tid in hashers() - before]
            decoder.finish()
        return policies

    async def test() -> None:
        policies = await blocking.in_thread(policies_while_decoding)
        assert policies
        assert set(policies) == {os.SCHED_BATCH}

    run_async(test)


def test_an_exception_from_the_thread_reaches_the_awaiter_as_itself() -> None:
    raised = JobError("from the thread")

    def fail() -> None:
        raise raised

    async def test() -> None:
        pool = WorkerPool("test-raise", 1)
        try:
            with pytest.raises(JobError) as caught:
                await pool.run(fail)
            assert caught.value is raised
        finally:
            pool.join()

    run_async(test)


def test_a_cancelled_run_waits_for_its_running_job_through_repeated_cancels() -> None:
    order: list[str] = []
    release = threading.Event()

    async def test() -> None:
        started = Signal()
        pool = WorkerPool("test-cancel", 1)

        def job() -> str:
            started.set()
            release.wait(HOLD)
            order.append("job ended")
            return "dropped"

        async def awaiter() -> None:
            try:
                await pool.run(job)
            except asyncio.CancelledError:
                order.append("cancellation completed")
                raise

        try:
            task = asyncio.ensure_future(awaiter())
            await started.wait()
            task.cancel()
            await settle()
            task.cancel()  # a second cancellation does not cut the wait short
            await settle()
            assert not task.done(), "the cancellation went on while the job still ran"
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert order == ["job ended", "cancellation completed"]
        finally:
            release.set()
            pool.join()

    run_async(test)


def test_a_run_cancelled_before_its_job_started_ends_at_once_and_the_job_never_runs() -> None:
    ran: list[str] = []

    async def test() -> None:
        pool = WorkerPool("test-unstarted", 1)
        release, holder = await blocked_pool(pool)
        try:
            queued = asyncio.ensure_future(pool.run(ran.append, "ran"))
            await settle()  # submitted, and waiting behind the holder
            queued.cancel()
            # Ends while the only thread is still held: nothing is waited for.
            with pytest.raises(asyncio.CancelledError):
                await queued
            assert not holder.done()
            release.set()
            await holder
            await drained(pool)
            assert ran == []
        finally:
            release.set()
            pool.join()

    run_async(test)


def test_a_run_cancelled_after_its_job_finished_drops_the_outcome_silently() -> None:
    async def test() -> None:
        for outcome in ("a result", JobError("nobody reads this")):
            job: Future[str] = Future()
            task = asyncio.ensure_future(bridges._outcome(job))
            await settle()  # the awaiter is suspended on the job
            # The job ends and, before the awaiter hears of it, the awaiter is cancelled.
            if isinstance(outcome, JobError):
                job.set_exception(outcome)
            else:
                job.set_result(outcome)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        # run_async fails if "exception was never retrieved" was logged.

    run_async(test)


def test_the_pool_runs_at_most_its_size_and_the_next_job_waits_for_a_thread() -> None:
    size = 2
    releases = [threading.Event() for _ in range(size + 1)]
    log: list[str] = []
    lock = threading.Lock()
    running = 0
    most = 0

    async def test() -> None:
        starts = [Signal() for _ in range(size + 1)]
        pool = WorkerPool("test-bound", size)

        def job(number: int) -> None:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
                log.append(f"start {number}")
            starts[number].set()
            releases[number].wait(HOLD)
            with lock:
                running -= 1

        try:
            tasks = [asyncio.ensure_future(pool.run(job, n)) for n in range(size + 1)]
            for number in range(size):
                await starts[number].wait()
            await settle()
            threads = [t for t in threading.enumerate() if t.name.startswith("test-bound")]
            assert len(threads) == size
            assert f"start {size}" not in log
            with lock:
                log.append("release 0")
            releases[0].set()
            await starts[size].wait()  # the waiting job takes the freed thread
            for release in releases:
                release.set()
            await asyncio.gather(*tasks)
            assert most == size
            assert log.index("release 0") < log.index(f"start {size}")
        finally:
            for release in releases:
                release.set()
            pool.join()

    run_async(test)


def test_the_pools_are_bounded_and_the_unary_pool_is_as_large_as_the_default_executor() -> None:
    async def test() -> None:
        pools = Pools(load_workers=5)
        try:
            assert pools.loads.size == 5
            assert pools.streams.size == server_pools.STREAM_WORKERS <= 16
            # asyncio.to_thread ran unary calls on the default executor: no fewer threads now.
            default = ThreadPoolExecutor()
            assert pools.unary.size >= default._max_workers
            default.shutdown()
            assert Pools().loads.size == server_pools.DEFAULT_LOAD_WORKERS
        finally:
            await pools.shutdown()
        with pytest.raises(ValueError, match="at least one thread"):
            WorkerPool("test-empty", 0)

    run_async(test)


# ---- stream: a blocking generator in steps ---------------------------------------


class Counted:
    """A generator factory that counts how often the generator starts and ends."""

    def __init__(self, items: list[int], *, raise_at: int | None = None) -> None:
        self.items = items
        self.raise_at = raise_at
        self.made = 0
        self.closed = 0
        self.closed_on: list[str] = []
        self.hold_at: int | None = None
        self.holding: Signal | None = None
        self.release = threading.Event()

    def __call__(self) -> Generator[int, None, None]:
        self.made += 1
        try:
            for index, item in enumerate(self.items):
                if index == self.hold_at and self.holding is not None:
                    self.holding.set()
                    self.release.wait(HOLD)
                if index == self.raise_at:
                    raise JobError(f"item {index}")
                yield item
        finally:
            self.closed += 1
            self.closed_on.append(threading.current_thread().name)


def test_a_stream_yields_every_item_in_order_and_ends_its_generator_once() -> None:
    async def test() -> None:
        pool = WorkerPool("test-stream", 2)
        make = Counted(list(range(10)))
        try:
            assert [item async for item in pool.stream(make, 3)] == list(range(10))
            assert (make.made, make.closed) == (1, 1)
            assert make.closed_on[0].startswith("test-stream")
        finally:
            pool.join()

    run_async(test)


def test_a_stream_left_early_closes_its_generator_once_before_aclose_returns() -> None:
    async def test() -> None:
        pool = WorkerPool("test-early", 2)
        make = Counted(list(range(100)))
        try:
            stream = pool.stream(make, 1)
            assert await anext(stream) == 0
            assert await anext(stream) == 1
            await stream.aclose()
            assert (make.made, make.closed) == (1, 1)
            assert make.closed_on[0].startswith("test-early")
            await settle()
            await drained(pool)  # no step still queued restarts it
            assert (make.made, make.closed) == (1, 1)
        finally:
            pool.join()

    run_async(test)


def test_a_stream_cancelled_while_its_step_blocks_waits_for_the_generator_to_close() -> None:
    order: list[str] = []

    async def consume(stream: AsyncIterator[int]) -> None:
        try:
            async for _ in stream:
                pass
        except asyncio.CancelledError:
            order.append("cancellation completed")
            raise

    async def test() -> None:
        pool = WorkerPool("test-stream-cancel", 2)
        make = Counted(list(range(10)))
        make.hold_at, make.holding = 2, Signal()
        try:
            task = asyncio.ensure_future(consume(pool.stream(make, 1)))
            await make.holding.wait()  # a step is blocked inside the generator
            task.cancel()
            await settle()
            assert not task.done(), "the cancellation went on while the step still ran"
            assert make.closed == 0
            order.append("released")
            make.release.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert order == ["released", "cancellation completed"]
            assert (make.made, make.closed) == (1, 1)
        finally:
            make.release.set()
            pool.join()

    run_async(test)


def test_a_stream_cancelled_before_its_first_step_never_makes_its_generator() -> None:
    async def test() -> None:
        pool = WorkerPool("test-stream-unstarted", 1)
        release, holder = await blocked_pool(pool)
        make = Counted([1, 2, 3])
        try:
            task = asyncio.ensure_future(anext(pool.stream(make, 1)))
            await settle()  # its first step waits behind the holder
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not holder.done()  # it ended without waiting for a thread
            release.set()
            await holder
            await drained(pool)
            assert (make.made, make.closed) == (0, 0)
        finally:
            release.set()
            pool.join()

    run_async(test)


def test_a_stream_whose_generator_raises_passes_the_error_on_and_ends_it_once() -> None:
    async def test() -> None:
        pool = WorkerPool("test-stream-raise", 2)
        make = Counted(list(range(10)), raise_at=4)
        seen: list[int] = []
        try:
            with pytest.raises(JobError, match="item 4"):
                await collect(pool.stream(make, 2), seen)
            assert seen == [0, 1, 2, 3]
            assert (make.made, make.closed) == (1, 1)
        finally:
            pool.join()

    run_async(test)


# ---- feed: a blocking job fed from the loop ----------------------------------------


def summing(inputs: Iterator[int], emit: Callable[[str], None]) -> str:
    """A fed job: reports each input, returns their sum."""
    total = 0
    for number in inputs:
        total += number
        emit(f"got {number}")
    return f"sum {total}"


async def numbers(count: int) -> AsyncIterator[int]:
    for number in range(count):
        yield number


def test_a_fed_job_gets_every_input_and_its_events_then_result_come_back() -> None:
    async def test() -> None:
        pool = WorkerPool("test-feed", 1)
        try:
            out = [event async for event in pool.feed(numbers(20), summing, 4)]
            assert out == [f"got {n}" for n in range(20)] + [f"sum {sum(range(20))}"]
        finally:
            pool.join()

    run_async(test)


def test_a_fed_job_is_never_more_than_the_window_behind_its_source() -> None:
    window = 3
    taken = 0

    async def endless() -> AsyncIterator[int]:
        nonlocal taken
        while True:
            taken += 1
            yield taken

    release = threading.Event()

    async def test() -> None:
        started = Signal()
        pool = WorkerPool("test-window", 1)

        def slow(inputs: Iterator[int], emit: Callable[[str], None]) -> str:
            started.set()
            release.wait(HOLD)  # reads nothing until the test lets go
            first = [next(inputs) for _ in range(2 * window)]
            return f"{first[0]}..{first[-1]}"

        try:
            stream = pool.feed(endless(), slow, window)
            result = asyncio.ensure_future(anext(stream))
            await started.wait()
            await settle()
            # the window's items queued, and one in hand waiting for room
            assert taken <= window + 1
            release.set()
            assert await result == f"1..{2 * window}"
            await stream.aclose()
        finally:
            release.set()
            pool.join()

    run_async(test)


def test_a_fed_job_cancelled_while_it_waits_for_input_stops_and_is_waited_for() -> None:
    order: list[str] = []
    ends: list[BaseException] = []

    def job(inputs: Iterator[int], emit: Callable[[str], None]) -> str:
        try:
            for number in inputs:
                emit(f"got {number}")
            return "whole"
        except BaseException as exc:
            ends.append(exc)
            order.append("job ended")
            raise

    async def stalled() -> AsyncIterator[int]:
        yield 1
        await asyncio.Event().wait()  # stalls: nobody sets it
        yield 2  # pragma: no cover - never reached

    async def consume(stream: AsyncIterator[str]) -> None:
        try:
            async for _ in stream:
                pass
        except asyncio.CancelledError:
            order.append("cancellation completed")
            raise

    async def test() -> None:
        pool = WorkerPool("test-feed-cancel", 1)
        try:
            stream = pool.feed(stalled(), job, 2)
            assert await anext(stream) == "got 1"  # the job now waits for input
            task = asyncio.ensure_future(consume(stream))
            await settle()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert order == ["job ended", "cancellation completed"]
            assert len(ends) == 1
            assert isinstance(ends[0], InputCancelledError)
            assert str(ends[0]) == "the call was cancelled"
        finally:
            pool.join()

    run_async(test)


def test_a_fed_job_whose_source_fails_sees_the_input_end_and_the_consumer_its_error() -> None:
    async def broken() -> AsyncIterator[int]:
        yield 1
        raise JobError("the client's stream broke")

    async def test() -> None:
        pool = WorkerPool("test-feed-source", 1)
        try:
            with pytest.raises(InputCancelledError, match="stopped sending"):
                async for _ in pool.feed(broken(), summing, 2):
                    pass
        finally:
            pool.join()

    run_async(test)


def test_an_exception_of_a_fed_job_reaches_the_consumer_as_itself() -> None:
    raised = JobError("refused")

    def refuse(inputs: Iterator[int], emit: Callable[[str], None]) -> str:
        emit(f"first {next(inputs)}")
        raise raised

    async def test() -> None:
        pool = WorkerPool("test-feed-raise", 1)
        events: list[str] = []
        try:
            with pytest.raises(JobError) as caught:
                await collect(pool.feed(numbers(5), refuse, 2), events)
            assert caught.value is raised
            assert events == ["first 0"]
        finally:
            pool.join()

    run_async(test)


def test_a_fed_job_cancelled_before_it_started_never_runs() -> None:
    ran: list[str] = []

    def job(inputs: Iterator[int], emit: Callable[[str], None]) -> str:
        ran.append("ran")
        return "ran"

    async def test() -> None:
        pool = WorkerPool("test-feed-unstarted", 1)
        release, holder = await blocked_pool(pool)
        try:
            task = asyncio.ensure_future(anext(pool.feed(numbers(3), job, 2)))
            await settle()  # queued behind the holder
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not holder.done()  # it ended without waiting for a thread
            release.set()
            await holder
            await drained(pool)
            assert ran == []
        finally:
            release.set()
            pool.join()

    run_async(test)


# ---- with_events: an async job ------------------------------------------------------


def test_an_async_job_streams_its_events_then_its_result() -> None:
    async def job(emit: Callable[[str], None]) -> str:
        for number in range(3):
            emit(f"event {number}")
            await asyncio.sleep(0)
        return "result"

    async def test() -> None:
        assert [item async for item in with_events(job)] == [
            "event 0",
            "event 1",
            "event 2",
            "result",
        ]

    run_async(test)


def test_an_async_job_is_cancelled_and_waited_for_when_its_consumer_is_cancelled() -> None:
    order: list[str] = []

    async def test() -> None:
        cleaning = asyncio.Event()
        cleaned = asyncio.Event()

        async def job(emit: Callable[[str], None]) -> str:
            emit("started")
            try:
                await asyncio.Event().wait()  # until cancelled
                return "never"
            finally:
                cleaning.set()
                await cleaned.wait()  # its clean-up takes as long as the test says
                order.append("job ended")

        async def consume() -> None:
            try:
                async for _ in with_events(job):
                    pass
            except asyncio.CancelledError:
                order.append("cancellation completed")
                raise

        task = asyncio.ensure_future(consume())
        await settle()
        task.cancel()
        await cleaning.wait()
        task.cancel()  # a second cancellation does not cut the wait short
        await settle()
        assert not task.done(), "the cancellation went on while the job still cleaned up"
        cleaned.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert order == ["job ended", "cancellation completed"]

    run_async(test)


def test_an_exception_of_an_async_job_reaches_the_consumer_as_itself() -> None:
    raised = JobError("async")

    async def job(emit: Callable[[str], None]) -> str:
        emit("before")
        raise raised

    async def test() -> None:
        seen: list[str] = []
        with pytest.raises(JobError) as caught:
            await collect(with_events(job), seen)
        assert caught.value is raised
        assert seen == ["before"]

    run_async(test)


# ---- shutdown -----------------------------------------------------------------------


def test_shutdown_waits_for_running_jobs_while_the_loop_lets_a_cancelled_load_end() -> None:
    ends: list[str] = []

    async def stalled() -> AsyncIterator[int]:
        await asyncio.Event().wait()
        yield 0  # pragma: no cover - never reached

    async def test() -> None:
        pools = Pools(load_workers=1)
        started = Signal()

        def loader(inputs: Iterator[int], emit: Callable[[str], None]) -> str:
            started.set()
            try:
                return str(sum(inputs))
            except InputCancelledError:
                ends.append("input cancelled")
                raise

        load = asyncio.ensure_future(anext(pools.loads.feed(stalled(), loader, 2)))
        await pools.unary.run(lambda: None)  # a thread in each of two pools
        await started.wait()  # the loader runs, waiting for input
        shutdown = asyncio.ensure_future(pools.shutdown())
        await settle()
        assert not shutdown.done(), "shutdown did not wait for the running loader"
        load.cancel()  # as the server cancels the calls still open
        with pytest.raises(asyncio.CancelledError):
            await load
        await shutdown
        assert ends == ["input cancelled"]
        with pytest.raises(RuntimeError):
            await pools.unary.run(lambda: None)  # no more jobs once shut down
        # the pools' threads are gone
        names = ("imagestore-unary", "imagestore-stream", "imagestore-load")
        assert not [t for t in threading.enumerate() if t.name.startswith(names)]

    run_async(test)
