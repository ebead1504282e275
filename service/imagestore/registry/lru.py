"""A small least-recently-used map: the registry client's caches never grow past a size.

Registries are named by callers, so anything cached per host, scope or
credential would otherwise grow with every new name a client sends.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """At most ``size`` entries; adding one more drops the least recently used."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("an LRU holds at least one entry")
        self.size = size
        self._entries: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        """The entry (now the most recently used), or None."""
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def discard_if(self, stale: Callable[[V], bool]) -> None:
        """Drop every entry ``stale`` says is no longer worth keeping."""
        for key in [k for k, v in self._entries.items() if stale(v)]:
            del self._entries[key]
