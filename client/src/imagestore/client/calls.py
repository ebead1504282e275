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

from collections.abc import Callable, Iterator
from typing import Any, Generic, Self, TypeVar

import grpc

from imagestore import errors
from imagestore.client import convert, models
from imagestore.client.readers import EventPosition, Events, Reader

T = TypeVar("T")
R = TypeVar("R")

#: what ``_advance`` returns once the stream has ended
_END: Any = object()


class Stream(Generic[T]):
    """A server stream's items, read as they arrive (iterate it once)."""

    def __init__(
        self,
        call: Any,
        reader: Reader[T, object],
        on_end: Callable[[], object] | None = None,
    ) -> None:
        self._call = call
        self._reader = reader
        self._on_end = on_end
        self._ended = False
        #: what ended the call, raised again to whoever reads on
        self._failure: errors.ImageStoreError | None = None

    def __iter__(self) -> Iterator[T]:
        try:
            while (item := self._advance()) is not _END:
                yield item
        finally:
            if not self._ended:  # left early: nobody will read the rest
                self.cancel()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    @property
    def done(self) -> bool:
        """The stream has ended: read to its end, failed or cancelled."""
        return self._ended

    def cancel(self) -> None:
        """Cancel the call on the server; reading on raises Cancelled. Nothing
        happens once the stream has ended."""
        if not self._ended:
            self._call.cancel()
            self._end(errors.Cancelled(f"the {self._reader.what} was cancelled"))

    def _advance(self) -> Any:
        """The next item, or _END; raises the error the call ended with."""
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
        if self._failure is not None:
            raise self._failure
        return _END

    def _end(self, failure: errors.ImageStoreError | None) -> None:
        self._ended = True
        self._failure = failure
        if self._on_end is not None:
            self._on_end()


class ResultStream(Stream[T], Generic[T, R]):
    """A server stream that ends with a result (Pull, Push, Load, Check)."""

    _reader: Reader[T, R]

    def result(self) -> R:
        """Read what is left of the stream (dropping its items), then return
        the result; raises the call's error, and Unavailable when the stream
        ended without its result."""
        while self._advance() is not _END:
            pass
        found = self._reader.result()
        if found is None:
            raise errors.Unavailable(f"the {self._reader.what} ended without its result")
        return found


class EventStream(Stream[models.Event], EventPosition):
    """WatchEvents: events in commit order until the call ends (its deadline,
    ``cancel()``, the server stopping); ``caught_up`` and ``cursor`` say where
    the watch stands."""

    _reader: Events
