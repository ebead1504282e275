"""How the server asks glibc's allocator to keep its memory flat."""

from __future__ import annotations

import ctypes
import threading

_LIBC: ctypes.CDLL | None
try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:  # not glibc: nothing to tune
    _LIBC = None
_TRIMMING = threading.Lock()


def tune_allocator() -> None:
    """Keep a long-running server's memory flat and its buffers cheap.

    glibc raises its mmap threshold each time a large block is freed, after
    which big buffers come from per-thread arenas that keep freed memory. A
    fixed threshold stops that drift; at 4 MiB the 256 KiB network reads and
    1 MiB chunks of a transfer are reused from the heap instead of being
    mapped and faulted in afresh each time (that cost a pull as much system
    time as its decompression). Two arenas bound what the heap can keep.
    """
    if _LIBC is None:
        return
    m_mmap_threshold, m_arena_max = -3, -8
    _LIBC.mallopt(m_mmap_threshold, 4 << 20)
    _LIBC.mallopt(m_arena_max, 2)


def release_free_memory() -> None:
    """Give the pages of freed blocks back to the system.

    A Load's megabyte buffers are freed when it ends, but the heap keeps the
    pages; after many refused Loads that is tens of MiB held for nothing.
    ``malloc_trim`` returns them (a few milliseconds); one trim at a time.
    """
    if _LIBC is None or not _TRIMMING.acquire(blocking=False):
        return
    try:
        _LIBC.malloc_trim(0)
    finally:
        _TRIMMING.release()
