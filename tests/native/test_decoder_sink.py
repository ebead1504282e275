"""A decoder that writes what it is fed (Decoder.write_to): the file holds exactly
the bytes fed, in order, in every threading mode, whatever the piece sizes and
formats; the digests are unchanged; a failed write is the OS's error, with its
errno, and the decoder is done (docs/design.md §5).

This module also runs under ASan + UBSan (``make sanitize``).
"""

from __future__ import annotations

import errno
import gzip
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagestore import hashing
from tests.native.test_decoder_threads import layer_like, oracle, pieces


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    path = tmp_path / "sink"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        yield path, fd
    finally:
        os.close(fd)


@pytest.mark.parametrize("threads", ["one", "two", "auto"])
@pytest.mark.parametrize(("size", "piece"), [(20_000, 1), (6 << 20, 4093), (6 << 20, 3 << 20)])
def test_the_sink_holds_exactly_what_was_fed(
    sink: tuple[Path, int], threads: hashing.Threads, size: int, piece: int
) -> None:
    path, fd = sink
    compressed = gzip.compress(layer_like(size, seed=piece), compresslevel=1, mtime=0)
    with hashing.Decoder(threads=threads) as decoder:
        decoder.write_to(fd)
        for part in pieces(compressed, piece):
            decoder.update(part)
        _, digests = decoder.finish()
    assert digests == oracle(compressed)
    assert path.read_bytes() == compressed


def test_a_plain_stream_is_written_too(sink: tuple[Path, int]) -> None:
    path, fd = sink
    tar_like = layer_like(3 << 20, seed=7)
    with hashing.Decoder(threads="two") as decoder:
        decoder.write_to(fd)
        for part in pieces(tar_like, 1 << 20):
            decoder.update(part)
        _, digests = decoder.finish()
    assert digests.compression == "none"
    assert path.read_bytes() == tar_like


def test_only_what_is_fed_while_the_sink_is_set_is_written(sink: tuple[Path, int]) -> None:
    path, fd = sink
    compressed = gzip.compress(layer_like(4 << 20, seed=3), mtime=0)
    third = len(compressed) // 3
    with hashing.Decoder(threads="two") as decoder:
        decoder.update(compressed[:third])  # before: hashed only
        decoder.write_to(fd)
        decoder.update(compressed[third : 2 * third])
        decoder.write_to(None)
        decoder.update(compressed[2 * third :])  # after: hashed only
        _, digests = decoder.finish()
    assert digests == oracle(compressed)
    assert path.read_bytes() == compressed[third : 2 * third]


@pytest.mark.parametrize("threads", ["one", "two"])
def test_a_full_disk_is_an_os_error_with_its_errno(threads: hashing.Threads) -> None:
    compressed = gzip.compress(layer_like(4 << 20, seed=5), mtime=0)
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with hashing.Decoder(threads=threads) as decoder:
            decoder.write_to(fd)
            with pytest.raises(OSError, match=os.strerror(errno.ENOSPC)) as caught:
                decoder.update(compressed[: 2 << 20])  # past the first MiB: the hasher's too
            assert caught.value.errno == errno.ENOSPC
            with pytest.raises(OSError, match=os.strerror(errno.ENOSPC)):
                decoder.update(b"more")  # the decoder is done
    finally:
        os.close(fd)


def test_a_bad_descriptor_is_refused_at_once() -> None:
    with hashing.Decoder() as decoder, pytest.raises(ValueError, match="bad sink"):
        decoder.write_to(-2)
