"""A file written whole or not at all (``save_to``): a temporary file beside
the target, renamed over it once complete, removed on failure."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Self


class PartialFile:
    """Bytes written to a temporary file in the target's folder; ``commit()``
    renames it to the target, leaving the ``with`` block without a commit
    removes it. The file gets the mode a plain ``open()`` would give it."""

    def __init__(self, path: str | Path) -> None:
        self.target = Path(path)
        try:
            fd, partial = tempfile.mkstemp(
                prefix=f".{self.target.name}.", dir=self.target.parent or "."
            )
        except OSError as exc:  # named after the path asked for, not the temporary one
            raise OSError(exc.errno, exc.strerror, str(self.target)) from None
        self._partial = Path(partial)
        try:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)
            self._out = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            self._partial.unlink(missing_ok=True)
            raise
        self.written = 0
        self._committed = False

    def write(self, data: bytes) -> None:
        """Append ``data``."""
        self._out.write(data)
        self.written += len(data)

    def commit(self) -> int:
        """Close the file and rename it to the target; returns its size."""
        self._out.close()
        os.replace(self._partial, self.target)
        self._committed = True
        return self.written

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._committed:
            self._out.close()
            self._partial.unlink(missing_ok=True)
