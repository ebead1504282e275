"""The server's logging: one line per record on stderr, as text or as JSON
(in text, a record's traceback follows on indented lines of its own).

Text: ``2026-11-30T04:50:01.123Z INFO imagestore.rpc rpc method=… code=OK …``;
JSON: ``{"time": …, "level": …, "logger": …, "message": …, <fields>}``. The
fields are what a record carries beyond the standard attributes (``extra=``),
and the ID of the call it was logged in (:data:`REQUEST_ID`).

``--log-level`` sets the level of the ``imagestore`` loggers only: libraries
(grpc, asyncio, aiohttp) stay at WARNING, since at debug they flood the log
with their internals; ``--log-libraries debug`` (or info, error) sets theirs.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from contextvars import ContextVar
from typing import Any

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")
#: the third-party loggers' level unless --log-libraries says otherwise
LIBRARIES_DEFAULT = "warning"

#: the ID of the call being served (set by the access log's interceptor):
#: every record logged while it runs carries it, threads of the call included
REQUEST_ID: ContextVar[str | None] = ContextVar("imagestore_request_id", default=None)

#: what every LogRecord has: anything else on a record is a field of it
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
#: a text value shown as is; others are quoted (JSON string syntax)
_BARE = re.compile(r"[^\s\"=\\]+")


def configure_logging(
    level: str, log_format: str = "text", libraries: str = LIBRARIES_DEFAULT
) -> None:
    """Send log records to stderr, one a line, in ``log_format`` (text or
    json); the ``imagestore`` loggers at ``level``, libraries at ``libraries``."""
    if log_format not in FORMATS:
        raise ValueError(f"log format {log_format!r}: expected text or json")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for previous in list(root.handlers):
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(_level(libraries))
    logging.getLogger("imagestore").setLevel(_level(level))
    logging.captureWarnings(True)  # warnings become records, in the same format


def _level(name: str) -> int:
    value = logging.getLevelName(name.upper())
    return value if isinstance(value, int) else logging.INFO  # argparse checked it


class RequestIdFilter(logging.Filter):
    """Puts the current call's request ID on the records logged while it runs
    (a handler's filter: it sees the records of every logger)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "request_id" not in vars(record):
            request_id = REQUEST_ID.get()
            if request_id is not None:
                record.request_id = request_id
        return True


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's own fields: what it carries beyond the standard attributes."""
    return {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD and not key.startswith("_")
    }


def timestamp(record: logging.LogRecord) -> str:
    """RFC 3339, UTC, milliseconds: ``2026-11-30T04:50:01.123Z``."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the record's
    fields, and ``exception`` (the formatted traceback) when it has one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # ASCII only: no character in it can break the line for any reader
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger message key=value …``; the message on one line (a
    newline in it shows as ``\\n``), a traceback on indented lines after it."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [timestamp(record), record.levelname, record.name, one_line(record.getMessage())]
        parts += [f"{key}={text_value(value)}" for key, value in fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            line += indented(record.exc_text)
        if record.stack_info:
            line += indented(self.formatStack(record.stack_info))
        return line


def indented(text: str) -> str:
    """A traceback's lines, each on a line of its own that starts with a space:
    an exception's message can hold a newline (a name a client sent), and what
    follows it must not pass for a record of its own."""
    return "".join(f"\n    {one_line(part)}" for part in text.split("\n"))


def one_line(text: str) -> str:
    """``text`` with its control characters escaped (``\\n``, ``\\x1b``)."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def text_value(value: Any) -> str:
    """A field's value in ``key=value`` form: bare when it has no space, quote,
    ``=`` or control character, else a JSON string."""
    text = value if isinstance(value, str) else str(value)
    if _BARE.fullmatch(text) and text.isprintable():
        return text
    return json.dumps(text)
