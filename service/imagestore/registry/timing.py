"""How long a registry may take: a floor on its speed, and a total deadline.

The idle timeout alone lets a registry hold a transfer for ever by sending a
byte just before each timeout. The speed floor ends such a try (it is retried
like a stall); the deadline bounds a transfer that stays just above the floor.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType

from imagestore import errors
from imagestore.registry.retry import Retryable


class SpeedFloor:
    """At least ``min_speed x window`` bytes in every ``window`` seconds of a body."""

    def __init__(self, min_speed: int, window: float) -> None:
        self.min_speed = min_speed
        self.window = window

    @property
    def enabled(self) -> bool:
        return self.min_speed > 0 and self.window > 0

    def meter(self, what: str) -> Meter:
        """A meter for one body: ``async with floor.meter(what) as meter``."""
        return Meter(self, what)


class Meter:
    """Counts a body's bytes; the try fails when a window ends short of its quota.

    Each time a quota (``min_speed x window`` bytes) is met a new window starts,
    so every successive quota must arrive within one window: the average over
    any window is at least ``min_speed``. A failure raises :class:`Retryable`.
    """

    def __init__(self, floor: SpeedFloor, what: str) -> None:
        self._floor = floor
        self._what = what
        self._quota = max(1, math.ceil(floor.min_speed * floor.window))
        self._got = 0
        self._timeout: asyncio.Timeout | None = None

    def _window_end(self) -> float:
        return asyncio.get_running_loop().time() + self._floor.window

    async def __aenter__(self) -> Meter:
        if self._floor.enabled:
            self._timeout = asyncio.timeout_at(self._window_end())
            await self._timeout.__aenter__()
        return self

    def count(self, size: int) -> None:
        """``size`` more bytes arrived."""
        if self._timeout is None:
            return
        self._got += size
        if self._got >= self._quota:
            self._got = 0
            self._timeout.reschedule(self._window_end())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._timeout is None:
            return
        try:
            await self._timeout.__aexit__(exc_type, exc, traceback)
        except TimeoutError:
            if not self._timeout.expired():
                raise
            floor = self._floor
            raise Retryable(
                errors.RegistryUnavailable(
                    f"{self._what}: the registry is too slow (less than {floor.min_speed}"
                    f" bytes/s over {floor.window:g} s)",
                    metadata={"minSpeed": str(floor.min_speed), "window": f"{floor.window:g}"},
                )
            ) from None


@asynccontextmanager
async def deadline(seconds: float, what: str) -> AsyncIterator[None]:
    """The block must end within ``seconds`` (0: no limit), or UNAVAILABLE is raised."""
    if seconds <= 0:
        yield
        return
    timeout = asyncio.timeout(seconds)
    try:
        async with timeout:
            yield
    except TimeoutError:
        if not timeout.expired():
            raise
        raise errors.RegistryUnavailable(
            f"{what}: not done after {seconds:g} s (the registry blob timeout)",
            metadata={"timeout": f"{seconds:g}"},
        ) from None
