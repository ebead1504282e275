"""How a blob's file meets the disk while it is still being written.

Space ahead of the writes: a large blob of known size has its blocks allocated
a window at a time (:func:`reserve`). Written into an empty file, ext4 reserves
them a page at a time and grows the file at every write: 1 to 4% of a pull's CPU.
A window, not the whole size a manifest declares: a registry's descriptor may
claim any size, and a download that stalls holds at most a window it never
fills (docs/design.md §4).

Writeback behind them: a blob's fsync at commit otherwise waits for all of its
bytes to reach the disk, with the cores idle: ~40 ms for a 100 MB layer here,
at the end of a pull. Asked every few MiB to begin writing what it holds, the
kernel writes behind the ingest, and the fsync waits for the last few MiB only
(:func:`start`). A head start, not a guarantee: durability still comes from
that fsync.
"""

from __future__ import annotations

import os

from imagestore._native import lib

#: bytes written between two starts of writeback
EVERY = 8 << 20
#: a blob of known size at least this large has its space reserved ahead
RESERVE_FROM = 8 << 20
#: how far ahead of the writes that space reaches
RESERVE_AHEAD = 32 << 20


def start(fd: int) -> None:
    """Have the kernel begin writing ``fd``'s whole pages before its write
    position to disk, without waiting for them (Linux; elsewhere nothing)."""
    _raise_for(lib.isn_start_writeback(fd))


def reserve(fd: int, offset: int, length: int) -> None:
    """Allocate ``fd``'s blocks for ``length`` bytes from ``offset``; the file's
    size grows to their end (Linux; where the file system cannot, nothing).
    OSError(ENOSPC) when the disk is full."""
    _raise_for(lib.isn_reserve(fd, offset, length))


def _raise_for(failed: int) -> None:
    """The native call's errno (0: none) as the OSError ``os`` would raise."""
    if failed:
        raise OSError(failed, os.strerror(failed))
