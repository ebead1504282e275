"""Layer ingests (Encoding.LAYER) with the decoder's hasher thread.

A large gzip layer is hashed on two threads while it is written (docs/design.md
§5); the blob, its digest, size and diff_id must be what hashlib + zlib say, a
cancelled ingest must leave neither a file nor a thread behind, and small layers
must not start a thread at all.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagestore import errors, writeback
from imagestore.store.blobs import BlobInfo, BlobStore, Encoding
from tests.api.conftest import wait_until
from tests.native.test_decoder_threads import hasher_threads

MIB = 1 << 20


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def a_layer(size: int, seed: int) -> tuple[bytes, bytes]:
    """(tar-like bytes, their gzip): random runs between runs of text."""
    rng = random.Random(seed)
    parts, total = [], 0
    while total < size:
        part = rng.randbytes(4096) if rng.random() < 0.5 else b"some text\n" * 400
        parts.append(part)
        total += len(part)
    data = b"".join(parts)[:size]
    return data, gzip.compress(data, compresslevel=6, mtime=0)


def pieces(data: bytes, size: int = MIB) -> Iterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(view), size):
        yield view[start : start + size]


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    wait_until(lambda: hasher_threads() == 0)  # none left by an earlier test
    return BlobStore(tmp_path / "blobs", "replica")


def test_a_large_layer_is_verified_on_two_threads_and_stored_whole(blobs: BlobStore) -> None:
    data, compressed = a_layer(24 * MIB, seed=1)
    with blobs.ingest(
        sha(compressed),
        len(compressed),
        encoding=Encoding.LAYER,
        expected_diff_id=sha(data),
    ) as ingest:
        for piece in pieces(compressed):
            ingest.write(piece)
        assert hasher_threads() == 1  # the decoder's hasher runs beside this thread
        info = ingest.commit()
    assert info == BlobInfo(sha(compressed), len(compressed), sha(data), len(data), "gzip")
    assert blobs.path(info.digest).read_bytes() == compressed
    wait_until(lambda: hasher_threads() == 0)


def test_a_wrong_diff_id_is_caught_on_two_threads(blobs: BlobStore) -> None:
    data, compressed = a_layer(8 * MIB, seed=2)

    def ingest_claiming_another_diff_id() -> None:
        with blobs.ingest(
            sha(compressed),
            len(compressed),
            encoding=Encoding.LAYER,
            expected_diff_id=sha(data + b"x"),
        ) as ingest:
            for piece in pieces(compressed):
                ingest.write(piece)
            ingest.commit()

    with pytest.raises(errors.DiffIdMismatch):
        ingest_claiming_another_diff_id()
    assert not blobs.exists(sha(compressed))
    assert os.listdir(blobs.ingest_dir) == []


def test_a_cancelled_layer_ingest_leaves_no_file_and_no_thread(blobs: BlobStore) -> None:
    _, compressed = a_layer(16 * MIB, seed=3)
    threads_while_writing: list[int] = []

    def ingest_until_the_registry_hangs_up() -> None:
        with blobs.ingest(sha(compressed), len(compressed), encoding=Encoding.LAYER) as ingest:
            for count, piece in enumerate(pieces(compressed)):
                if count == 4:
                    threads_while_writing.append(hasher_threads())
                    raise ConnectionResetError
                ingest.write(piece)

    with pytest.raises(ConnectionResetError):
        ingest_until_the_registry_hangs_up()
    assert threads_while_writing == [1]
    wait_until(lambda: hasher_threads() == 0)
    assert os.listdir(blobs.ingest_dir) == []
    assert not blobs.exists(sha(compressed))


def test_small_layers_start_no_thread(blobs: BlobStore) -> None:
    for seed in range(50):
        data = random.Random(seed).randbytes(1024)
        compressed = gzip.compress(data, mtime=0)
        with blobs.ingest(sha(compressed), encoding=Encoding.LAYER) as ingest:
            ingest.write(compressed)
            assert hasher_threads() == 0
            assert ingest.commit().diff_id == sha(data)


def test_an_ingest_starts_its_writeback_every_few_mib(
    blobs: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit's fsync then waits for the last few MiB only (docs/design.md §6);
    each start covers what was written so far, and the blob is whole."""
    started_at: list[int] = []

    def start(fd: int) -> None:
        started_at.append(os.lseek(fd, 0, os.SEEK_CUR))  # the size is the space reserved
        real_start(fd)

    real_start = writeback.start
    monkeypatch.setattr(writeback, "start", start)
    data, compressed = a_layer(64 * MIB, seed=4)
    assert len(compressed) > 3 * writeback.EVERY
    with blobs.ingest(sha(compressed), len(compressed), encoding=Encoding.LAYER) as ingest:
        for piece in pieces(compressed):
            ingest.write(piece)
        info = ingest.commit()
    assert info.diff_id == sha(data)
    assert started_at == [
        n * writeback.EVERY for n in range(1, len(compressed) // writeback.EVERY + 1)
    ]
    assert blobs.path(info.digest).read_bytes() == compressed


def test_a_large_blob_has_its_space_reserved_a_window_ahead(
    blobs: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each write lands in blocks already allocated; the file never reaches more
    than a window past what was written, nor past the declared size, and the
    stored blob is exactly its bytes."""
    monkeypatch.setattr(writeback, "RESERVE_AHEAD", 8 * MIB)
    data, compressed = a_layer(48 * MIB, seed=6)
    size = len(compressed)
    assert size > 2 * writeback.RESERVE_AHEAD
    seen: list[tuple[int, int]] = []
    with blobs.ingest(sha(compressed), size, encoding=Encoding.LAYER) as ingest:
        for piece in pieces(compressed, 3 * MIB):
            ingest.write(piece)
            assert ingest._fd is not None
            stat = os.fstat(ingest._fd)
            written = os.lseek(ingest._fd, 0, os.SEEK_CUR)
            assert written <= stat.st_size <= min(size, written + writeback.RESERVE_AHEAD)
            assert stat.st_blocks * 512 >= stat.st_size  # allocated, not a hole
            seen.append((written, stat.st_size))
        info = ingest.commit()
    assert info.diff_id == sha(data)
    assert blobs.path(info.digest).read_bytes() == compressed
    assert all(file_size > written for written, file_size in seen[:-1])  # space ahead
    reserved = sorted({file_size for _, file_size in seen})
    assert len(reserved) > 2  # window after window, not the whole size at once
    assert reserved[-1] == size


def test_a_declared_size_is_not_reserved_whole(blobs: BlobStore) -> None:
    """A descriptor may claim any size: a download that stalls after 1 MiB of a
    'terabyte' holds a window's worth of disk, and leaves nothing once it ends."""
    _, compressed = a_layer(2 * MIB, seed=7)
    with blobs.ingest(sha(compressed), 1 << 40, encoding=Encoding.LAYER) as ingest:
        ingest.write(compressed[:MIB])
        assert ingest._fd is not None
        stat = os.fstat(ingest._fd)
        assert stat.st_size == MIB + writeback.RESERVE_AHEAD
        assert stat.st_blocks * 512 <= MIB + writeback.RESERVE_AHEAD + MIB
    assert os.listdir(blobs.ingest_dir) == []


def test_a_short_body_in_reserved_space_is_refused(blobs: BlobStore) -> None:
    """The reserved tail is never taken for content: the size is the bytes hashed."""
    content = random.Random(8).randbytes(16 * MIB)
    with blobs.ingest(sha(content), len(content), encoding=Encoding.RAW) as ingest:
        ingest.write(content[: len(content) // 2])
        assert ingest._fd is not None
        assert os.fstat(ingest._fd).st_size == len(content)  # reserved to the end
        with pytest.raises(errors.DigestMismatch, match="size mismatch"):
            ingest.commit()
    assert os.listdir(blobs.ingest_dir) == []
    assert not blobs.exists(sha(content))


def test_an_ingest_with_a_declared_size_cannot_be_taken_over(
    blobs: BlobStore, tmp_path: Path
) -> None:
    """A taken-over file goes on at its end: space reserved ahead would sit
    before the next write, so only a sizeless ingest (an upload's) takes one."""
    content = b"x" * MIB
    fd = os.open(tmp_path / "session", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        with blobs.ingest(sha(content), len(content), encoding=Encoding.RAW) as ingest:
            with pytest.raises(ValueError, match="no declared size"):
                ingest.take_over("session", fd)
            ingest.write(content)
            assert ingest.commit().size == len(content)
    finally:
        os.close(fd)


def test_no_space_to_reserve_is_disk_full(
    blobs: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(writeback, "reserve", full)
    _, compressed = a_layer(16 * MIB, seed=9)
    with (
        pytest.raises(errors.DiskFull) as caught,
        blobs.ingest(sha(compressed), len(compressed), encoding=Encoding.LAYER) as ingest,
    ):
        ingest.write(compressed[:MIB])
    assert caught.value.metadata == {"errno": "ENOSPC"}
    assert os.listdir(blobs.ingest_dir) == []


@pytest.mark.parametrize("piece", [MIB // 4, 4 * MIB])
def test_a_full_disk_under_a_layer_ingest_is_disk_full(blobs: BlobStore, piece: int) -> None:
    """The layer's decoder writes the bytes (on its hasher thread, for large
    pieces): a full disk is DiskFull with ENOSPC, as for any other ingest."""
    _, compressed = a_layer(16 * MIB, seed=5)
    with blobs.ingest(sha(compressed), len(compressed), encoding=Encoding.LAYER) as ingest:
        ingest.write(compressed[:piece])
        full = os.open("/dev/full", os.O_WRONLY)
        try:
            fd = ingest._fd
            assert fd is not None
            os.dup2(full, fd)  # the ingest's descriptor now leads to a full disk
        finally:
            os.close(full)
        with pytest.raises(errors.DiskFull) as caught:
            ingest.write(compressed[piece : 2 * piece])
    assert caught.value.metadata == {"errno": "ENOSPC"}
    assert os.listdir(blobs.ingest_dir) == []
