"""WatchEvents: the events journal, replayed from a cursor, then followed.

A watcher holds no events of its own beyond one batch: it reads the journal
(on the unary pool) after its cursor, sends what its filters select, and when
it has read everything, waits for a wake-up. One subscription to the store
serves every watcher: the store calls it on the writer's thread after each
change that wrote events commits, and it sets an asyncio event on the loop
(``call_soon_threadsafe``). So a slow watcher costs nothing but its cursor,
and one that falls behind the journal's retention learns it at its next read
(CURSOR_EXPIRED). At shutdown, :meth:`EventHub.close` ends every watch at
once, so the server's stop does not wait for its grace period on them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from imagestore import errors
from imagestore.api import convert
from imagestore.api.pools import Pools
from imagestore.store.filters import EventFilters
from imagestore.store.models import EventPage
from imagestore.store.store import Store
from imagestore.v1 import imagestore_pb2 as pb

#: events read from the journal at a time: what one watcher holds at most
BATCH = 256


def _expired(cursor: int, oldest: int) -> errors.CursorExpired:
    return errors.CursorExpired(
        f"cursor {cursor} is older than the events journal keeps: the oldest event kept"
        f" is {oldest}; watch again from there (cursor {oldest - 1}) or from now (cursor 0)",
        metadata={"cursor": str(cursor), "oldest": str(oldest)},
    )


def _invalid(cursor: int, last: int) -> errors.CursorInvalid:
    why = "negative" if cursor < 0 else f"past the last event ({last})"
    return errors.CursorInvalid(
        f"cursor {cursor} is {why}: pass the cursor of an event this server sent, or 0",
        metadata={"cursor": str(cursor), "last": str(last)},
        field="cursor",
    )


class EventHub:
    """Every watcher of one store, woken by one subscription to it."""

    def __init__(self, store: Store, pools: Pools) -> None:
        self._store = store
        self._pools = pools
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None
        #: set, and replaced, at each commit that wrote events (and at close)
        self._changed = asyncio.Event()
        self.closed = False
        #: watches running now
        self.watching = 0

    def _subscribe(self) -> None:
        if self._unsubscribe is None:
            self._loop = asyncio.get_running_loop()
            self._unsubscribe = self._store.subscribe_events(self._committed)

    def _committed(self, last: int) -> None:
        """On the writer's thread, once a change with events has committed."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody watches any more
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def close(self) -> None:
        """End every watch now, and any started from here on (the server stops)."""
        self.closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._wake()

    def _read(self, after: int, filters: EventFilters) -> tuple[EventPage, list[pb.Event]]:
        """One batch after ``after``, and the messages of those the filters keep
        (on a worker: the matching and the conversion stay off the loop)."""
        page = self._store.read_events(after, BATCH)
        return page, [convert.event(event) for event in page.events if filters.matches(event)]

    async def watch(
        self, cursor: int, since_oldest: bool, filters: EventFilters
    ) -> AsyncIterator[pb.WatchEventsResponse]:
        """The events after ``cursor`` (0: from now, or from the oldest kept with
        ``since_oldest``), ``caught_up`` once replayed, then each new one as it
        commits. Returns only when the hub closes; CursorInvalid or
        CursorExpired for a cursor the journal cannot continue from."""
        self._subscribe()
        self.watching += 1
        try:
            oldest, last = await self._pools.unary.run(self._store.event_bounds)
            if cursor < 0 or cursor > last:
                raise _invalid(cursor, last)
            if cursor > 0 and cursor < oldest - 1:
                raise _expired(cursor, oldest)
            position = cursor if cursor else (0 if since_oldest else last)
            from_oldest = cursor == 0 and since_oldest
            caught_up = False
            while not self.closed:
                changed = self._changed  # taken before the read: no commit is missed
                page, messages = await self._pools.unary.run(self._read, position, filters)
                if from_oldest:  # whatever is the oldest now
                    position, from_oldest = max(position, page.oldest - 1), False
                if position < page.oldest - 1:  # events after it were trimmed unread
                    raise _expired(position, page.oldest)
                for message in messages:
                    yield pb.WatchEventsResponse(event=message)
                if page.events:
                    position = page.events[-1].cursor
                if len(page.events) == BATCH:
                    continue
                if not caught_up:
                    caught_up = True
                    yield pb.WatchEventsResponse(caught_up=page.last)
                if not self.closed:
                    await changed.wait()
        finally:
            self.watching -= 1
