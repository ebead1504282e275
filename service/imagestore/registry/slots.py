"""Transfer slots per registry host: a slow registry fills its own, never another's.

A semaphore exists for a host only while a transfer holds or waits for one of
its slots, so the map is as small as the work in progress however many hosts
callers name.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


@dataclass(slots=True)
class _Host:
    semaphore: asyncio.Semaphore
    users: int = 0


class HostSlots:
    """``size`` concurrent holders per key (a registry's origin)."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._hosts: dict[str, _Host] = {}

    def __len__(self) -> int:
        """Hosts with a transfer holding or waiting for a slot."""
        return len(self._hosts)

    def busy(self, key: str) -> bool:
        """Every slot of ``key`` is taken: a new transfer would wait."""
        host = self._hosts.get(key)
        return host is not None and host.semaphore.locked()

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """One of ``key``'s slots for the duration of the block."""
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = _Host(asyncio.Semaphore(self.size))
        host.users += 1
        try:
            async with host.semaphore:
                yield
        finally:
            host.users -= 1
            if host.users == 0:
                del self._hosts[key]
