"""writeback.start: the kernel is asked to begin writing a file's pages, and a
descriptor it cannot do that for is an OSError with the errno, not a crash."""

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
