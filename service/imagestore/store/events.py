"""The events journal: every change to the store, recorded in the transaction
that makes it, under a cursor counted in commit order (docs/design.md §4).

The store modules that own a change (``names``, ``images``, ``prune``,
``content``) open their transaction through :meth:`Journal.transaction` and add
the events that describe it; the journal appends them (cursors from the
catalog's counter row: consecutive, in commit order, none given away by a
transaction rolled back), trims what retention lets go, and, once the
transaction has committed, tells its subscribers the last cursor; on a shared
catalog, it tells them of other processes' changes too, as the catalog hears of
them (and 0 when some may have gone unheard). A watcher reads the journal after
each such wake-up; nothing is kept in memory here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from imagestore import errors
from imagestore.store.catalog import Catalog, CatalogReader, CatalogWriter
from imagestore.store.models import Event, EventKind, EventPage, name_of
from imagestore.store.records import EventRow

#: events kept at most (``--events-max-count``)
DEFAULT_EVENTS_MAX_COUNT = 100_000
#: seconds an event is kept at most (``--events-max-age``): a week
DEFAULT_EVENTS_MAX_AGE = 7 * 24 * 3600.0

#: told the last cursor of each transaction that wrote events, after it commits
Listener = Callable[[int], None]
#: nanoseconds since the epoch; the journal's clock (tests inject one)
Clock = Callable[[], int]

log = logging.getLogger("imagestore.store")


def check_retention(max_count: int, max_age: float) -> None:
    """Refuse a retention that keeps nothing (OptionInvalid naming the option)."""
    if max_count < 1:
        raise errors.OptionInvalid(
            f"--events-max-count must be at least 1 (got {max_count})",
            metadata={"option": "events-max-count"},
        )
    if not max_age > 0:
        raise errors.OptionInvalid(
            f"--events-max-age must be positive (got {max_age})",
            metadata={"option": "events-max-age"},
        )


def image_event(
    db: CatalogReader, kind: EventKind, image_id: str, name: str = "", target: str = ""
) -> EventRow:
    """An event about one image, with its labels as the catalog keeps them."""
    image = db.image(image_id) if image_id else None
    labels: Mapping[str, str] = image.labels if image is not None else {}
    return EventRow(kind.value, image_id, name, target, labels)


def to_event(row: EventRow) -> Event:
    """A journal row as the store's callers see it."""
    return Event(
        cursor=row.cursor,
        time_ns=row.time,
        kind=EventKind(row.kind),
        image_id=row.image_id,
        name=name_of(row.name) if row.name else None,
        target_digest=row.target,
        labels=row.labels,
        remote=row.remote,
        reclaimed_bytes=row.reclaimed,
    )


class Journal:
    """Writes the events of one store's transactions and wakes its subscribers.

    Keeps at most ``max_count`` events, none older than ``max_age`` seconds
    (trimmed by each transaction that writes events, in that transaction).
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        max_count: int = DEFAULT_EVENTS_MAX_COUNT,
        max_age: float = DEFAULT_EVENTS_MAX_AGE,
        clock: Clock = time.time_ns,
    ) -> None:
        check_retention(max_count, max_age)
        self._catalog = catalog
        self.max_count = max_count
        self.max_age = max_age
        self._max_age_ns = int(max_age * 1e9)
        self._clock = clock
        self._listeners: list[Listener] = []
        self._listeners_lock = threading.Lock()
        catalog.watch_changes(self._notify)

    @contextmanager
    def transaction(
        self, *, rollback: bool = False
    ) -> Iterator[tuple[CatalogWriter, list[EventRow]]]:
        """The catalog's transaction, and a list for the events it makes.

        The events are appended when the block ends without an error, inside
        the transaction; once it has committed, subscribers learn the last
        cursor. ``rollback`` (a dry run) undoes them with the rest.
        """
        last = 0
        with self._catalog.transaction(rollback=rollback) as db:
            events: list[EventRow] = []
            yield db, events
            if events:
                now = self._clock()
                last = db.append_events(events, now)
                db.trim_events(self.max_count, now - self._max_age_ns)
        if last and not rollback:
            self._notify(last)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(last_cursor)`` after each transaction that wrote events
        commits (on the writer's thread, or the catalog's listener for another
        process's: it must be quick and not raise); ``last_cursor`` is 0 when
        changes may have gone unheard. Returns the function that unsubscribes it."""
        with self._listeners_lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._listeners_lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def _notify(self, last: int) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(last)
            except Exception:  # a listener's failure must not fail the committed change
                log.exception("events listener failed")

    def bounds(self) -> tuple[int, int]:
        """``(oldest, last)``: the oldest cursor kept (``last + 1`` when none is),
        and the last cursor given (0 before the first event)."""
        with self._catalog.reading() as db:
            return db.event_bounds()

    def read(self, after: int, limit: int) -> EventPage:
        """Up to ``limit`` events after cursor ``after``, and the bounds, from one
        snapshot."""
        with self._catalog.reading() as db:
            oldest, last = db.event_bounds()
            rows = db.events_after(after, limit)
        return EventPage(tuple(to_event(row) for row in rows), oldest, last)
