"""Start a file's writeback while it is still being written.

A blob's fsync at commit otherwise waits for all of its bytes to reach the disk,
with the cores idle: ~40 ms for a 100 MB layer here, at the end of a pull. Asked
every few MiB to begin writing what it holds, the kernel writes behind the
ingest, and the fsync waits for the last few MiB only (docs/design.md §4). A head
start, not a guarantee: durability still comes from that fsync.
"""

from __future__ import annotations

import os

from imagestore._native import lib

#: bytes written between two starts of writeback
EVERY = 8 << 20


def start(fd: int) -> None:
    """Have the kernel begin writing ``fd``'s whole pages before its write
    position to disk, without waiting for them (Linux; elsewhere nothing)."""
    failed = lib.isn_start_writeback(fd)
    if failed:
        raise OSError(failed, os.strerror(failed))
