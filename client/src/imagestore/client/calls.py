"""The blocking client's server streams: objects that iterate a call's items,
end it early, and give its result.

    with client.pull("redis") as call:   # leaving the block cancels the call
        for progress in call:            # Progress items as they come
            ...
        pulled = call.result()           # the rest of the stream, then the result

``result()`` alone drains the stream. Breaking out of the ``for`` loop, an
exception in its body (Ctrl-C included), ``cancel()`` or leaving the ``with``
block cancels the call on the server; reading on afterwards raises
``errors.Cancelled``. A call's ``timeout`` is a gRPC deadline over the whole
stream: past it, reading raises ``errors.DeadlineExceeded``.
"""

from __future__ import annotations

from collections.abc import Iterator
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


class Stream(StreamState[T]):
    """A server stream's items, read as they arrive (iterate it once)."""

    def __iter__(self) -> Iterator[T]:
        try:
            while (item := self._advance()) is not END:
                yield item
        finally:
            if not self._ended:  # left early: nobody will read the rest
                self.cancel()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def cancel(self) -> None:
        """Cancel the call on the server; reading on raises Cancelled. Nothing
        happens once the stream has ended."""
        if not self._ended:
            self._call.cancel()
            self._end(errors.Cancelled(f"the {self._reader.what} was cancelled"))

    def _advance(self) -> Any:
        """The next item, or END; raises the error the call ended with."""
        while not self._ended:
            try:
                message = next(self._call)
            except StopIteration:
                self._end(None)
                break
            except grpc.RpcError as failure:
                self._end(convert.error(failure))
                break
            except BaseException:  # Ctrl-C while waiting: end the call too
                self.cancel()
                raise
            item = self._reader.read(message)
            if item is not None:
                return item
        return self._finished()


class ResultStream(Stream[T], Generic[T, R]):
    """A server stream that ends with a result (Pull, Push, Load, Check)."""

    _reader: Reader[T, R]

    def result(self) -> R:
        """Read what is left of the stream (dropping its items), then return
        the result; raises the call's error, and Unavailable when the stream
        ended without its result."""
        while self._advance() is not END:
            pass
        return final_result(self._reader)


class EventStream(Stream[models.Event], EventPosition):
    """WatchEvents: events in commit order until the call ends (its deadline,
    ``cancel()``, the server stopping); ``caught_up`` and ``cursor`` say where
    the watch stands."""

    _reader: Events
