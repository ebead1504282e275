"""Recent answers of read-only RPCs, kept until the store next changes.

A service that polls Inspect asks the same question many times between two
changes. The answer is looked up on the event loop, in memory only: a repeated
read costs no hop to a worker thread and no catalog query, and a lookup can
never block the loop. An answer is stored under the store's generation seen
before it was read (``Store.generation``), and served only while that
generation lasts: after any change, every question is read afresh. A catalog
that cannot tell when it changes (generation None) gets no answers kept.

A shared catalog (PostgreSQL: other replicas commit too) hears of their
commits by notification, a moment after they were acknowledged, so a kept
answer is served only under a generation read from the database after the call
began (``Store.confirm_generation_async``: a connection of the event loop's,
which waits for the database without blocking): one read at a time, and every
call that arrives while it runs shares the next one (docs/design.md §4).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message

from imagestore.store.store import Store

#: answers kept, and their bytes in all; a larger single answer is not kept
MAX_ANSWERS = 1024
MAX_ANSWER_BYTES = 16 << 20
MAX_KEPT_ANSWER_BYTES = 1 << 20

Answer = TypeVar("Answer", bound=Message)


class Confirmations:
    """A shared catalog's generation, read after each caller began: one read
    runs at a time, and the callers that arrive meanwhile wait for the next one
    (which starts after they did), sharing it."""

    def __init__(self, store: Store) -> None:
        self._store = store
        #: the read that starts next, and the callers waiting for it
        self._next: asyncio.Future[int | None] | None = None
        self._reading: asyncio.Task[None] | None = None

    async def generation(self) -> int | None:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            if self._reading is None:
                self._reading = asyncio.ensure_future(self._read_while_asked())
        return await asyncio.shield(self._next)

    async def _read_while_asked(self) -> None:
        waiting: asyncio.Future[int | None] | None = None
        try:
            while self._next is not None:
                waiting, self._next = self._next, None
                try:
                    generation = await self._store.confirm_generation_async()
                except Exception:  # keep nothing, answer anyway
                    generation = None
                if not waiting.done():
                    waiting.set_result(generation)
        finally:
            self._reading = None
            for left in (waiting, self._next):
                if left is not None and not left.done():
                    left.set_result(None)
            self._next = None


class RecentAnswers:
    """Answers by (method, request), valid for one store generation.

    Used from the event loop only (no lock): ``answer`` looks up, and reads on
    a miss with the coroutine it is given. Kept messages are shared by every
    caller that gets them, and nobody changes them."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._confirmations = Confirmations(store)
        self._generation: int | None = None
        #: each answer with its size, as counted into ``_bytes``
        self._answers: OrderedDict[tuple[str, bytes], tuple[Message, int]] = OrderedDict()
        self._bytes = 0

    async def answer(
        self, method: str, request: Message, read: Callable[[], Awaitable[Answer]]
    ) -> Answer:
        """The kept answer to ``request``, or ``await read()``'s, then kept."""
        shared = self._store.shared
        generation = await self._confirmations.generation() if shared else self._store.generation
        kept_generation = self._generation
        if generation is not None and kept_generation is not None and generation < kept_generation:
            return await read()  # overtaken by a later call's generation: keep nothing
        if generation != self._generation:
            self._answers.clear()
            self._bytes = 0
            self._generation = generation
        key = (method, request.SerializeToString(deterministic=True))
        kept = self._answers.get(key)
        if kept is not None:
            self._answers.move_to_end(key)
            return kept[0]  # type: ignore[return-value]
        answer = await read()
        size = answer.ByteSize()
        # A shared catalog's answer, read after its generation was confirmed,
        # is at least as new as that generation: a later call that confirms the
        # same one began before the next commit was acknowledged.
        if (
            generation is not None
            and generation == self._generation
            and (shared or generation == self._store.generation)
            and size <= MAX_KEPT_ANSWER_BYTES
        ):
            self._keep(key, answer, size)
        return answer

    def _keep(self, key: tuple[str, bytes], answer: Message, size: int) -> None:
        previous = self._answers.pop(key, None)
        if previous is not None:
            self._bytes -= previous[1]
        self._answers[key] = (answer, size)
        self._bytes += size
        while len(self._answers) > MAX_ANSWERS or self._bytes > MAX_ANSWER_BYTES:
            _, (_, dropped) = self._answers.popitem(last=False)
            self._bytes -= dropped
