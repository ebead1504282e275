"""The root lock: one process owns a store root (``<root>/lock``, flock)."""

from __future__ import annotations

import fcntl
import os
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
