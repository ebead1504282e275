"""The root lock: one process owns a store root (``<root>/lock``, flock); and
the gate that lets one Check run at a time."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from imagestore import errors


class RootLock:
    """An exclusive, non-blocking flock; released on close or process exit."""

    def __init__(self, root: Path) -> None:
        self.path = root / "lock"
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise errors.StoreInUse(
                f"store {root} is in use by another imagestore process ({self.path} is locked)",
                metadata={"root": str(root)},
            ) from None
        os.fchmod(self._fd, 0o600)  # the owner's alone, also when an older one was not
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Gate:
    """One holder at a time (one Check per store). A holder that is stopping
    (its caller went away) is waited for, up to ``wait`` seconds, by the next
    one instead of refusing it: its end is a matter of one read."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._held = False
        self._stopping = False

    def enter(self, wait: float) -> bool:
        """Hold the gate; False when another holder is busy (not stopping)."""
        with self._changed:
            if self._held and self._stopping:
                self._changed.wait_for(lambda: not self._held, wait)
            if self._held:
                return False
            self._held, self._stopping = True, False
            return True

    def stopping(self) -> None:
        """The holder is stopping: the next caller waits for it, not refused."""
        with self._changed:
            self._stopping = self._held

    def leave(self) -> None:
        with self._changed:
            self._held = self._stopping = False
            self._changed.notify_all()
