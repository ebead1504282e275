"""Progress events of a pull or push: what happens to which blob, beside Docker's
status line for it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from imagestore.oci.digests import digest_hex
from imagestore.oci.manifests import Descriptor

#: at most this often per layer for byte-count updates (seconds)
UPDATE_INTERVAL = 0.1


class Phase(Enum):
    """What a progress event is about (the API's Phase mirrors it)."""

    RESOLVING = "resolving"  # finding what a name points at
    WAITING = "waiting"  # a blob waits for its turn ("Pulling fs layer", "Waiting")
    DOWNLOADING = "downloading"  # bytes of a blob arriving
    VERIFYING = "verifying"  # a downloaded blob checked against its digest
    DOWNLOADED = "downloaded"  # "Download complete"
    COMPLETE = "complete"  # stored ("Pull complete"; a Load member stored)
    ALREADY_EXISTS = "already-exists"  # stored already ("Already exists"; Load "reused")
    RETRYING = "retrying"  # another try after ``retry_after`` seconds
    PREPARING = "preparing"  # a push looks at a blob
    PUSHING = "pushing"  # bytes of a blob leaving
    PUSHED = "pushed"  # a blob uploaded
    EXISTS_REMOTELY = "exists-remotely"  # "Layer already exists"
    MOUNTED = "mounted"  # "Mounted from <repository>"
    SKIPPED = "skipped"  # a Load member ignored or kept for later
    SUMMARY = "summary"  # a line about the whole operation ("Digest: …")


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One status line. ``text`` is Docker's words; ``blob`` the blob it is about
    (None for lines about the whole operation); ``subject`` what Docker shows as
    the line's ID (a layer's short ID, a tag, or ""); ``total`` None when unknown;
    ``retry_after`` the seconds until the next try, with Phase.RETRYING."""

    phase: Phase
    text: str
    blob: Descriptor | None = None
    subject: str = ""
    current: int = 0
    total: int | None = None
    retry_after: float | None = None


Emit = Callable[[ProgressEvent], None]


def layer_id(digest: str) -> str:
    """Docker's layer ID in progress output: 12 hex of the compressed digest."""
    return digest_hex(digest)[:12]


def layer_event(phase: Phase, text: str, blob: Descriptor) -> ProgressEvent:
    """A line about one layer, under its short ID as Docker shows it."""
    return ProgressEvent(phase, text, blob, layer_id(blob.digest))


class ByteProgress:
    """Throttled "Downloading"/"Pushing" updates for one blob."""

    def __init__(self, emit: Emit, blob: Descriptor, phase: Phase, text: str) -> None:
        self._emit = emit
        self._blob = blob
        self._id = layer_id(blob.digest)
        self._phase = phase
        self._text = text
        self._last = 0.0
        self.current = 0

    def advance(self, count: int) -> None:
        self.current += count
        now = time.monotonic()
        if now - self._last >= UPDATE_INTERVAL or self.current >= self._blob.size:
            self._last = now
            self._emit(
                ProgressEvent(
                    self._phase, self._text, self._blob, self._id, self.current, self._blob.size
                )
            )


def retry_reporter(
    emit: Emit, blob: Descriptor | None = None, subject: str = ""
) -> Callable[[float], None]:
    """Docker's "Retrying in N seconds" line, about ``blob`` (None: the image),
    under ``subject`` (a layer's short ID; "" for lines Docker shows without one)."""

    def report(delay: float) -> None:
        seconds = max(1, round(delay))
        text = f"Retrying in {seconds} second{'s' if seconds != 1 else ''}"
        emit(ProgressEvent(Phase.RETRYING, text, blob, subject, retry_after=delay))

    return report
