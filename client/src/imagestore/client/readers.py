"""How each server stream's messages become what a client's stream object
yields and returns: one reader per call, shared by both clients.

A reader's ``read`` turns one message into an item to yield (or None for a
message that is not one: a result, a marker, a kind this client does not know);
``result`` is the stream's final value once it has ended (None: none came).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from imagestore import errors
from imagestore.client import convert, models

T = TypeVar("T")
R = TypeVar("R")
T_co = TypeVar("T_co", covariant=True)
R_co = TypeVar("R_co", covariant=True)


#: what a stream object's read step returns once the stream has ended
END: Any = object()


class Reader(Protocol[T_co, R_co]):
    """Reads one call's messages, in order."""

    #: what the call is, for messages ("pull", "load", "check"…)
    what: str

    def read(self, message: Any) -> T_co | None:
        """The item this message stands for, or None (nothing to yield)."""
        ...

    def result(self) -> R_co | None:
        """The stream's final value once it has ended; None when none came."""
        ...


class Transfer(Generic[R]):
    """Pull, Push and Load: Progress messages, then one typed result last."""

    def __init__(self, what: str, convert_result: Callable[[Any], R]) -> None:
        self.what = what
        self._convert = convert_result
        self._result: R | None = None

    def read(self, message: Any) -> models.Progress | None:
        kind = message.WhichOneof("response")
        if kind == "progress":
            return convert.progress(message.progress)
        if kind == "result":
            self._result = self._convert(message.result)
        return None

    def result(self) -> R | None:
        return self._result


class Check:
    """Check: progress, each problem and unrecorded blob as found, then the
    summary, which ends it; the result is the whole CheckReport."""

    what = "check"

    def __init__(self) -> None:
        self._problems: list[models.CheckProblem] = []
        self._unrecorded: list[str] = []
        self._summary: models.CheckSummary | None = None

    def read(self, message: Any) -> models.CheckUpdate | None:
        found = convert.check_event(message)
        if isinstance(found, models.CheckSummary):
            self._summary = found
            return None
        if isinstance(found, models.CheckProblem):
            self._problems.append(found)
        elif isinstance(found, models.UnrecordedBlob):
            self._unrecorded.append(found.digest)
        return found

    def result(self) -> models.CheckReport | None:
        if self._summary is None:
            return None
        return models.CheckReport(
            self._summary.ok,
            tuple(self._problems),
            self._summary.blobs_checked,
            self._summary.images_checked,
            tuple(self._unrecorded),
        )


class Items(Generic[T]):
    """A stream of items and no result: Save's chunks, ReadBlob's."""

    def __init__(self, what: str, item: Callable[[Any], T]) -> None:
        self.what = what
        self._item = item

    def read(self, message: Any) -> T | None:
        return self._item(message)

    def result(self) -> None:
        return None


def chunks(what: str) -> Items[bytes]:
    """Save's or ReadBlob's bytes, chunk by chunk."""
    return Items(what, lambda message: bytes(message.chunk))


def blob_chunks() -> Items[models.BlobChunk]:
    """ReadBlob's chunks, each with its offset in the blob."""
    return Items("read", lambda message: models.BlobChunk(message.offset, message.chunk))


class Events:
    """WatchEvents: events, and once the marker that the replay is done.

    ``cursor`` is where to resume without losing or repeating anything: the
    last event's cursor, or the caught-up mark when it is later (the journal's
    end when the replay finished), or the cursor asked for.
    """

    what = "event watch"

    def __init__(self, cursor: int, on_caught_up: Callable[[int], object] | None) -> None:
        self.cursor = cursor
        self.caught_up: int | None = None
        self._on_caught_up = on_caught_up

    def read(self, message: Any) -> models.Event | None:
        kind = message.WhichOneof("response")
        if kind == "event":
            found = convert.event(message.event)
            self.cursor = max(self.cursor, found.cursor)
            return found
        if kind == "caught_up":
            self.caught_up = message.caught_up
            self.cursor = max(self.cursor, message.caught_up)
            if self._on_caught_up is not None:
                self._on_caught_up(message.caught_up)
        return None

    def result(self) -> None:
        return None


class EventPosition:
    """``caught_up`` and ``cursor`` of a WatchEvents stream object (both clients')."""

    _reader: Events

    @property
    def caught_up(self) -> int | None:
        """None until the server has sent every event the cursor asked to
        replay; then the cursor of the last event committed at that moment."""
        return self._reader.caught_up

    @property
    def cursor(self) -> int:
        """Where to resume (``watch_events(stream.cursor)``) without losing or
        repeating an event: the last event read, or the caught-up mark when
        later. With ``cursor=0`` (from now on), meaningful once caught up."""
        return self._reader.cursor


class StreamState(Generic[T]):
    """What both clients' stream objects keep: the call, its reader, and how
    the stream ended (their read loops differ: blocking or awaited)."""

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

    @property
    def done(self) -> bool:
        """The stream has ended: read to its end, failed or cancelled."""
        return self._ended

    def _end(self, failure: errors.ImageStoreError | None) -> None:
        self._ended = True
        self._failure = failure
        if self._on_end is not None:
            self._on_end()

    def _finished(self) -> Any:
        """What a read step returns once the stream has ended: END, or the
        error the call ended with, raised."""
        if self._failure is not None:
            raise self._failure
        return END


def final_result(reader: Reader[Any, R]) -> R:
    """The result a drained stream ended with; Unavailable when none came."""
    found = reader.result()
    if found is None:
        raise errors.Unavailable(f"the {reader.what} ended without its result")
    return found
