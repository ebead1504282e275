"""A layer download that others may read while it is written.

The endpoint's pull-through (distribution/pullthrough.py) streams a layer to a
client while :class:`registry.pull.Puller` downloads it, instead of after the
whole pull: the client reads the bytes back from the ingest file as they land
there, and the last of them only once the ingest is committed, i.e. its
digest, size and diff_id verified (docs/registry.md §9). So the download and
the client's transfer overlap, and a client never receives the whole of a
blob that turns out wrong.

Everything here runs on the event loop: the Puller calls :meth:`advance` after
each write returns (the bytes are then in the file) and :meth:`finish` once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path


class Download:
    """One layer being written to ``path`` (an ingest file) by a pull; without a
    path, one stored in a single step (a small layer), never streamed: readers
    wait for it to end."""

    def __init__(self, digest: str, size: int, path: Path | None) -> None:
        self.digest = digest
        self.size = size
        self.path = path
        #: bytes in the file so far
        self.written = 0
        self._changed = asyncio.Event()
        self._outcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def advance(self, written: int) -> None:
        """``written`` bytes are in the file now."""
        self.written = written
        self._wake()

    def finish(self, error: BaseException | None = None) -> None:
        """The ingest is committed (verified), or failed with ``error`` (then the
        file is gone)."""
        if self._outcome.done():
            return
        if error is None:
            self._outcome.set_result(None)
        else:
            self._outcome.set_exception(error)
            self._outcome.exception()  # retrieved: readers look at ``failed``
        self._wake()

    @property
    def finished(self) -> bool:
        return self._outcome.done()

    @property
    def verified(self) -> bool:
        """Committed: every byte is in and checked."""
        return self._outcome.done() and self._outcome.exception() is None

    @property
    def failed(self) -> bool:
        return self._outcome.done() and self._outcome.exception() is not None

    async def wait_beyond(self, count: int) -> None:
        """Until more than ``count`` bytes are written, or the download ends."""
        while self.written <= count and not self._outcome.done():
            await self._changed.wait()

    def when_finished(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the event loop) once the download ends."""
        self._outcome.add_done_callback(lambda _: callback())

    async def wait_finished(self) -> None:
        """Until the download ends, however it ends."""
        await asyncio.wait({self._outcome})

    def _wake(self) -> None:
        # a fresh event per change: every waiter of the old one wakes, none misses one
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


#: told of each layer download as it starts
OnDownload = Callable[[Download], None]
