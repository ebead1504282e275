"""Admission control: how many calls of the image service may run at once.

Three caps, all server options: calls of ``imagestore.v1.ImageStoreService`` in
flight (``--max-concurrent-rpcs``); among them the archive and blob streams
that need a worker thread or a read-ahead buffer (Load, Save, ReadBlob:
``--max-concurrent-streams``); and, apart from both, WatchEvents calls
(``--max-concurrent-watches``): a watch lasts as long as its watcher, holds no
thread, and must not use up the slots of the calls that come and go. A call
over a cap is refused at once with RESOURCE_EXHAUSTED and an ErrorInfo naming
the limit, rather than queued: a queue would hold the caller's request, its
deadline and its connection, and say nothing. Health and reflection are never
counted nor refused, so probes keep answering while the service is saturated.

This is an interceptor of our own rather than grpc's ``maximum_concurrent_rpcs``,
which counts every method (health included) and refuses without an ErrorInfo.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from imagestore import errors
from imagestore.api.interceptors import Behavior, Continuation, Handler, wrap_handler

SERVICE_PREFIX = "/imagestore.v1.ImageStoreService/"
#: the methods that hold a worker thread (Load) or a read-ahead buffer of
#: blob chunks (Save, ReadBlob) while they run
STREAM_METHODS = frozenset(SERVICE_PREFIX + name for name in ("Load", "Save", "ReadBlob"))
#: calls that last as long as their caller watches, counted on their own
WATCH_METHODS = frozenset({SERVICE_PREFIX + "WatchEvents"})
#: how long a refused caller is told to wait before trying again, in seconds
RETRY_DELAY = 1.0

DEFAULT_MAX_CONCURRENT_RPCS = 256
DEFAULT_MAX_CONCURRENT_STREAMS = 32
#: each watch reads the journal once per change it is woken for: this bounds that work
DEFAULT_MAX_CONCURRENT_WATCHES = 256
#: below the 4 MiB a gRPC client accepts by default, with room for the
#: framing and the page token (the servicer measures each row exactly)
DEFAULT_MAX_RESPONSE_BYTES = 3584 << 10
#: the smallest response budget that still holds an ordinary row or Inspect
MIN_RESPONSE_BYTES = 64 << 10


@dataclass(frozen=True)
class Limits:
    """The server's admission and response-size limits (``imagestore serve`` options)."""

    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS
    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    max_concurrent_watches: int = DEFAULT_MAX_CONCURRENT_WATCHES

    def validate(self, max_message: int) -> None:
        """Refuse settings the server cannot honour (InvalidArgument, one clear line)."""
        # A stream cap above the call cap is allowed: streams are calls, so the
        # call cap simply applies first.
        for option, value in (
            ("--max-concurrent-rpcs", self.max_concurrent_rpcs),
            ("--max-concurrent-streams", self.max_concurrent_streams),
            ("--max-concurrent-watches", self.max_concurrent_watches),
        ):
            if value < 1:
                raise errors.OptionInvalid(
                    f"{option} must be at least 1 (got {value})",
                    metadata={"option": option.removeprefix("--")},
                )
        if not MIN_RESPONSE_BYTES <= self.max_response_bytes <= max_message:
            raise errors.OptionInvalid(
                f"--max-response-bytes must be between {MIN_RESPONSE_BYTES} and {max_message}"
                f" (the largest message the server sends); got {self.max_response_bytes}",
                metadata={"option": "max-response-bytes"},
            )


class Admission(grpc.aio.ServerInterceptor):
    """Counts the image service's calls in flight and refuses those over a cap.

    Sits inside ErrorMapping, which turns the refusal into a status with its
    ErrorInfo. The counters are touched only on the event loop: no lock.
    """

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self.rpcs = 0
        self.streams = 0
        self.watches = 0

    def _admit_watch(self) -> None:
        limit = self._limits.max_concurrent_watches
        if self.watches >= limit:
            raise self._busy("max-concurrent-watches", limit, "WatchEvents calls")
        self.watches += 1

    def _release_watch(self) -> None:
        self.watches -= 1

    def _admit(self, stream: bool) -> None:
        limits = self._limits
        if self.rpcs >= limits.max_concurrent_rpcs:
            raise self._busy("max-concurrent-rpcs", limits.max_concurrent_rpcs, "calls")
        if stream and self.streams >= limits.max_concurrent_streams:
            raise self._busy(
                "max-concurrent-streams",
                limits.max_concurrent_streams,
                "Load/Save/ReadBlob streams",
            )
        self.rpcs += 1
        self.streams += stream

    def _release(self, stream: bool) -> None:
        self.rpcs -= 1
        self.streams -= stream

    @staticmethod
    def _busy(option: str, limit: int, what: str) -> errors.ServerBusy:
        return errors.ServerBusy(
            f"the server is busy: {limit} {what} already in flight (--{option});"
            f" try again in {RETRY_DELAY:g} s",
            metadata={"limit": option, "max": str(limit)},
            retry_after=RETRY_DELAY,
        )

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(SERVICE_PREFIX):
            return handler
        stream = details.method in STREAM_METHODS
        if details.method in WATCH_METHODS:
            return wrap_handler(handler, lambda b: b, self._watched)

        def unary(behavior: Behavior) -> Behavior:
            async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                self._admit(stream)
                try:
                    return await behavior(request, context)
                finally:
                    self._release(stream)

            return wrapper

        def streaming(behavior: Behavior) -> Behavior:
            async def wrapper(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                self._admit(stream)
                try:
                    async for response in behavior(request, context):
                        yield response
                finally:
                    self._release(stream)

            return wrapper

        return wrap_handler(handler, unary, streaming)

    def _watched(self, behavior: Behavior) -> Behavior:
        async def wrapper(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            self._admit_watch()
            try:
                async for response in behavior(request, context):
                    yield response
            finally:
                self._release_watch()

        return wrapper
