"""A connection pool whose idle keep-alive connections are capped in number.

aiohttp caps the connections in use, not the idle ones it keeps for reuse: a
caller who names many registries (one pull each) would leave the server one
descriptor per registry until the keep-alive timeout passes. Past the cap, the
connection idle the longest is closed (docs/design.md §10).
"""

from __future__ import annotations

from typing import Any

import aiohttp

#: idle keep-alive connections kept in one pool, over every registry
MAX_IDLE_CONNECTIONS = 32


class BoundedConnector(aiohttp.TCPConnector):
    """``aiohttp.TCPConnector`` that keeps at most ``max_idle`` idle connections."""

    def __init__(self, *, max_idle: int = MAX_IDLE_CONNECTIONS, **options: Any) -> None:
        super().__init__(**options)
        self._max_idle = max_idle

    def _release(self, key: Any, protocol: Any, *, should_close: bool = False) -> None:
        super()._release(key, protocol, should_close=should_close)
        idle = self._conns  # per key, oldest first (aiohttp keeps them FIFO)
        while sum(len(kept) for kept in idle.values()) > self._max_idle:
            oldest = min(idle, key=lambda k: idle[k][0][1])
            stale, _ = idle[oldest].popleft()
            if not idle[oldest]:
                del idle[oldest]
            stale.close()
