"""Replicas: the server processes that share one catalog and one blob directory.

Each store root names its replica with a stable random ID (``<root>/replica-id``,
written once). Ingest files carry it (``blobs.py``), lease rows and the
replica's heartbeat row are keyed by it (docs/design.md §4).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

#: the file in a store root that holds its replica ID
REPLICA_ID_FILE = "replica-id"


def replica_id(root: Path) -> str:
    """The root's replica ID, created (random, 32 hex digits) on first use."""
    path = root / REPLICA_ID_FILE
    try:
        found = path.read_text().strip()
    except FileNotFoundError:
        found = ""
    if len(found) == 32 and all(c in "0123456789abcdef" for c in found):
        return found
    new = secrets.token_hex(16)
    temporary = root / f".{REPLICA_ID_FILE}.{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"{new}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    return new
