"""writeback.start and writeback.reserve: the kernel is asked to begin writing a
file's pages, or to allocate its blocks ahead, and a descriptor it cannot do
that for is an OSError with the errno, not a crash."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from imagestore import writeback


def test_a_file_being_written_has_its_writeback_started(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, b"x" * (writeback.EVERY + 123))
        writeback.start(fd)
        os.write(fd, b"y" * 10)  # the partial page it left alone takes more
        os.fsync(fd)
    finally:
        os.close(fd)
    assert path.stat().st_size == writeback.EVERY + 133


def test_a_closed_descriptor_is_an_os_error(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "blob", os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    with pytest.raises(OSError, match=os.strerror(errno.EBADF)) as caught:
        writeback.start(fd)
    assert caught.value.errno == errno.EBADF


def test_a_pipe_is_an_os_error() -> None:
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(OSError, match=os.strerror(errno.ESPIPE)) as caught:
            writeback.start(write_end)
        assert caught.value.errno == errno.ESPIPE
    finally:
        os.close(read_end)
        os.close(write_end)


def test_reserved_space_is_allocated_and_the_size_grows_to_its_end(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x" * 5000)
        writeback.reserve(fd, 4096, 3 << 20)
        stat = os.fstat(fd)
        assert stat.st_size == 4096 + (3 << 20)
        assert stat.st_blocks * 512 >= stat.st_size
        assert os.lseek(fd, 0, os.SEEK_CUR) == 5000  # the writes go on where they were
        os.write(fd, b"y" * 10)
    finally:
        os.close(fd)
    content = path.read_bytes()
    assert content[:5010] == b"x" * 5000 + b"y" * 10
    assert content[5010:] == bytes(len(content) - 5010)  # reserved: reads as zeros


def test_reserving_on_a_read_only_descriptor_or_a_pipe_is_an_os_error(tmp_path: Path) -> None:
    (tmp_path / "blob").write_bytes(b"")
    fd = os.open(tmp_path / "blob", os.O_RDONLY)
    try:
        with pytest.raises(OSError, match=os.strerror(errno.EBADF)) as caught:
            writeback.reserve(fd, 0, 4096)
        assert caught.value.errno == errno.EBADF
    finally:
        os.close(fd)
    assert (tmp_path / "blob").stat().st_size == 0
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(OSError, match=os.strerror(errno.ESPIPE)) as caught:
            writeback.reserve(write_end, 0, 4096)
        assert caught.value.errno == errno.ESPIPE
    finally:
        os.close(read_end)
        os.close(write_end)
