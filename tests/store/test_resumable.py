"""Resumable ingests (store/resumable.py): two replicas on one catalog and one
blob directory take one ingest file from each other, lock it, hash it again,
and go on; neither's sweep removes a file the other took."""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagestore.store.blobs import Encoding
from imagestore.store.resumable import IngestBusyError
from imagestore.store.store import Store
from tests.store.conftest import replica

KEY = "0123456789abcdef0123456789abcdef"
MEDIA = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


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
    assert taken.name == f"{b._parts.replica_id}-{KEY}"
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


def test_neither_replicas_sweep_removes_a_live_upload(pair: tuple[Store, Store]) -> None:
    a, b = pair
    file = a.create_resumable(KEY)
    file.append(b"held")
    assert a.prune().stale_ingests == b.prune().stale_ingests == 0
    assert a.resumable_size(KEY) == 4  # a holds it; b sees a alive
    taken = b.take_resumable(KEY)
    assert taken is not None
    file.close(remove=False)  # a lets go of it: b's now
    assert a.prune().stale_ingests == b.prune().stale_ingests == 0
    assert b.resumable_size(KEY) == 4
    taken.close(remove=False)  # b lets go too (a restart, say): nobody holds it now
    assert b.prune().stale_ingests == 1
    assert b.resumable_size(KEY) is None


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
