"""The decoder's two-thread mode against the one-thread mode and the stdlib oracle.

In digest-only mode a decoder may hash on a thread of its own while the caller's
thread inflates into a ring of 256 KiB slots (docs/design.md §5). Whatever the
mode, the results must be those of hashlib + zlib: digests, sizes, format, and
the same typed errors at the same inputs. ``threads="two"`` starts the hasher
from the first byte, so small inputs exercise the hand-off too.

This module also runs under ASan + UBSan (``make sanitize``): freeing a handle
mid-stream and the stress loop are what it checks there.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import signal
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagestore import errors, hashing
from imagestore._native import ffi, lib
from tests.api.conftest import wait_until

SLOT = 256 << 10  # the ring's slot size (native/imagestore_native.c)
# `printf 'hello\n' | gzip -n`
HELLO_GZ = bytes.fromhex("1f8b0800000000000003cb48cdc9c9e7020020303a3606000000")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def pieces(data: bytes, size: int) -> Iterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(view), size):
        yield view[start : start + size]


def layer_like(size: int, seed: int = 0) -> bytes:
    """Compressible, tar-like bytes: text, zeros and random runs."""
    rng = random.Random(seed)
    parts: list[bytes] = []
    total = 0
    while total < size:
        kind = rng.randrange(3)
        if kind == 0:
            part = b"".join(b"line %d of a file\n" % rng.randrange(10**6) for _ in range(400))
        elif kind == 1:
            part = b"\x00" * rng.randrange(1, 200_000)
        else:
            part = rng.randbytes(rng.randrange(1, 50_000))
        parts.append(part)
        total += len(part)
    return b"".join(parts)[:size]


def decode(
    data: bytes, size: int, threads: hashing.Threads, limit: int = 0
) -> tuple[hashing.LayerDigests, int]:
    """Digest-only decode in pieces of ``size``; returns the digests and the threads used."""
    with hashing.Decoder(limit, threads=threads) as decoder:
        for piece in pieces(data, size):
            assert decoder.update(piece) == b""
        tail, digests = decoder.finish()
        assert tail == b""
        return digests, decoder.threads_used


def oracle(compressed: bytes) -> hashing.LayerDigests:
    """What hashlib + zlib say about a gzip stream (any number of members)."""
    out = bytearray()
    rest = compressed
    while rest:
        inflater = zlib.decompressobj(31)
        out += inflater.decompress(rest) + inflater.flush()
        assert inflater.eof
        rest = inflater.unused_data
    return hashing.LayerDigests(sha(compressed), len(compressed), sha(bytes(out)), len(out), "gzip")


def hasher_threads() -> int:
    """The decoders' hasher threads alive in this process (by their name)."""
    count = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            count += (task / "comm").read_text().strip() == "imagestore-hash"
        except FileNotFoundError:  # a thread that just ended
            continue
    return count


def wait_for_hasher_threads(count: int) -> None:
    """A joined thread may stay listed by the kernel for a moment after its join."""
    wait_until(lambda: hasher_threads() == count)


# ---- equal results ---------------------------------------------------------


@given(
    data=st.binary(max_size=40_000),
    level=st.integers(min_value=0, max_value=9),
    size=st.integers(min_value=1, max_value=70_000),
)
def test_two_threads_match_the_oracle_at_any_feed_size(data: bytes, level: int, size: int) -> None:
    compressed = gzip.compress(data, compresslevel=level, mtime=0)
    expected = oracle(compressed)
    two, used = decode(compressed, size, "two")
    assert two == expected
    assert used == 2
    assert decode(compressed, size, "one") == (expected, 1)


@pytest.mark.parametrize("threads", ["one", "two"])
def test_one_byte_feeds_across_many_ring_slots(threads: hashing.Threads) -> None:
    data = layer_like(3 * SLOT + 12345) + b"\x00" * (5 * SLOT)  # about 8 slots of output
    compressed = gzip.compress(data, compresslevel=9, mtime=0)
    assert len(compressed) < 100_000  # 1-byte feeds stay quick
    assert decode(compressed, 1, threads) == (oracle(compressed), 2 if threads == "two" else 1)


@pytest.mark.parametrize("size", [1 << 20, 65536, 4093, SLOT, SLOT + 1])
def test_a_large_layer_crossing_many_slots_matches_the_oracle(size: int) -> None:
    data = layer_like(24 << 20, seed=size)
    compressed = gzip.compress(data, compresslevel=6, mtime=0)
    expected = oracle(compressed)
    assert expected.diff_id == sha(data)
    assert decode(compressed, size, "two") == (expected, 2)
    assert decode(compressed, size, "auto") == (expected, 2)
    assert decode(compressed, size, "one") == (expected, 1)


def test_a_whole_layer_in_one_update_matches_the_oracle() -> None:
    compressed = gzip.compress(layer_like(12 << 20, seed=7), compresslevel=1, mtime=0)
    assert decode(compressed, len(compressed), "auto") == (oracle(compressed), 2)


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=3 * SLOT), min_size=2, max_size=4),
    feed=st.sampled_from([1000, 65536, 1 << 20]),
)
def test_multi_member_gzip_across_slots(sizes: list[int], feed: int) -> None:
    members = [layer_like(size, seed=size) for size in sizes]
    compressed = b"".join(gzip.compress(m, compresslevel=1, mtime=0) for m in members)
    expected = oracle(compressed)
    assert expected.diff_id == sha(b"".join(members))
    assert decode(compressed, feed, "two") == (expected, 2)


@pytest.mark.parametrize("threads", ["one", "two", "auto"])
def test_a_plain_layer_is_hashed_once_with_equal_digests(threads: hashing.Threads) -> None:
    tar = layer_like(5 << 20, seed=3)
    digests, used = decode(tar, 1 << 20, threads)
    assert digests == hashing.LayerDigests(sha(tar), len(tar), sha(tar), len(tar), "none")
    # auto: a plain stream gains nothing from a second thread, so none starts
    assert used == (2 if threads == "two" else 1)


def test_auto_keeps_a_small_layer_on_one_thread() -> None:
    small = gzip.compress(os.urandom(1024), mtime=0)
    assert decode(small, 1 << 20, "auto") == (oracle(small), 1)
    large = gzip.compress(os.urandom(2 << 20), compresslevel=1, mtime=0)
    assert decode(large, 1 << 20, "auto") == (oracle(large), 2)


def test_an_update_with_output_after_threaded_ones_drains_the_hasher() -> None:
    """The C API lets one stream mix digest-only updates and updates with output."""
    data = layer_like(6 << 20, seed=11)
    compressed = gzip.compress(data, compresslevel=1, mtime=0)
    handle = ffi.gc(_new_decoder(lib.ISN_THREADS_TWO), lib.isn_decoder_free)
    used, out_len = ffi.new("size_t *"), ffi.new("size_t *")
    out = ffi.new("unsigned char[]", 1 << 20)
    half = len(compressed) // 2
    src = ffi.from_buffer("unsigned char[]", compressed)
    assert lib.isn_decoder_update(handle, src, half, used, ffi.NULL, 0, out_len) == lib.ISN_OK
    assert used[0] == half
    assert lib.isn_decoder_threads(handle) == 2
    inflated = bytearray()
    pos = half
    while True:  # the rest with output: hashed on this thread, after the ring
        status = lib.isn_decoder_update(handle, src + pos, len(compressed) - pos, used, out,
                                        1 << 20, out_len)  # fmt: skip
        assert status == lib.ISN_OK
        pos += used[0]
        inflated += ffi.buffer(out, out_len[0])
        if pos == len(compressed) and out_len[0] < 1 << 20:
            break
    result = ffi.new("struct isn_result *")
    assert lib.isn_decoder_finish(handle, out, 1 << 20, out_len, result) == lib.ISN_OK
    assert bytes(ffi.buffer(result.out_sha256, 32)).hex() == hashlib.sha256(data).hexdigest()
    assert bytes(ffi.buffer(result.in_sha256, 32)).hex() == hashlib.sha256(compressed).hexdigest()
    assert result.out_size == len(data)
    assert bytes(inflated) == data[len(data) - len(inflated) :]


def _new_decoder(mode: int, limit: int = 0) -> object:
    out = ffi.new("isn_decoder **")
    assert lib.isn_decoder_new(out, limit) == lib.ISN_OK
    assert lib.isn_decoder_set_threads(out[0], mode) == lib.ISN_OK
    return out[0]


def test_threads_are_chosen_before_the_first_update_only() -> None:
    handle = ffi.gc(_new_decoder(lib.ISN_THREADS_AUTO), lib.isn_decoder_free)
    assert lib.isn_decoder_set_threads(handle, 3) == lib.ISN_ERR_ARGUMENT
    used, out_len = ffi.new("size_t *"), ffi.new("size_t *")
    assert lib.isn_decoder_update(handle, b"\x1f", 1, used, ffi.NULL, 0, out_len) == lib.ISN_OK
    assert lib.isn_decoder_set_threads(handle, lib.ISN_THREADS_TWO) == lib.ISN_ERR_STATE
    with pytest.raises(ValueError, match="threads must be"):
        hashing.Decoder(threads="three")  # type: ignore[arg-type]


# ---- the same errors -------------------------------------------------------


def _failure(data: bytes, threads: hashing.Threads, limit: int = 0) -> tuple[type, str]:
    with pytest.raises(errors.ImageStoreError) as failure:
        decode(data, 1 << 20, threads, limit)
    return type(failure.value), str(failure.value)


def test_the_limit_stops_a_bomb_early_with_two_threads() -> None:
    bomb = gzip.compress(b"\x00" * (256 << 20), compresslevel=9, mtime=0)
    limit = 3 << 20
    assert _failure(bomb, "two", limit) == _failure(bomb, "one", limit)
    with hashing.Decoder(limit, threads="two") as decoder:
        with pytest.raises(errors.SizeLimitExceeded, match=f"limit of {limit} bytes"):
            decoder.update(bomb)
        fed, inflated = decoder.sizes
        assert decoder.threads_used == 2
        assert inflated <= limit  # stopped at the limit, not at the end of the bomb
        assert fed < len(bomb) // 10
        with pytest.raises(errors.SizeLimitExceeded):  # and stays failed
            decoder.finish()


def _damaged(kind: str) -> bytes:
    compressed = gzip.compress(layer_like(6 << 20, seed=5), compresslevel=6, mtime=0)
    if kind == "corrupt":  # a flipped byte deep inside: found after the hasher started
        damaged = bytearray(compressed)
        damaged[len(damaged) * 3 // 4] ^= 0xFF
        damaged[-8] ^= 0x01  # and the CRC, in case the flip still inflates
        return bytes(damaged)
    if kind == "truncated":
        return compressed[:-100]
    return compressed + b"JUNK" * 1000  # trailing


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "trailing"])
def test_damaged_layers_fail_the_same_way_on_two_threads(kind: str) -> None:
    data = _damaged(kind)
    one = _failure(data, "one")
    assert _failure(data, "two") == one
    assert _failure(data, "auto") == one
    expected = {
        "corrupt": errors.CorruptCompressedData,
        "truncated": errors.TruncatedCompressedData,
        "trailing": errors.TrailingData,
    }[kind]
    assert one[0] is expected


# ---- lifetime: free mid-stream, creation failure, stress ------------------


def test_closing_mid_stream_joins_the_hasher_thread() -> None:
    compressed = gzip.compress(layer_like(16 << 20, seed=9), compresslevel=1, mtime=0)
    wait_for_hasher_threads(0)
    decoder = hashing.Decoder(threads="two")
    for piece in list(pieces(compressed, 1 << 20))[:5]:
        decoder.update(piece)
    assert decoder.threads_used == 2
    assert hasher_threads() == 1  # still busy with the ring, or idle
    decoder.close()  # a cancelled pull: no finish
    wait_for_hasher_threads(0)
    # finish joins it too
    with hashing.Decoder(threads="two") as decoder:
        decoder.update(compressed)
        assert hasher_threads() == 1
        decoder.finish()
        wait_for_hasher_threads(0)


def test_the_hasher_thread_blocks_signals() -> None:
    """SIGINT or SIGTERM must reach a thread that runs Python's handlers, not the hasher."""
    with hashing.Decoder(threads="two") as decoder:
        decoder.update(HELLO_GZ)
        blocked = [
            int(line.split()[1], 16)
            for task in Path("/proc/self/task").iterdir()
            if (task / "comm").read_text().strip() == "imagestore-hash"
            for line in (task / "status").read_text().splitlines()
            if line.startswith("SigBlk:")
        ]
        assert len(blocked) == 1
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
            assert blocked[0] & (1 << (number - 1))


def test_a_failed_hasher_start_falls_back_to_one_thread() -> None:
    """Address space for the ring but not for a thread's stack: pthread_create fails."""
    program = """
import gzip, hashlib, os, resource, sys
import psutil
from tests import native_variant
native_variant.load_from_environment()
from imagestore import hashing
data = os.urandom(1 << 20) * 4
compressed = gzip.compress(data, 1, mtime=0)
vms = psutil.Process().memory_info().vms
resource.setrlimit(resource.RLIMIT_AS, (vms + (4 << 20), resource.RLIM_INFINITY))
with hashing.Decoder(threads="two") as decoder:
    for start in range(0, len(compressed), 1 << 20):
        decoder.update(compressed[start : start + (1 << 20)])
    digests = decoder.finish()[1]
    print(decoder.threads_used, digests.diff_id == "sha256:" + hashlib.sha256(data).hexdigest(),
          digests.digest == "sha256:" + hashlib.sha256(compressed).hexdigest())
"""
    env = dict(os.environ)
    # a sanitizer reserves terabytes of address space: run this one on a build without it
    preloaded = env.pop("LD_PRELOAD", "")
    if any(runtime in preloaded for runtime in ("libasan", "libtsan")):
        env.pop("IMAGESTORE_TEST_NATIVE", None)
    result = subprocess.run(
        [sys.executable, "-c", program],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "True", "True"]


def test_many_handles_created_and_freed_from_many_threads() -> None:
    data = layer_like(3 << 20, seed=13)
    compressed = gzip.compress(data, compresslevel=1, mtime=0)
    expected = oracle(compressed)
    wait_for_hasher_threads(0)
    failures: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            for round_ in range(12):
                decoder = hashing.Decoder(threads="two" if round_ % 3 else "auto")
                stop_after = (index + round_) % 5  # 0..4 pieces, then close or finish
                for count, piece in enumerate(pieces(compressed, 512 << 10)):
                    if count == stop_after and round_ % 2:
                        break
                    decoder.update(piece)
                else:
                    assert decoder.finish()[1] == expected
                decoder.close()
        except BaseException as exc:  # surfaced below, in the test's thread
            failures.append(exc)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert failures == []
    wait_for_hasher_threads(0)
