"""The asyncio client's server streams: the blocking client's stream objects
(``calls.py``), awaited.

    call = client.pull("redis")
    async for progress in call:   # Progress items as they come
        ...
    pulled = await call.result()  # the rest of the stream, then the result

``call.cancel()`` (from any task), cancelling the task that awaits the call,
leaving ``async with call:`` or breaking out of the ``async for`` loop cancels
the call on the server; reading on after ``cancel()`` raises
``errors.Cancelled``. A call's ``timeout`` is a gRPC deadline over the whole
stream: past it, reading raises ``errors.DeadlineExceeded``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Generic, Self, TypeVar

import grpc

from imagestore import errors
from imagestore.client import convert, models
from imagestore.client.readers import (
    END,
    EventPosition,
    Events,
    Reader,
    StreamState,
    final_result,
)

T = TypeVar("T")
R = TypeVar("R")


class AsyncStream(StreamState[T]):
    """A server stream's items, read as they arrive (iterate it once)."""

    def __aiter__(self) -> AsyncIterator[T]:
        return self._items()

    async def _items(self) -> AsyncIterator[T]:
        try:
            while (item := await self._advance()) is not END:
                yield item
        finally:
            if not self._ended:  # left early: nobody will read the rest
                self.cancel()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()

    def cancel(self) -> None:
        """Cancel the call on the server; reading on raises Cancelled. Nothing
        happens once the stream has ended."""
        if not self._ended:
            self._end(errors.Cancelled(f"the {self._reader.what} was cancelled"))
            self._call.cancel()

    async def _advance(self) -> Any:
        """The next item, or END; raises the error the call ended with."""
        while not self._ended:
            try:
                message = await self._call.read()
            except grpc.RpcError as failure:
                self._end(convert.error(failure))
                break
            except asyncio.CancelledError:
                if self._failure is not None and not _being_cancelled():
                    break  # our own cancel(), from another task: errors.Cancelled
                self.cancel()  # this task is cancelled: so is the call
                raise
            if message is grpc.aio.EOF:
                self._end(None)
                break
            item = self._reader.read(message)
            if item is not None:
                return item
        return self._finished()


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class AsyncResultStream(AsyncStream[T], Generic[T, R]):
    """A server stream that ends with a result (Pull, Push, Load, Check)."""

    _reader: Reader[T, R]

    async def result(self) -> R:
        """Read what is left of the stream (dropping its items), then return
        the result; raises the call's error, and Unavailable when the stream
        ended without its result."""
        while await self._advance() is not END:
            pass
        return final_result(self._reader)


class AsyncEventStream(AsyncStream[models.Event], EventPosition):
    """WatchEvents: events in commit order until the call ends (its deadline,
    ``cancel()``, the server stopping); ``caught_up`` and ``cursor`` say where
    the watch stands."""

    _reader: Events
