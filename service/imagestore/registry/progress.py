"""Progress events of a pull or push: Docker's per-layer status lines."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from imagestore.oci.digests import digest_hex

#: at most this often per layer for byte-count updates (seconds)
UPDATE_INTERVAL = 0.1


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One status line: ``id`` is a layer's short ID, a tag, or empty."""

    id: str
    status: str
    current: int = 0
    total: int = 0


Emit = Callable[[ProgressEvent], None]


def layer_id(digest: str) -> str:
    """Docker's layer ID in progress output: 12 hex of the compressed digest."""
    return digest_hex(digest)[:12]


class ByteProgress:
    """Throttled "Downloading"/"Pushing" updates for one blob."""

    def __init__(self, emit: Emit, digest: str, status: str, total: int) -> None:
        self._emit = emit
        self._id = layer_id(digest)
        self._status = status
        self._total = total
        self._last = 0.0
        self.current = 0

    def advance(self, count: int) -> None:
        self.current += count
        now = time.monotonic()
        if now - self._last >= UPDATE_INTERVAL or self.current >= self._total:
            self._last = now
            self._emit(ProgressEvent(self._id, self._status, self.current, self._total))


def retry_reporter(emit: Emit, layer: str) -> Callable[[float], None]:
    """Docker's "Retrying in N seconds" line for a layer (or the image, when "")."""

    def report(delay: float) -> None:
        seconds = max(1, round(delay))
        emit(ProgressEvent(layer, f"Retrying in {seconds} second{'s' if seconds != 1 else ''}"))

    return report
