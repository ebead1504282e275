"""The server's worker pools, one per kind of job (the bridges that run jobs on
them, and their cancellation rule: ``imagestore/bridges.py``)."""

from __future__ import annotations

import asyncio
import os

from imagestore.api.admission import DEFAULT_MAX_CONCURRENT_STREAMS
from imagestore.bridges import WorkerPool

#: Threads for unary calls: as many as asyncio's default executor, which ran
#: them before (``min(32, cpus + 4)``), in a pool of their own so that DNS
#: lookups and other users of the default executor do not compete with them.
UNARY_WORKERS = min(32, (os.cpu_count() or 1) + 4)
#: Threads that advance Save and ReadBlob streams: a step is a short read and
#: hash, so a few threads serve any number of streams.
STREAM_WORKERS = min(16, (os.cpu_count() or 1) + 4)
#: Threads for Loads: a Load holds its thread while it waits for its client's
#: chunks, so there is one per stream the admission cap lets in
#: (``--max-concurrent-streams``; the server passes its setting) and an
#: admitted Load never waits for a thread.
DEFAULT_LOAD_WORKERS = DEFAULT_MAX_CONCURRENT_STREAMS


class Pools:
    """The server's worker pools, one per kind of job; ``shutdown()`` once the
    server has stopped taking calls."""

    def __init__(self, *, load_workers: int = DEFAULT_LOAD_WORKERS) -> None:
        self.unary = WorkerPool("imagestore-unary", UNARY_WORKERS)
        self.streams = WorkerPool("imagestore-stream", STREAM_WORKERS)
        self.loads = WorkerPool("imagestore-load", load_workers)

    async def shutdown(self) -> None:
        """Take no more jobs, and wait until those still running have ended.

        The event loop keeps turning meanwhile, so a cancelled handler can
        still tell its job to stop (a Load waiting for chunks ends)."""
        pools = (self.unary, self.streams, self.loads)
        for pool in pools:
            pool.close()
        for pool in pools:
            await asyncio.to_thread(pool.join)
