"""The registry endpoint's bounds (``imagestore serve --registry-*`` options).

Every one keeps a careless or hostile HTTP client from holding what others
need (docs/design.md §10): requests in flight (each may hold a lease and a
stream's buffers), the size of a request's head (the request line bounds the
path and query), how long an idle connection stays open, how long one write
to a client may block (a client that stops reading would otherwise pin its
blob's lease and buffers for ever), the entries one page lists, and, with
push on, the upload sessions open at once and how long an idle one lasts (each
holds an ingest file, its hasher and a lease).
"""

from __future__ import annotations

from dataclasses import dataclass

from imagestore import errors
from imagestore.store.blobs import DEFAULT_UPLOAD_TIMEOUT

DEFAULT_MAX_CONCURRENT_REQUESTS = 256
#: aiohttp's and Go's usual bound of a request line or header field
DEFAULT_MAX_HEADER_BYTES = 8190
DEFAULT_MAX_HEADERS = 100
#: close an idle keep-alive connection after this long (seconds)
DEFAULT_KEEPALIVE_TIMEOUT = 75.0
#: longest a write of a response may wait for the client to read (seconds)
DEFAULT_SEND_TIMEOUT = 60.0
#: most entries of a tags or catalog page (a larger ``n`` is capped)
DEFAULT_MAX_PAGE_SIZE = 1000
#: upload sessions open at once (each holds an ingest file and a lease)
DEFAULT_MAX_UPLOAD_SESSIONS = 128
#: the smallest header bound that still holds a registry client's request
MIN_HEADER_BYTES = 1024


@dataclass(frozen=True)
class EndpointLimits:
    """The registry endpoint's limits; ``validate`` refuses unusable settings."""

    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_headers: int = DEFAULT_MAX_HEADERS
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT
    send_timeout: float = DEFAULT_SEND_TIMEOUT
    max_page_size: int = DEFAULT_MAX_PAGE_SIZE
    max_upload_sessions: int = DEFAULT_MAX_UPLOAD_SESSIONS
    #: an upload session unused this long ends (seconds); an uploaded blob no
    #: manifest uses yet is kept this long too
    upload_timeout: float = DEFAULT_UPLOAD_TIMEOUT

    def validate(self) -> None:
        """OptionInvalid, one clear line, for a setting the endpoint cannot honour."""
        for option, value, least in (
            ("registry-max-concurrent-requests", self.max_concurrent_requests, 1),
            ("registry-max-header-bytes", self.max_header_bytes, MIN_HEADER_BYTES),
            ("registry-max-headers", self.max_headers, 8),
            ("registry-max-page-size", self.max_page_size, 1),
            ("registry-max-upload-sessions", self.max_upload_sessions, 1),
        ):
            if value < least:
                raise errors.OptionInvalid(
                    f"--{option} must be at least {least} (got {value})",
                    metadata={"option": option},
                )
        for option, seconds in (
            ("registry-keepalive-timeout", self.keepalive_timeout),
            ("registry-send-timeout", self.send_timeout),
            ("registry-upload-timeout", self.upload_timeout),
        ):
            if seconds <= 0:
                raise errors.OptionInvalid(
                    f"--{option} must be more than 0s (got {seconds:g})",
                    metadata={"option": option},
                )
