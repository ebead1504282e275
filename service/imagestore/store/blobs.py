"""Content-addressed blob files: ``<blob dir>/sha256/<hex>``, written through ingests.

The blob directory is ``<root>/blobs`` unless ``serve --blob-dir`` names another
one, which several replicas may share (docs/design.md §4). An ingest is a temp
file in ``<blob dir>/ingest/`` (the blob files' own filesystem, so that its
final rename is atomic), named ``<replica ID>-<random>`` so that any replica
can tell whose it is; it is hashed while it is written
(native extension), fsynced, verified against the expected digest and size,
made read-only, renamed into place, and the directory fsynced. A blob is
either whole and verified, or absent: nothing that fails verification ever
becomes a path. Ingests of one digest are serialised: the second waits for the
first, then finds the blob (or takes over if the first gave up).

Whether a blob counts as there is the caller's call (``present``): the store
counts a file only with its catalog record and no damage mark, so an ingest
of a file left without its record, or found damaged, writes it again, and the
verified bytes are renamed over the old file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Container, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import BinaryIO

from imagestore import errors, hashing, writeback
from imagestore.oci.digests import digest_hex, parse_digest

log = logging.getLogger("imagestore.store")

READ_CHUNK = 1 << 20
#: blob files: read-only to the owner (nothing rewrites a blob in place)
BLOB_FILE_MODE = 0o400
#: the store's directories: the owner's alone
DIRECTORY_MODE = 0o700


class Encoding(Enum):
    """How an ingest treats the bytes it is given."""

    #: store as given; SHA-256 only (manifests, configs, opaque blobs)
    RAW = "raw"
    #: store as given, a layer: also inflate (digest-only) for its diff_id
    LAYER = "layer"
    #: an uncompressed layer: gzip it on the way in, store the gzip
    COMPRESS = "compress"


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A committed blob. Layer fields are set for LAYER and COMPRESS ingests."""

    digest: str
    size: int
    diff_id: str | None = None
    uncompressed_size: int | None = None
    compression: str | None = None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_marker(marker: Path) -> str | None:
    """What a blob directory's mark says (None: not marked)."""
    try:
        return marker.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        return None


def _write_marker(marker: Path, content: str) -> str:
    """Mark a directory with ``content`` unless it is marked already; the mark it
    has then. Linked into place whole (fsynced first): never half written, never
    replaced. Where hard links are not supported (some SMB and FUSE shares) the
    mark is created in place, exclusively."""
    partial = marker.with_name(f"{marker.name}.{secrets.token_hex(8)}.partial")
    _write_synced(partial, content)
    try:
        os.link(partial, marker)
    except FileExistsError:
        pass  # another replica marked it first: its mark is the one
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
            raise
        with contextlib.suppress(FileExistsError):
            _write_synced(marker, content)
    finally:
        os.unlink(partial)
    _fsync_dir(marker.parent)
    found = _read_marker(marker)
    assert found is not None  # made above, or by the other replica
    return found


def _write_synced(path: Path, content: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, BLOB_FILE_MODE)
    try:
        os.write(fd, f"{content}\n".encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _disk_error(exc: OSError, doing: str) -> errors.ImageStoreError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return errors.DiskFull(f"disk full while {doing}", metadata={"errno": "ENOSPC"})
    return errors.IoError(f"I/O error while {doing}: {exc.strerror}")


#: separates the replica ID from the random part of an ingest file's name
INGEST_OWNER_SEPARATOR = "-"
#: the file in a blob directory naming the store (catalog) it belongs to
STORE_ID_FILE = "store-id"


#: follows the owner in the name of an upload session's file (store/resumable.py):
#: ``<replica ID>-upload-<key>``. Such a file outlives its replica's restart, and
#: is stale only once idle past the upload timeout
UPLOAD_MARK = "upload-"
#: an upload session's file untouched this long is removed (seconds)
DEFAULT_UPLOAD_TIMEOUT = 3600.0


def ingest_owner(name: str) -> str:
    """The replica ID an ingest file's name starts with ("" when it has none)."""
    owner, separator, _ = name.partition(INGEST_OWNER_SEPARATOR)
    return owner if separator else ""


def is_upload(name: str) -> bool:
    """Whether an ingest file's name is an upload session's."""
    return name.partition(INGEST_OWNER_SEPARATOR)[2].startswith(UPLOAD_MARK)


def _remove_idle_upload(path: Path, idle_before: float) -> bool:
    """Unlink an upload session's file untouched since ``idle_before`` (a Unix
    time), holding its lock, so that no request is writing it; False when a
    request holds it, another took it (renamed) or it was touched meanwhile. A
    file that cannot be locked or read (ESTALE, ENOLCK on a shared directory) is
    left for a later sweep, never an error: one file stops no start-up or prune."""
    try:
        # for writing: NFS turns flock into a POSIX lock, whose exclusive kind needs it
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("upload file %s left for a later sweep: %s", path.name, exc)
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        status = os.fstat(fd)
        if status.st_mtime >= idle_before or os.stat(path).st_ino != status.st_ino:
            return False
        path.unlink()
        return True
    except (BlockingIOError, FileNotFoundError):
        return False
    except OSError as exc:
        log.warning("upload file %s left for a later sweep: %s", path.name, exc)
        return False
    finally:
        os.close(fd)


class BlobStore:
    """The blob files of one store, written by one replica (``replica_id``)."""

    def __init__(
        self, root: Path, replica_id: str, upload_timeout: float = DEFAULT_UPLOAD_TIMEOUT
    ) -> None:
        self.root = root
        self.replica_id = replica_id
        #: seconds an upload session's file may stay untouched before it is stale
        self.upload_timeout = upload_timeout
        self.blob_dir = root / "sha256"
        self.ingest_dir = root / "ingest"
        for directory in (root, self.blob_dir, self.ingest_dir):
            directory.mkdir(DIRECTORY_MODE, parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._digest_locks: dict[str, tuple[threading.Lock, int]] = {}
        self._active_ingests: set[str] = set()

    # ---- whose directory ------------------------------------------------------

    def bind(self, store_id: str, recorded_blobs: int, claim: Callable[[str], str]) -> None:
        """Make sure this is the blob directory of the catalog's store ``store_id``
        (which records ``recorded_blobs`` blobs), marking it if it is not marked.

        The mark (``store-id``) names the store and a random nonce of this
        directory; ``claim(nonce)`` records the nonce in the catalog unless one
        is recorded already, and returns the recorded one. So the first
        directory marked is the store's, and any other is refused
        (BlobDirMismatch): another store's, an unmounted share (marked or
        empty), one of two replicas that started at once on different
        directories. Refused before any sweep or collection: this directory's
        collector would count the store's blobs lost, another store's would
        delete this one's blobs as orphans."""
        marker = self.root / STORE_ID_FILE
        found = _read_marker(marker)
        if found is None:
            if recorded_blobs and not self._holds_blobs():
                raise errors.BlobDirMismatch(
                    f"blob directory {self.root} is empty and unmarked, but the catalog"
                    f" records {recorded_blobs} blobs: is it the shared directory (mounted)?"
                    " Every replica of one catalog must use the same --blob-dir",
                    metadata={"blob_dir": str(self.root)},
                )
            # of replicas marking one directory at once, the first one's mark stands
            found = _write_marker(marker, f"{store_id} {secrets.token_hex(16)}")
        marked_store, _, nonce = found.partition(" ")
        if marked_store != store_id:
            raise errors.BlobDirMismatch(
                f"blob directory {self.root} belongs to store {marked_store[:64]}, but the"
                f" catalog is store {store_id}: every replica of one catalog must use the same"
                " --blob-dir, and a store's catalog and blob directory stay together (a"
                " catalog restored from before schema 6 has a new ID: if this directory is"
                " its store's, remove its store-id file)",
                metadata={
                    "blob_dir": str(self.root),
                    "expected": store_id,
                    "found": marked_store[:64],
                },
            )
        recorded = claim(nonce)
        if recorded != nonce:
            raise errors.BlobDirMismatch(
                f"blob directory {self.root} is not the one this store's replicas use: the"
                " catalog recorded another directory first (an unmounted share, or replicas"
                " started on different directories). Every replica of one catalog must use"
                " the same --blob-dir",
                metadata={"blob_dir": str(self.root), "expected": recorded, "found": nonce[:64]},
            )

    def _holds_blobs(self) -> bool:
        with os.scandir(self.blob_dir) as entries:
            return next(entries, None) is not None

    # ---- reading -------------------------------------------------------------

    def path(self, digest: str) -> Path:
        """Where a blob lives; the digest is validated first."""
        return self.blob_dir / digest_hex(digest)

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int | None:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def modified(self, digest: str) -> float | None:
        """When a blob file was last written (seconds since the epoch; None: absent)."""
        try:
            return self.path(digest).stat().st_mtime
        except FileNotFoundError:
            return None

    def open(self, digest: str) -> BinaryIO:
        """A blob's file, open for reading; raises NotFound."""
        try:
            return self.path(digest).open("rb")
        except FileNotFoundError:
            raise errors.BlobNotFound(
                f"blob {digest} not found", metadata={"digest": digest}
            ) from None

    def read_bytes(self, digest: str) -> bytes:
        """A small blob (manifest, config) whole; raises NotFound."""
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise errors.BlobNotFound(
                f"blob {digest} not found", metadata={"digest": digest}
            ) from None

    def read(
        self, digest: str, offset: int = 0, length: int | None = None, chunk_size: int = READ_CHUNK
    ) -> Iterator[bytes]:
        """Stream ``length`` bytes (default: to the end) from ``offset``, in chunks
        of at most ``chunk_size`` (1 MiB)."""
        if offset < 0 or (length is not None and length < 0):
            raise errors.RangeInvalid(
                "offset and limit must not be negative", field="offset" if offset < 0 else "limit"
            )
        with self.open(digest) as handle:
            total = os.fstat(handle.fileno()).st_size
            if offset > total:
                raise errors.OutOfRange(
                    f"offset {offset} is past the end of {digest} ({total} bytes)",
                    metadata={"digest": digest, "offset": str(offset), "size": str(total)},
                )
            handle.seek(offset)
            left = total - offset if length is None else min(length, total - offset)
            while left > 0:
                chunk = handle.read(min(chunk_size, left))
                if not chunk:
                    raise errors.BlobCorrupt(
                        f"blob {digest} shrank while being read", metadata={"digest": digest}
                    )
                left -= len(chunk)
                yield chunk

    def digests(self) -> Iterator[str]:
        """Every blob file present (names that are not digests are skipped)."""
        for entry in os.scandir(self.blob_dir):
            name = "sha256:" + entry.name
            if entry.is_file() and len(entry.name) == 64:
                try:
                    yield parse_digest(name)
                except errors.InvalidArgument:
                    continue

    def verify(self, digest: str) -> bool:
        """Re-hash a blob file; True when it matches its name."""
        with hashing.Sha256() as hasher:
            for chunk in self.read(digest):
                hasher.update(chunk)
            return hasher.finish()[0] == digest

    # ---- writing -------------------------------------------------------------

    def delete(self, digest: str) -> None:
        """Unlink a blob file (missing is fine: deletion is idempotent)."""
        self.path(digest).unlink(missing_ok=True)

    def stale_ingests(
        self, live_replicas: Container[str] = (), *, uploads_only: bool = False
    ) -> dict[Path, int]:
        """Ingest files nobody is writing, with sizes: this replica's that no live
        ingest owns (crash leftovers), and those of replicas not in
        ``live_replicas`` (dead ones, on a shared blob directory). An upload
        session's file outlives its replica's restart: it is stale only once
        untouched for the upload timeout (and this replica's or a dead one's: a
        live replica sweeps its own, which it may hold open)."""
        found = {}
        idle_before = time.time() - self.upload_timeout
        with self._lock:
            for entry in os.scandir(self.ingest_dir):
                upload = is_upload(entry.name)
                if uploads_only and not upload:
                    continue
                owner = ingest_owner(entry.name)
                if owner == self.replica_id:
                    stale = upload or entry.name not in self._active_ingests
                else:
                    stale = owner not in live_replicas
                if not stale:
                    continue
                try:
                    status = entry.stat()
                except FileNotFoundError:
                    continue
                if not upload or status.st_mtime < idle_before:
                    found[Path(entry.path)] = status.st_size
        return found

    def remove_stale_ingests(
        self, live_replicas: Container[str] = (), *, uploads_only: bool = False
    ) -> dict[Path, int]:
        """Delete the stale ingest files; returns what was removed. An upload's
        file goes only while no request holds its lock (store/resumable.py), and
        is locked outside this store's lock, which every ingest takes."""
        with self._lock:
            stale = self.stale_ingests(live_replicas, uploads_only=uploads_only)
            for path in stale:
                if not is_upload(path.name):
                    path.unlink(missing_ok=True)
        idle_before = time.time() - self.upload_timeout
        for path in [p for p in stale if is_upload(p.name)]:
            if not _remove_idle_upload(path, idle_before):
                del stale[path]
        return stale

    @contextmanager
    def _digest_lock(self, digest: str | None) -> Iterator[None]:
        if digest is None:
            yield
            return
        with self._lock:
            lock, users = self._digest_locks.get(digest, (threading.Lock(), 0))
            self._digest_locks[digest] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._lock:
                lock, users = self._digest_locks[digest]
                if users == 1:
                    del self._digest_locks[digest]
                else:
                    self._digest_locks[digest] = (lock, users - 1)

    @contextmanager
    def ingest(
        self,
        expected_digest: str | None = None,
        expected_size: int | None = None,
        *,
        encoding: Encoding = Encoding.RAW,
        max_uncompressed_size: int = 0,
        expected_diff_id: str | None = None,
        present: Callable[[str], bool] | None = None,
    ) -> Iterator[Ingest]:
        """Open an ingest; it is discarded unless committed inside the block.

        With an expected digest, concurrent ingests of it are serialised and
        ``ingest.exists`` says the blob is already there (nothing to write):
        ``present(digest)`` decides, under the digest's lock (default: the
        file exists).
        """
        if expected_digest is not None:
            parse_digest(expected_digest)
        with self._digest_lock(expected_digest):
            ingest = Ingest(
                self,
                expected_digest,
                expected_size,
                encoding,
                max_uncompressed_size,
                expected_diff_id,
                present or self.exists,
            )
            try:
                yield ingest
            finally:
                ingest.discard()

    def _register(self, name: str, active: bool) -> None:
        with self._lock:
            if active:
                self._active_ingests.add(name)
            else:
                self._active_ingests.discard(name)


class Ingest:
    """One blob being written. Use through :meth:`BlobStore.ingest`."""

    def __init__(
        self,
        store: BlobStore,
        expected_digest: str | None,
        expected_size: int | None,
        encoding: Encoding,
        max_uncompressed_size: int,
        expected_diff_id: str | None = None,
        present: Callable[[str], bool] | None = None,
    ) -> None:
        self._store = store
        self.expected_digest = expected_digest
        self.expected_size = expected_size
        #: a layer's diff_id, checked before commit (a pull knows it from the config)
        self.expected_diff_id = expected_diff_id
        self.encoding = encoding
        #: the blob is there already: nothing to write
        self.exists = expected_digest is not None and (present or store.exists)(expected_digest)
        self.written = 0
        self.committed: BlobInfo | None = None
        self._name = store.replica_id + INGEST_OWNER_SEPARATOR + secrets.token_hex(16)
        self._path = store.ingest_dir / self._name
        self._fd: int | None = None
        # bytes written since the file's writeback was last started
        self._unsynced = 0
        # the file's size so far, its blocks reserved ahead of the writes
        self._reserved = 0
        self._hasher: hashing.Sha256 | hashing.Decoder | hashing.Encoder
        if encoding is Encoding.RAW:
            self._hasher = hashing.Sha256()
        elif encoding is Encoding.LAYER:
            self._hasher = hashing.Decoder(max_uncompressed_size)
        else:
            self._hasher = hashing.Encoder()

    @property
    def path(self) -> Path:
        """The file being written (readable while the ingest is open; renamed at commit)."""
        return self._path

    def expect(self, digest: str) -> None:
        """Check the bytes against ``digest`` at :meth:`commit`, for a writer that
        learns it only once every byte is written (a registry upload session)."""
        if self.committed is not None:
            raise ValueError("ingest already committed")
        self.expected_digest = parse_digest(digest)

    def _open(self) -> int:
        if self._fd is None:
            self._store._register(self._name, True)
            try:
                self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as exc:
                self._store._register(self._name, False)
                raise _disk_error(exc, "creating an ingest") from None
            self._sink_into(self._fd)
        return self._fd

    def _sink_into(self, fd: int) -> None:
        # A layer's decoder writes what it hashes, on its hasher thread when it
        # has one: the page-cache writes leave the inflating thread, the one a
        # large layer waits on (docs/design.md §5).
        if isinstance(self._hasher, hashing.Decoder):
            self._hasher.write_to(fd)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Hash and write more bytes (blocking I/O: call from a worker thread)."""
        if self.committed is not None:
            raise ValueError("ingest already committed")
        fd = self._open()
        hasher = self._hasher
        try:
            self._reserve_for(fd, len(data))
            if isinstance(hasher, hashing.Encoder):
                stored = self._write_all(fd, hasher.update(data))
            elif isinstance(hasher, hashing.Decoder):
                hasher.update(data)  # which writes it to fd as well
                stored = len(data)
            else:
                hasher.update(data)
                stored = self._write_all(fd, data)
            self._unsynced += stored
            if self._unsynced >= writeback.EVERY:
                self._unsynced = 0
                writeback.start(fd)
        except OSError as exc:
            raise _disk_error(exc, "writing a blob") from None
        self.written += len(data)
        if (size := self._stored_size) is not None and self.written > size:
            raise errors.DigestMismatch(
                f"content is larger than the expected {self.expected_size} bytes",
                metadata={"digest": self.expected_digest or "", "size": str(self.expected_size)},
            )

    @property
    def _stored_size(self) -> int | None:
        # The size the file will have, checked as it grows and at commit: the
        # expected size, unless the ingest compresses (its file is not the bytes given).
        return None if self.encoding is Encoding.COMPRESS else self.expected_size

    def _reserve_for(self, fd: int, count: int) -> None:
        # A large blob of known size gets its blocks a window ahead of the
        # bytes it is about to write, never beyond that size (writeback.py).
        size = self._stored_size
        if size is None or size < writeback.RESERVE_FROM:
            return
        end = min(self.written + count, size)
        if end > self._reserved:
            until = min(size, end + writeback.RESERVE_AHEAD)
            writeback.reserve(fd, self._reserved, until - self._reserved)
            self._reserved = until

    @staticmethod
    def _write_all(fd: int, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            raise _disk_error(exc, "writing a blob") from None
        return len(data)

    def _finish_hash(self, fd: int) -> BlobInfo:
        hasher = self._hasher
        if isinstance(hasher, hashing.Sha256):
            digest, size = hasher.finish()
            return BlobInfo(digest, size)
        if isinstance(hasher, hashing.Encoder):
            tail, layer = hasher.finish()
            self._write_all(fd, tail)
        else:
            _, layer = hasher.finish()
        return BlobInfo(
            layer.digest, layer.size, layer.diff_id, layer.uncompressed_size, layer.compression
        )

    def commit(self, protect: Callable[[str], None] | None = None) -> BlobInfo:
        """Verify, fsync and rename into place; returns what was stored.

        ``protect`` is called with the digest just before the rename (the
        store leases it there, so the collector cannot take the new file).

        Raises DigestMismatch (nothing stored) when the bytes are not what
        was expected. Committing a blob that already exists succeeds.
        """
        if self.committed is not None:
            return self.committed
        fd = self._open()
        info = self._finish_hash(fd)
        if (size := self._stored_size) is not None and info.size != size:
            raise errors.DigestMismatch(
                f"size mismatch: got {info.size} bytes, expected {self.expected_size}",
                metadata={"digest": self.expected_digest or "", "size": str(info.size)},
            )
        if self.expected_digest is not None and info.digest != self.expected_digest:
            raise errors.DigestMismatch(
                f"digest mismatch: content hashes to {info.digest},"
                f" expected {self.expected_digest}",
                metadata={"expected": self.expected_digest, "actual": info.digest},
            )
        if self.expected_diff_id is not None and info.diff_id != self.expected_diff_id:
            raise errors.DiffIdMismatch(
                f"layer {info.digest} unpacks to {info.diff_id},"
                f" but the image config says {self.expected_diff_id}",
                metadata={"digest": info.digest, "diff_id": self.expected_diff_id},
            )
        target = self._store.path(info.digest)
        try:
            os.fsync(fd)
            os.fchmod(fd, BLOB_FILE_MODE)
            os.close(fd)
            self._fd = None
            if protect is not None:
                protect(info.digest)
            # Atomic. An existing file is replaced: by equal bytes, or (a damaged
            # or unrecorded file written again) by the verified ones.
            os.replace(self._path, target)
            _fsync_dir(self._store.blob_dir)
        except OSError as exc:
            raise _disk_error(exc, "committing a blob") from None
        self._store._register(self._name, False)
        self.committed = info
        return info

    def take_over(self, name: str, fd: int) -> None:
        """Go on with the ingest file ``name``, open as ``fd``, a descriptor that
        appends (store/resumable.py, whose file registers the name): what it
        holds is hashed first."""
        if self.encoding is Encoding.COMPRESS:
            raise ValueError("a compressing ingest cannot be taken over")
        if self.expected_size is not None:
            # its size is its end: space reserved ahead would come before the next write
            raise ValueError("an ingest taken over has no declared size")
        self._name, self._path, self._fd = name, self._store.ingest_dir / name, fd
        offset = 0
        while chunk := os.pread(fd, READ_CHUNK, offset):
            self._hasher.update(chunk)
            offset += len(chunk)
        self.written = offset
        self._sink_into(fd)  # what follows is written as well as hashed

    def abandon(self) -> None:
        """Let go of an ingest taken over, without committing it: closed, never
        unlinked (the name may be another replica's now), its registration left
        to the file that holds it."""
        self._hasher.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        """Drop an uncommitted ingest (idempotent)."""
        self._hasher.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.committed is None:
            self._path.unlink(missing_ok=True)
            self._store._register(self._name, False)
