"""The server's logging: text or JSON lines on stderr (placeholder until issue 16's log work lands)."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str, log_format: str = "text") -> None:
    """Send log records to stderr at ``level`` in ``log_format`` (text or json)."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
