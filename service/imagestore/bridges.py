"""Bridges between the event loop and blocking work, on bounded, named pools.

grpc.aio runs every handler on one event loop, and the registry client runs
on it too, while the store, the archive reader and the archive writer block.
Async code crosses over to blocking code through one of these bridges, and
through nothing else (the server's pools: ``api/pools.py``; the registry's
transfer pool: ``registry/blocking.py``):

- ``WorkerPool.run``: one blocking call (the unary RPCs).
- ``WorkerPool.stream``: a blocking generator advanced a few items at a time
  (Save, ReadBlob), so a stream whose client does not read holds no thread.
- ``WorkerPool.feed``: a blocking job that consumes an async stream of inputs,
  reports events and returns a result (Load).
- ``with_events``: an async job that reports events and returns a result
  (Pull, Push; their blocking parts run on the registry's transfer pool,
  ``registry/blocking.py``, a ``WorkerPool`` too).

**The cancellation rule**, honoured by every bridge: when the coroutine
awaiting a job is cancelled (the client went away, a deadline passed, the
server is stopping), a job not yet started never runs; a running job is told
to stop (a generator is closed, a fed job's input ends in ``InputCancelledError``,
an async job is cancelled; a plain call cannot be interrupted and runs to its
end); and the coroutine waits for the job to end, through any further
cancellation, before its own cancellation goes on. So the leases a job holds
end before the awaiting coroutine's cancellation completes, and no job is left
running unobserved. A job's exception reaches the awaiting coroutine as
itself, type and all; an outcome nobody is left to read is dropped without a
log line.

The threading model and why it is so: docs/design.md §2.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import queue
import threading
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Generator,
    Iterator,
)
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, ParamSpec, TypeVar

T = TypeVar("T")
Item = TypeVar("Item")  # an input of a fed job
P = ParamSpec("P")


class InputCancelledError(Exception):
    """A fed job's input ended early: the client went away or the call was cancelled."""


class _Marker:
    """An item of a queue that is not data: the end, or a cancellation."""

    def __init__(self, reason: str | None) -> None:
        self.reason = reason


_END = _Marker(None)


def _seen(future: asyncio.Future[Any]) -> None:
    """Mark a future's outcome as retrieved (whoever awaits it still gets it)."""
    if not future.cancelled():
        future.exception()


async def _finish(future: asyncio.Future[Any]) -> None:
    """Wait until ``future`` is done, even if cancelled meanwhile; a cancellation
    received while waiting is raised once it is done."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait({future})
        except asyncio.CancelledError:
            cancelled = True
    _seen(future)
    if cancelled:
        raise asyncio.CancelledError


async def _outcome(job: Future[T]) -> T:
    """The result of a job submitted to a pool, under the cancellation rule."""
    waiting = asyncio.wrap_future(job)
    try:
        return await asyncio.shield(waiting)
    except asyncio.CancelledError:
        if not job.cancel():  # running or done: wait for its end
            await _finish(waiting)
        raise


class _Stepper(Generic[T]):
    """A blocking generator advanced a few items at a time by pool workers.

    Steps and the final close never overlap (a lock); a step after the close
    finds nothing, so a step still queued when the consumer left cannot
    restart the work."""

    def __init__(self, make: Callable[[], Generator[T, None, None]]) -> None:
        self._make = make
        self._generator: Generator[T, None, None] | None = None
        self._closed = False
        self._lock = threading.Lock()

    def step(self, count: int) -> tuple[list[T], bool]:
        """Up to ``count`` more items, and whether the generator is finished."""
        with self._lock:
            if self._closed:
                return [], True
            if self._generator is None:
                self._generator = self._make()
            items: list[T] = []
            for _ in range(count):
                try:
                    items.append(next(self._generator))
                except StopIteration:
                    self._closed = True
                    return items, True
            return items, False

    def close(self) -> None:
        """Close the generator (its ``finally`` blocks end its leases)."""
        with self._lock:
            self._closed = True
            if self._generator is not None:
                self._generator.close()


def run_as_batch() -> None:
    """Make the calling thread batch work for the scheduler (Linux ``SCHED_BATCH``;
    elsewhere, or where it is refused, nothing). Threads it starts inherit it."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


class WorkerPool:
    """A named pool of at most ``size`` threads, and the bridges that run jobs on it.

    A ``batch`` pool's threads are throughput work (:func:`run_as_batch`): waking,
    they do not preempt the thread on the core, so they never push the event loop
    aside to take their turn (docs/design.md §2)."""

    def __init__(self, name: str, size: int, *, batch: bool = False) -> None:
        if size < 1:
            raise ValueError(f"pool {name} needs at least one thread (got {size})")
        self.name = name
        self.size = size
        self._executor = ThreadPoolExecutor(
            size, thread_name_prefix=name, initializer=run_as_batch if batch else None
        )

    def _submit(self, function: Callable[[], T]) -> Future[T]:
        # The caller's context variables go along, as with asyncio.to_thread.
        return self._executor.submit(contextvars.copy_context().run, function)

    async def run(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``function(*args, **kwargs)`` on a pool thread, under the cancellation rule."""
        return await _outcome(self._submit(functools.partial(function, *args, **kwargs)))

    async def stream(
        self, make: Callable[[], Generator[T, None, None]], ahead: int
    ) -> AsyncGenerator[T, None]:
        """The items of the generator ``make()``, run on the pool up to ``ahead``
        items in front of the consumer, so producing overlaps with sending.

        No thread is held between steps: a stream whose consumer does not read
        costs its ``ahead`` buffered items and its generator's state (an open
        file), not a thread. However the consumer stops (the end, an error,
        cancellation, ``aclose()``), the generator is closed on a pool thread
        and waited for, which ends its leases."""
        stepper = _Stepper(make)
        buffered: deque[T] = deque()
        pending: Future[tuple[list[T], bool]] | None = None
        finished = False
        stepped = False  # a step has run: the generator may be open
        try:
            while True:
                if pending is not None and (pending.done() or not buffered):
                    items, finished = await _outcome(pending)
                    pending, stepped = None, True
                    buffered.extend(items)
                if pending is None and not finished and len(buffered) < ahead:
                    pending = self._submit(functools.partial(stepper.step, ahead - len(buffered)))
                if buffered:
                    yield buffered.popleft()
                elif finished:
                    return
        finally:
            # A step not started never runs; a running or failed one leaves the
            # close to a pool thread, which waits for it (the stepper's lock).
            never_ran = pending is None or pending.cancel()
            if finished or (never_ran and not stepped):
                stepper.close()  # nothing open, or done with: no thread needed
            else:
                await self._close(stepper)

    async def _close(self, stepper: _Stepper[Any]) -> None:
        try:
            closing = self._submit(stepper.close)
        except RuntimeError:  # the pool is shut down (server stopping): close here
            stepper.close()
        else:
            await _finish(asyncio.wrap_future(closing))

    async def feed(
        self,
        source: AsyncIterable[Item],
        job: Callable[[Iterator[Item], Callable[[T], None]], T],
        window: int,
    ) -> AsyncGenerator[T, None]:
        """Run ``job(inputs, emit)`` on a pool thread: ``inputs`` yields the items
        of ``source``, at most ``window`` of them waiting for the job; each event
        the job passes to ``emit`` is yielded as it comes, then its result.

        If the source fails, or the consumer stops before the end, ``inputs``
        raises ``InputCancelledError`` in the job, and the consumer waits for the
        job to end."""
        loop = asyncio.get_running_loop()
        inputs: queue.SimpleQueue[Item | _Marker] = queue.SimpleQueue()
        room = asyncio.Semaphore(window)
        events: asyncio.Queue[T | _Marker] = asyncio.Queue()

        def incoming() -> Iterator[Item]:
            while True:
                item = inputs.get()
                loop.call_soon_threadsafe(room.release)
                if item is _END:
                    return
                if isinstance(item, _Marker):
                    raise InputCancelledError(item.reason)
                yield item

        def emit(event: T) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        def run() -> T:
            try:
                return job(incoming(), emit)
            finally:
                loop.call_soon_threadsafe(events.put_nowait, _END)

        async def pump() -> None:
            try:
                async for item in source:
                    await room.acquire()
                    inputs.put(item)
                inputs.put(_END)
            except BaseException:
                inputs.put(_Marker("the client stopped sending"))
                raise

        started = self._submit(run)
        pumping = asyncio.ensure_future(pump())
        # How the feeding ended is nobody's news once the consumer has left.
        pumping.add_done_callback(_seen)
        try:
            while not isinstance(event := await events.get(), _Marker):
                yield event
            yield await _outcome(started)
        finally:
            pumping.cancel()
            if not started.done():
                # Said first, before the pump's own marker: the reason is the call's end.
                inputs.put(_Marker("the call was cancelled"))
                if not started.cancel():  # running: it reads the marker and ends
                    await _finish(asyncio.wrap_future(started))

    def close(self) -> None:
        """Take no more jobs; those queued and running carry on."""
        self._executor.shutdown(wait=False)

    def join(self) -> None:
        """Block until the jobs queued and running have ended and the threads are gone."""
        self._executor.shutdown(wait=True)


async def with_events(
    job: Callable[[Callable[[T], None]], Awaitable[T]],
) -> AsyncGenerator[T, None]:
    """Run ``job(emit)`` as a task: each event it passes to ``emit`` as it comes,
    then its result. If the consumer stops first, the task is cancelled and
    waited for (its lease ends before the consumer's cancellation goes on)."""
    events: asyncio.Queue[T | _Marker] = asyncio.Queue()

    async def run() -> T:
        try:
            return await job(events.put_nowait)
        finally:
            events.put_nowait(_END)

    task = asyncio.ensure_future(run())
    try:
        while not isinstance(event := await events.get(), _Marker):
            yield event
        yield await task
    finally:
        if not task.done():
            task.cancel()  # not started: its body never runs
            await _finish(task)
