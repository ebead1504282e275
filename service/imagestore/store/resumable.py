"""Ingests any replica can find by a key, continue and commit: the files of the
registry endpoint's upload sessions (distribution/uploads.py).

A resumable ingest is an ingest file named ``<replica ID>-upload-<key>`` in the
shared ``ingest/`` directory (docs/design.md §4). Unlike other ingest files it
outlives its replica's restart or crash (the bytes so far stay a session's, to
go on with): it is stale only once untouched for the upload timeout
(``BlobStore.stale_ingests``). Whoever serves a request of the
session takes the file: it opens it, locks it (``flock``, exclusive, without
waiting: a second request at once is refused as busy), and, when another
replica last wrote it, renames it to its own name, so that it is this replica's
to sweep and no longer the other's. The bytes so far are then hashed again
(the hash state lives in one process), and the ingest goes on from its end.

A replica that holds the session in memory checks under the lock that its name
still is this file (the same inode) and that nothing grew it: else another
replica took it meanwhile, and the memory is dropped, never the file.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from imagestore.store.blobs import (
    INGEST_OWNER_SEPARATOR,
    UPLOAD_MARK,
    BlobStore,
    Encoding,
    Ingest,
    _disk_error,
)

#: how many times a take is tried when the file is renamed between finding and locking it
TAKE_TRIES = 3
#: every descriptor on a session's file appends: raw head bytes and ingest writes alike
OPEN_FLAGS = os.O_RDWR | os.O_APPEND


class IngestBusyError(Exception):
    """Another request (of this replica or another) holds the file's lock."""


@dataclass(eq=False)
class ResumableFile:
    """One replica's open handle on a resumable ingest file."""

    blobs: BlobStore
    key: str
    name: str
    fd: int

    @property
    def path(self) -> Path:
        return self.blobs.ingest_dir / self.name

    def lock(self) -> None:
        """Hold the file for one request; IngestBusyError when another holds it."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IngestBusyError(self.key) from None

    def unlock(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def current(self) -> bool:
        """Whether this replica's name for it still is this file (call locked);
        not when either cannot be read (ESTALE: unlinked on another machine)."""
        try:
            return os.stat(self.path).st_ino == os.fstat(self.fd).st_ino
        except OSError:
            return False

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def touch(self) -> None:
        """Mark it used now: a request of its session ended (its idle time starts)."""
        os.utime(self.fd)

    def head(self, count: int) -> bytes:
        """Its first ``count`` bytes (fewer when it is shorter)."""
        return os.pread(self.fd, count, 0)

    def append(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes written as they are, before an ingest hashes the file (every
        descriptor on it appends: O_APPEND)."""
        Ingest._write_all(self.fd, memoryview(data))

    def close(self, *, remove: bool) -> None:
        """Let go of it; ``remove`` unlinks it too, if the name still is this file."""
        if remove and self.current():
            self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.blobs._register(self.name, False)


def own_name(blobs: BlobStore, key: str) -> str:
    return blobs.replica_id + _suffix(key)


def _suffix(key: str) -> str:
    """What the file of ``key`` is named after its owner."""
    return INGEST_OWNER_SEPARATOR + UPLOAD_MARK + key


def create(blobs: BlobStore, key: str) -> ResumableFile:
    """A new, empty resumable ingest file of this replica."""
    name = own_name(blobs, key)
    blobs._register(name, True)
    try:
        fd = os.open(blobs.ingest_dir / name, OPEN_FLAGS | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        blobs._register(name, False)
        raise _disk_error(exc, "creating an upload") from None
    return ResumableFile(blobs, key, name, fd)


def find(blobs: BlobStore, key: str) -> Path | None:
    """The file of ``key``, whichever replica's name it has (None: there is none)."""
    suffix = _suffix(key)
    with os.scandir(blobs.ingest_dir) as entries:
        for entry in entries:
            if entry.name.endswith(suffix) and len(entry.name) > len(suffix):
                return Path(entry.path)
    return None


def take(blobs: BlobStore, key: str) -> ResumableFile | None:
    """The file of ``key``, locked and renamed to this replica's name (None:
    there is none); IngestBusyError when a request elsewhere holds it."""
    for _ in range(TAKE_TRIES):
        path = find(blobs, key)
        if path is None:
            return None
        try:
            fd = os.open(path, OPEN_FLAGS)
        except FileNotFoundError:
            continue  # renamed or removed since it was found: look again
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise IngestBusyError(key) from None
        taken = ResumableFile(blobs, key, path.name, fd)
        if not taken.current():  # taken and renamed by another before the lock
            os.close(fd)
            continue
        name = own_name(blobs, key)
        blobs._register(name, True)
        if taken.name != name:
            try:
                os.rename(path, blobs.ingest_dir / name)
            except OSError as exc:
                blobs._register(name, False)
                os.close(fd)
                raise _disk_error(exc, "taking an upload") from None
            taken.name = name
        return taken
    return None


def size_of(blobs: BlobStore, key: str) -> int | None:
    """The bytes written so far to the file of ``key`` (None: there is none)."""
    for _ in range(TAKE_TRIES):
        path = find(blobs, key)
        if path is None:
            return None
        try:
            return path.stat().st_size
        except FileNotFoundError:
            continue
    return None


def resume(
    blobs: BlobStore, file: ResumableFile, encoding: Encoding, max_uncompressed_size: int
) -> Ingest:
    """An ingest that goes on from the file's end, having hashed what it holds,
    through a descriptor of its own: ``file`` keeps its descriptor, and so its
    lock, until it is closed, after the ingest's commit (the rename) or discard
    (the unlink), so no other replica takes the file in between."""
    ingest = Ingest(blobs, None, None, encoding, max_uncompressed_size)
    try:
        ingest.take_over(file.name, os.dup(file.fd))
    except OSError as exc:
        ingest.abandon()
        raise _disk_error(exc, "reading an upload") from None
    except BaseException:
        ingest.abandon()
        raise
    return ingest
