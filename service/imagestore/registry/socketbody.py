"""A large blob body read by a transfer thread, straight from its socket.

On the event loop every network read of a body is a pass of Python: aiohttp's
parser, its StreamReader, a fresh bytes object, a copy, a batch handed to a
thread. For a pull of three 100 MiB layers that was ~0.25 CPU-seconds of the
event loop's, an eighth of the pull (docs/design.md §6). A body on a plain TCP
connection with a Content-Length is read instead by the thread that inflates
and hashes it: ``recv_into`` one reused buffer, no copy but the kernel's.

How it is taken from aiohttp, once the headers are parsed: the body bytes
aiohttp already holds are taken from its StreamReader, then the connection's
reading is paused, in the same step of the event loop (no read can slip in
between); from then on only the transfer thread reads the socket, through a
duplicate of its descriptor. aiohttp's parser sees none of the rest, so the
connection is closed afterwards, never reused. TLS connections (the socket
carries ciphertext), chunked bodies and bodies without a length stay with
aiohttp.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable

import aiohttp

#: a body this large (after what aiohttp holds) is read off the event loop: a new
#: connection for the next request costs nothing beside it
OFF_LOOP_BODY = 4 << 20
#: bytes read before they are handed on (the ingest's write, then the event loop's count)
BUFFER = 2 << 20
#: each transfer thread's read buffer, made on its first step and kept: a fresh one
#: per body cost its page faults every time (a step uses it, then writes it out)
_buffers = threading.local()
#: a read step returns at the latest after this long with bytes, so the event loop
#: counts a slow body's bytes (its speed floor) as they come
STEP_SECONDS = 0.1
#: steps run back to back on one transfer thread for up to this long (see fill_for)
SLICE_SECONDS = 0.5


class SocketBody:
    """The rest of one response's body, read from its socket on a thread."""

    def __init__(
        self, sock: socket.socket, head: bytes, remaining: int, idle_timeout: float | None
    ) -> None:
        #: body bytes aiohttp had read already: the caller writes them first
        self.head = head
        #: bytes of the body still on the socket
        self.remaining = remaining
        self._sock = sock
        self._idle_timeout = idle_timeout

    @classmethod
    def take(
        cls, response: aiohttp.ClientResponse, idle_timeout: float | None
    ) -> SocketBody | None:
        """The body of ``response``, taken from aiohttp when it is large and on a
        plain connection with a length (else None: aiohttp reads it). Call on the
        event loop, before anything reads the body; then :meth:`close` it."""
        connection = response.connection
        length = response.content_length
        if connection is None or length is None or "Transfer-Encoding" in response.headers:
            return None
        transport, protocol = connection.transport, connection.protocol
        if transport is None or protocol is None or transport.get_extra_info("ssl_object"):
            return None
        raw = transport.get_extra_info("socket")
        content = response.content
        if raw is None or content.exception() is not None or content.at_eof():
            return None
        remaining = length - content.total_bytes  # what aiohttp holds is counted
        if remaining < OFF_LOOP_BODY:
            return None
        # One synchronous step: what aiohttp holds, then no more reads by the loop
        # (draining may resume its reading; the pause comes after).
        head = content.read_nowait()
        protocol.pause_reading()
        sock = socket.socket(fileno=os.dup(raw.fileno()))
        return cls(sock, head, remaining, idle_timeout)

    def fill(self, write: Callable[[memoryview], None]) -> int:
        """Read up to a buffer's worth of the body and ``write`` it (blocking: on a
        transfer thread); the byte count. Once a byte came, returns with what came
        within STEP_SECONDS; raises TimeoutError after the idle timeout without a
        byte, ConnectionError when the body ends short."""
        view = _thread_buffer()[: min(BUFFER, self.remaining)]
        got = 0
        self._sock.settimeout(self._idle_timeout)
        started = time.monotonic()
        while got < len(view):
            try:
                count = self._sock.recv_into(view[got:])
            except TimeoutError:
                if not got:
                    raise
                break  # the step's time is up: hand on what came
            if count == 0:
                raise ConnectionResetError(
                    f"the connection closed {self.remaining - got} bytes before the body's end"
                )
            got += count
            left = STEP_SECONDS - (time.monotonic() - started)
            if left <= 0:
                break
            self._sock.settimeout(left)
        self.remaining -= got
        write(view[:got])
        return got

    def fill_for(self, write: Callable[[memoryview], None], report: Callable[[int], None]) -> None:
        """Steps of :meth:`fill` back to back, each step's count to ``report``
        (called on this thread), until the body ends or SLICE_SECONDS pass. A thread
        hop per step cost two thread wake-ups in which nothing read or inflated
        (~5% of a pull's wall time); the slice gives other work queued on the transfer threads
        its turn."""
        started = time.monotonic()
        while True:
            report(self.fill(write))
            if not self.remaining or time.monotonic() - started >= SLICE_SECONDS:
                return

    def interrupt(self) -> None:
        """Make a :meth:`fill` blocked on the socket return at once (its try is
        over: cancelled, or past its deadline)."""
        with contextlib.suppress(OSError):  # already closed by the peer
            self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Drop the duplicate descriptor (the caller closes the response, and so
        the connection: it is never reused)."""
        self._sock.close()


def _thread_buffer() -> memoryview:
    view: memoryview | None = getattr(_buffers, "view", None)
    if view is None:
        view = _buffers.view = memoryview(bytearray(BUFFER))
    return view
