"""Resumable ingests (store/resumable.py): two replicas on one catalog and one
blob directory take one ingest file from each other, lock it, hash it again,
and go on; neither's sweep removes a file the other took. A session's file
outlives a restart, and goes only once untouched for the upload timeout and
held by no request."""

from __future__ import annotations

import errno
import fcntl
import gzip
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imagestore.store import resumable
from imagestore.store.blobs import DEFAULT_UPLOAD_TIMEOUT, Encoding
from imagestore.store.resumable import IngestBusyError
from imagestore.store.store import Store
from tests.store.conftest import OpenStore, replica

KEY = "0123456789abcdef0123456789abcdef"
MEDIA = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def untouched_for(store: Store, seconds: float) -> None:
    """Date the file of KEY back: last written ``seconds`` ago."""
    path = resumable.find(store._parts.blobs, KEY)
    assert path is not None
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.fixture
def pair(tmp_path: Path, url: str) -> Iterator[tuple[Store, Store]]:
    """Two replicas on one database and one blob directory, with the default
    heartbeat and timeout: neither may count the other dead while a test runs
    (a prune would then remove the other's ingest files as a dead replica's)."""
    shared = tmp_path / "shared"
    with replica(tmp_path / "a", url, shared) as a, replica(tmp_path / "b", url, shared) as b:
        yield a, b


def test_a_file_taken_by_another_replica_is_renamed_hashed_again_and_committed(
    pair: tuple[Store, Store],
) -> None:
    a, b = pair
    plain = os.urandom(1 << 20)
    layer = gzip.compress(plain, compresslevel=1)
    half = len(layer) // 2
    file = a.create_resumable(KEY)
    ingest = a.resume_ingest(file, Encoding.LAYER)
    ingest.write(layer[:half])
    ingest.abandon()  # a's request ended; its memory is dropped, the file stays
    file.close(remove=False)
    assert b.resumable_size(KEY) == half
    taken = b.take_resumable(KEY)
    assert taken is not None
    assert taken.name == f"{b._parts.replica_id}-upload-{KEY}"
    assert sorted(p.name for p in b._parts.blobs.ingest_dir.iterdir()) == [taken.name]
    going_on = b.resume_ingest(taken, Encoding.LAYER)
    assert going_on.written == half
    going_on.write(layer[half:])
    going_on.expect(sha(layer))
    with b.lease() as lease:
        info = b.commit(going_on, lease, MEDIA)
    going_on.discard()
    assert (info.digest, info.diff_id) == (sha(layer), sha(plain))
    assert b.resumable_size(KEY) is None
    assert b.take_resumable(KEY) is None


def test_a_file_locked_by_a_request_is_busy_for_every_other_taker(
    pair: tuple[Store, Store],
) -> None:
    a, b = pair
    file = a.create_resumable(KEY)
    file.lock()
    with pytest.raises(IngestBusyError):
        b.take_resumable(KEY)
    with pytest.raises(IngestBusyError):
        a.take_resumable(KEY)  # a second request of the same replica
    file.unlock()
    taken = b.take_resumable(KEY)
    assert taken is not None
    assert not file.current()  # a's handle: its name is not this file any more
    taken.close(remove=True)
    file.close(remove=True)  # not a's to remove now, and nothing is left to
    assert list(a._parts.blobs.ingest_dir.iterdir()) == []


def test_no_sweep_removes_an_upload_until_it_is_idle_past_the_timeout(
    pair: tuple[Store, Store],
) -> None:
    a, b = pair
    file = a.create_resumable(KEY)
    file.append(b"held")
    assert a.prune().stale_ingests == b.prune().stale_ingests == 0
    assert a.resumable_size(KEY) == 4  # a holds it; b sees a alive
    taken = b.take_resumable(KEY)
    assert taken is not None
    file.close(remove=False)  # a lets go of it: b's now
    assert a.prune().stale_ingests == b.prune().stale_ingests == 0
    taken.close(remove=False)  # b lets go too (a restart, say): nobody holds it now
    assert a.prune().stale_ingests == b.prune().stale_ingests == 0  # not a crash leftover
    assert b.resumable_size(KEY) == 4
    untouched_for(b, DEFAULT_UPLOAD_TIMEOUT / 2)
    assert b.prune().stale_ingests == 0
    untouched_for(b, DEFAULT_UPLOAD_TIMEOUT * 2)
    # b's, and b is alive: b sweeps it (a live replica may hold its files open)
    assert a.prune().stale_ingests == a.remove_idle_uploads() == 0
    assert b.prune(dry_run=True).stale_ingests == 1
    assert b.prune().stale_ingests == 1
    assert b.resumable_size(KEY) is None


def test_an_idle_upload_a_request_holds_is_not_removed(pair: tuple[Store, Store]) -> None:
    a, _ = pair
    file = a.create_resumable(KEY)
    file.append(b"held")
    file.lock()  # a request of the session
    untouched_for(a, DEFAULT_UPLOAD_TIMEOUT * 2)
    assert a.remove_idle_uploads() == 0
    assert a.resumable_size(KEY) == 4
    file.touch()  # the request ends: its session is used now
    file.unlock()
    assert a.remove_idle_uploads() == 0
    untouched_for(a, DEFAULT_UPLOAD_TIMEOUT * 2)
    assert a.remove_idle_uploads() == 1
    assert a.resumable_size(KEY) is None
    assert not file.current()
    file.close(remove=True)  # its name is no longer a file: nothing more to remove


def nfs_flock(real: Callable[[int, int], None]) -> Callable[[int, int], None]:
    """flock as the Linux NFS client has it: a POSIX lock, whose exclusive kind
    needs a descriptor open for writing (EBADF otherwise)."""

    def flock(fd: int, operation: int) -> None:
        writable = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE != os.O_RDONLY
        if operation & fcntl.LOCK_EX and not writable:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        real(fd, operation)

    return flock


def test_idle_uploads_are_removed_where_flock_is_nfs_s(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fcntl, "flock", nfs_flock(fcntl.flock))
    file = store.create_resumable(KEY)
    file.append(b"held")
    file.close(remove=False)
    untouched_for(store, DEFAULT_UPLOAD_TIMEOUT * 2)
    assert store.prune().stale_ingests == 1
    assert store.resumable_size(KEY) is None


def test_an_upload_file_that_cannot_be_locked_stops_no_start_or_prune(
    tmp_path: Path, open_store: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ESTALE, ENOLCK: a shared directory's hiccup on one file leaves that file
    for a later sweep; the store opens and prunes all the same."""
    root = tmp_path / "root"
    with open_store(root) as store:
        file = store.create_resumable(KEY)
        file.append(b"held")
        file.close(remove=False)
        untouched_for(store, DEFAULT_UPLOAD_TIMEOUT * 2)
    real = fcntl.flock

    def stale(fd: int, operation: int) -> None:
        if "-upload-" in os.readlink(f"/proc/self/fd/{fd}"):  # not the root's lock
            raise OSError(errno.ESTALE, os.strerror(errno.ESTALE))
        real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", stale)
    with open_store(root) as store:
        assert store.stale_ingests_removed == 0
        assert store.prune().stale_ingests == 0
        assert store.resumable_size(KEY) == 4
        monkeypatch.setattr(fcntl, "flock", real)
        assert store.prune().stale_ingests == 1


@pytest.mark.parametrize("how", ["stopped", "killed"])
def test_an_upload_outlives_a_restart_of_its_replica(
    tmp_path: Path, open_store: OpenStore, how: str
) -> None:
    """Its file stays through the store's start-up sweep, whether the replica
    let go of it (a clean stop) or not (a crash: nothing ran after the write),
    and the restarted replica takes it, hashes it again and commits it."""
    root = tmp_path / "root"
    data = os.urandom(3 << 20)
    store = open_store(root)
    file = store.create_resumable(KEY)
    ingest = store.resume_ingest(file, Encoding.RAW)
    ingest.write(data[: 1 << 20])
    if how == "stopped":
        ingest.abandon()
        file.close(remove=False)
    store.close()
    store = open_store(root)
    try:
        assert store.stale_ingests_removed == 0
        taken = store.take_resumable(KEY)
        assert taken is not None
        going_on = store.resume_ingest(taken, Encoding.RAW)
        assert going_on.written == 1 << 20
        going_on.write(data[1 << 20 :])
        going_on.expect(sha(data))
        with store.lease() as lease:
            assert store.commit(going_on, lease, "application/octet-stream").digest == sha(data)
        going_on.abandon()
        taken.close(remove=False)
        assert store.resumable_size(KEY) is None
        assert list(store._parts.blobs.ingest_dir.iterdir()) == []
    finally:
        store.close()
    if how == "killed":  # the first store's descriptors, which a crash would have closed
        ingest.abandon()
        file.close(remove=False)


def test_a_restart_removes_the_uploads_idle_past_its_timeout(
    tmp_path: Path, open_store: OpenStore
) -> None:
    root = tmp_path / "root"
    store = open_store(root, upload_timeout=600)
    for key, idle in ((KEY, 300), (KEY[::-1], 900)):
        file = store.create_resumable(key)
        file.append(b"bytes")
        file.close(remove=False)
        then = time.time() - idle
        os.utime(file.path, (then, then))
    store.close()
    store = open_store(root, upload_timeout=600)
    try:
        assert store.stale_ingests_removed == 1
        assert store.resumable_size(KEY) == 5
        assert store.resumable_size(KEY[::-1]) is None
    finally:
        store.close()


def test_the_lock_is_held_until_the_commit_has_renamed_the_file(
    pair: tuple[Store, Store],
) -> None:
    a, b = pair
    data = os.urandom(4096)
    file = a.create_resumable(KEY)
    file.lock()
    ingest = a.resume_ingest(file, Encoding.RAW)
    ingest.write(data)
    ingest.expect(sha(data))
    seen: list[str] = []

    def protect(digest: str) -> None:  # just before the rename into place
        with pytest.raises(IngestBusyError):
            b.take_resumable(KEY)
        seen.append(digest)

    assert ingest.commit(protect=protect).digest == sha(data)
    assert seen == [sha(data)]
    ingest.abandon()
    file.close(remove=False)
    assert b.take_resumable(KEY) is None  # renamed into place: no upload any more
    assert b._parts.blobs.exists(sha(data))  # in the shared blob directory
