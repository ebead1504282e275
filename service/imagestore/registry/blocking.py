"""Blocking store work driven from the event loop, never abandoned half-way.

A cancelled coroutine must not walk away from a thread that is still writing
an ingest or holding a lock: these helpers wait for the thread to finish
before the cancellation goes on, so leases end after the work they protect.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, asynccontextmanager
from typing import Any, TypeVar

T = TypeVar("T")

# Registry transfers hash and write on these threads, apart from the RPC pool.
_EXECUTOR = ThreadPoolExecutor(max_workers=8, thread_name_prefix="imagestore-transfer")


async def in_thread(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` on a transfer thread; a cancellation waits for it."""
    future = asyncio.get_running_loop().run_in_executor(_EXECUTOR, function, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait({future})
        raise


@asynccontextmanager
async def entered_in_thread(manager: AbstractContextManager[T]) -> AsyncIterator[T]:
    """Enter and exit a blocking context manager on a transfer thread."""
    future = asyncio.get_running_loop().run_in_executor(_EXECUTOR, manager.__enter__)
    try:
        value = await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait({future})
        if not future.cancelled() and future.exception() is None:
            await in_thread(manager.__exit__, None, None, None)
        raise
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
