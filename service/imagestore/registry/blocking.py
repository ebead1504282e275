"""Blocking store work driven from the event loop, never abandoned half-way.

Pull and Push hash and write on the transfer pool, a ``WorkerPool`` with the
one cancellation rule of ``imagestore/bridges.py``: a cancelled coroutine
waits for the thread to finish its step (a job not yet started never runs),
so leases end after the work they protect.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import AbstractContextManager, asynccontextmanager
from typing import Any, TypeVar

from imagestore.bridges import WorkerPool

T = TypeVar("T")

#: threads on which registry transfers hash and write, apart from the RPC pools
TRANSFER_WORKERS = 8
#: batch work, and so are the decoders' hasher threads they start (docs/design.md §2)
_TRANSFERS = WorkerPool("imagestore-transfer", TRANSFER_WORKERS, batch=True)


async def in_thread(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` on a transfer thread, under the cancellation rule."""
    return await _TRANSFERS.run(function, *args)


@asynccontextmanager
async def entered_in_thread(manager: AbstractContextManager[T]) -> AsyncIterator[T]:
    """Enter and exit a blocking context manager on a transfer thread (entered,
    it is always exited: a cancellation waits for the enter, then exits)."""
    value = await in_thread(manager.__enter__)
    try:
        yield value
    finally:
        await in_thread(manager.__exit__, None, None, None)


async def run_all(jobs: Iterable[Coroutine[Any, Any, T]], limit: int) -> list[T]:
    """Run jobs concurrently, at most ``limit`` at once: that many workers each take
    the next job when done, so a pull of thousands of layers holds ``limit`` tasks,
    not thousands (pass a generator: jobs are then made only as they are taken).
    The first failure cancels the rest and is raised as itself (not wrapped in an
    ExceptionGroup), so it maps to one status. Results come in the jobs' order."""
    queue = enumerate(jobs)
    results: dict[int, T] = {}

    async def worker() -> None:
        # the loops share one iterator: each job is taken by exactly one worker
        for number, job in queue:
            results[number] = await job

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, limit)):
                group.create_task(worker())
    except BaseExceptionGroup as failures:
        for _, unstarted in queue:
            unstarted.close()  # made but never run (a list was passed): no warning
        raise _first_leaf(failures) from None
    return [results[number] for number in range(len(results))]


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            return _first_leaf(error)
        return error
    return group
