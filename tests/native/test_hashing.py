"""The native hasher against the stdlib oracle (hashlib + zlib/gzip).

This whole module also runs under ASan + UBSan (``make sanitize``) and against
the zlib build of the extension, so it must not depend on which backend it gets.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import os
import subprocess
import tarfile
import threading
import time
import zlib
from collections.abc import Iterator

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagestore import errors, hashing

EMPTY_SHA256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
# `printf 'hello\n' | gzip -n`
HELLO_GZ = bytes.fromhex("1f8b0800000000000003cb48cdc9c9e7020020303a3606000000")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chunks(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    """Split data at the given (unsorted, possibly repeated) offsets."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in itertools.pairwise(points):
        yield data[start:end]


def decode(
    data: bytes, cuts: list[int] | None = None, max_uncompressed_size: int = 0
) -> hashing.LayerDigests:
    with hashing.Decoder(max_uncompressed_size) as decoder:
        for piece in chunks(data, cuts or []):
            assert decoder.update(piece) == b""
        tail, digests = decoder.finish()
        assert tail == b""
        return digests


def decode_with_output(data: bytes, cuts: list[int]) -> tuple[bytes, hashing.LayerDigests]:
    with hashing.Decoder(keep_output=True) as decoder:
        out = b"".join(decoder.update(piece) for piece in chunks(data, cuts))
        tail, digests = decoder.finish()
        return out + tail, digests


def encode(data: bytes, cuts: list[int] | None = None) -> tuple[bytes, hashing.LayerDigests]:
    with hashing.Encoder() as encoder:
        out = b"".join(encoder.update(piece) for piece in chunks(data, cuts or []))
        tail, digests = encoder.finish()
        return out + tail, digests


def gzip_of_zeros(size: int) -> bytes:
    """A gzip bomb: `size` zero bytes, compressed in pieces to keep memory low."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    piece = b"\x00" * (8 << 20)
    out = [compressor.compress(piece[: size - done]) for done in range(0, size, len(piece))]
    return b"".join(out) + compressor.flush()


def a_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def test_backend_is_one_of_the_two_builds() -> None:
    assert hashing.backend() in ("isa-l", "zlib")
    expected = os.environ.get("IMAGESTORE_EXPECT_BACKEND")
    if expected:
        assert hashing.backend() == expected


# ---- SHA-256 --------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "hexdigest"),
    [
        (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        (
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        ),
        (b"a" * 1_000_000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
    ],
)
def test_sha256_matches_the_fips_180_vectors(data: bytes, hexdigest: str) -> None:
    with hashing.Sha256() as hasher:
        hasher.update(data)
        assert hasher.finish() == ("sha256:" + hexdigest, len(data))
    assert hashing.sha256_digest(data) == "sha256:" + hexdigest


@given(data=st.binary(max_size=20_000), cuts=st.lists(st.integers(min_value=0), max_size=12))
def test_sha256_of_any_chunking_equals_hashlib_of_the_whole(data: bytes, cuts: list[int]) -> None:
    with hashing.Sha256() as hasher:
        for piece in chunks(data, cuts):
            hasher.update(piece)
        assert hasher.finish() == (sha(data), len(data))


def test_sha256_accepts_bytearray_and_memoryview_without_copying() -> None:
    data = bytearray(os.urandom(4096))
    with hashing.Sha256() as hasher:
        hasher.update(memoryview(data)[:1000])
        hasher.update(data[1000:])
        assert hasher.finish()[0] == sha(bytes(data))


# ---- decoder --------------------------------------------------------------


def test_decoder_reads_a_known_gzip_stream() -> None:
    digests = decode(HELLO_GZ)
    assert digests == hashing.LayerDigests(
        digest=sha(HELLO_GZ),
        size=len(HELLO_GZ),
        diff_id=sha(b"hello\n"),
        uncompressed_size=6,
        compression="gzip",
    )


@given(
    data=st.binary(max_size=50_000),
    level=st.integers(min_value=0, max_value=9),
    cuts=st.lists(st.integers(min_value=0), max_size=12),
)
def test_decoder_of_any_chunking_matches_zlib_and_hashlib(
    data: bytes, level: int, cuts: list[int]
) -> None:
    compressed = gzip.compress(data, compresslevel=level, mtime=0)
    out, digests = decode_with_output(compressed, cuts)
    assert out == data
    assert digests.digest == sha(compressed)
    assert digests.size == len(compressed)
    assert digests.diff_id == sha(data)
    assert digests.uncompressed_size == len(data)
    assert digests.compression == "gzip"
    assert decode(compressed, cuts) == digests  # digest-only mode agrees


@given(
    members=st.lists(st.binary(max_size=5_000), min_size=2, max_size=5),
    cuts=st.lists(st.integers(min_value=0), max_size=12),
)
def test_decoder_joins_multi_member_gzip(members: list[bytes], cuts: list[int]) -> None:
    compressed = b"".join(gzip.compress(m, mtime=0) for m in members)
    out, digests = decode_with_output(compressed, cuts)
    assert out == b"".join(members)
    assert digests.diff_id == sha(out)
    assert digests.digest == sha(compressed)


@given(cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_decoder_passes_a_plain_tar_through_with_equal_digests(cuts: list[int]) -> None:
    tar = a_tar({"etc/hostname": b"box\n", "bin/tool": os.urandom(3000)})
    out, digests = decode_with_output(tar, cuts)
    assert out == tar
    assert digests == hashing.LayerDigests(sha(tar), len(tar), sha(tar), len(tar), "none")


@pytest.mark.parametrize("data", [b"\x1f", b"\x1f\x00", b"\x28\xb5\x2f", b"x", b"\x1f\x8a\x08\x00"])
def test_decoder_treats_short_or_near_magic_input_as_plain(data: bytes) -> None:
    out, digests = decode_with_output(data, [])
    assert out == data
    assert digests.compression == "none"
    assert digests.diff_id == digests.digest == sha(data)


def test_decoder_of_empty_input_gives_empty_digests() -> None:
    assert decode(b"") == hashing.LayerDigests(EMPTY_SHA256, 0, EMPTY_SHA256, 0, "none")


def test_decoder_refuses_zstd_clearly() -> None:
    with pytest.raises(errors.UnsupportedCompression, match="zstd"):
        decode(bytes.fromhex("28b52ffd") + b"\x00" * 20)


def test_decoder_reports_corrupt_deflate_data() -> None:
    compressed = bytearray(gzip.compress(b"hello world " * 1000, mtime=0))
    compressed[12] ^= 0xFF  # inside the first deflate block's header
    with pytest.raises(errors.CorruptCompressedData, match="corrupt gzip data in member 1"):
        decode(bytes(compressed))


def test_decoder_reports_a_bad_gzip_header() -> None:
    bad_method = HELLO_GZ[:2] + b"\x07" + HELLO_GZ[3:]
    with pytest.raises(errors.CorruptCompressedData):
        decode(bad_method)


@pytest.mark.parametrize("offset", [-8, -5, -4, -1], ids=["crc", "crc-high", "isize", "isize-high"])
def test_decoder_checks_the_gzip_trailer(offset: int) -> None:
    compressed = bytearray(gzip.compress(os.urandom(2000), mtime=0))
    compressed[offset] ^= 0x01
    with pytest.raises(errors.CorruptCompressedData):
        decode(bytes(compressed))


def test_decoder_reports_truncation_at_every_cut_point() -> None:
    compressed = gzip.compress(b"some layer content\n" * 50, mtime=0)
    for cut in range(2, len(compressed)):
        with pytest.raises(errors.CorruptCompressedData) as failure:
            decode(compressed[:cut])
        # Cut inside the stream: only "truncated" or (mid-block) "corrupt" are acceptable.
        assert isinstance(failure.value, errors.TruncatedCompressedData) or "member 1" in str(
            failure.value
        )
    with pytest.raises(errors.TruncatedCompressedData, match="ends inside member 1"):
        decode(compressed[:-1])


@pytest.mark.parametrize(
    ("tail", "error"),
    [
        (b"garbage", errors.TrailingData),
        (b"\x00" * 512, errors.TrailingData),
        (b"\x1f", errors.TrailingData),
        (b"\x1f\x00", errors.TrailingData),
        (b"\x1f\x8b", errors.TruncatedCompressedData),
    ],
)
def test_decoder_refuses_trailing_bytes_after_the_last_member(
    tail: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        decode(HELLO_GZ + tail)


def test_trailing_garbage_message_names_the_offset() -> None:
    with pytest.raises(errors.TrailingData, match=f"offset {len(HELLO_GZ)} "):
        decode(HELLO_GZ + b"JUNK", cuts=[3, len(HELLO_GZ) + 1])


@given(noise=st.binary(min_size=1, max_size=2000))
def test_decoder_never_crashes_on_noise_after_a_gzip_magic(noise: bytes) -> None:
    data = b"\x1f\x8b" + noise
    try:
        digests = decode(data)
    except errors.CorruptCompressedData:
        return  # refused with a typed error: what we want from noise
    assert digests.digest == sha(data)  # by chance valid gzip: then counted right
    assert digests.compression == "gzip"


def test_decoder_limit_stops_a_gzip_bomb() -> None:
    bomb = gzip_of_zeros(64 << 20)
    assert len(bomb) < 100_000
    with pytest.raises(errors.SizeLimitExceeded, match="limit of 1048576 bytes"):
        decode(bomb, max_uncompressed_size=1 << 20)
    assert decode(bomb, max_uncompressed_size=64 << 20).uncompressed_size == 64 << 20


def test_decoder_sizes_report_progress() -> None:
    with hashing.Decoder() as decoder:
        decoder.update(HELLO_GZ[:15])
        assert decoder.sizes[0] == 15
        decoder.update(HELLO_GZ[15:])
        assert decoder.sizes == (len(HELLO_GZ), 6)


# ---- encoder --------------------------------------------------------------


@given(data=st.binary(max_size=50_000), cuts=st.lists(st.integers(min_value=0), max_size=12))
def test_encoder_round_trips_through_gzip_and_reports_both_digests(
    data: bytes, cuts: list[int]
) -> None:
    compressed, digests = encode(data, cuts)
    assert gzip.decompress(compressed) == data
    assert zlib.decompress(compressed, wbits=31) == data
    assert digests == hashing.LayerDigests(
        sha(compressed), len(compressed), sha(data), len(data), "gzip"
    )
    assert decode(compressed) == digests


def test_encoder_writes_a_standard_gzip_header_with_mtime_zero() -> None:
    compressed, _ = encode(b"layer bytes\n" * 100)
    assert compressed[:3] == b"\x1f\x8b\x08"
    assert compressed[4:8] == b"\x00\x00\x00\x00"


def test_encoder_output_is_read_by_the_gzip_command() -> None:
    data = a_tar({"a": os.urandom(10_000), "b": b"text\n" * 2000})
    compressed, _ = encode(data)
    result = subprocess.run(["gzip", "-dc"], input=compressed, capture_output=True, check=True)
    assert result.stdout == data


def test_encoder_of_empty_input_is_a_valid_empty_gzip() -> None:
    compressed, digests = encode(b"")
    assert gzip.decompress(compressed) == b""
    assert digests.diff_id == EMPTY_SHA256
    assert digests.uncompressed_size == 0


def test_encoder_compresses_text_like_zlib_level_1() -> None:
    data = b"".join(b"line %d of a config file\n" % i for i in range(20_000))
    compressed, _ = encode(data)
    reference = len(gzip.compress(data, compresslevel=1, mtime=0))
    assert len(compressed) < len(data) / 3
    assert len(compressed) < reference * 1.5


def test_encoder_refuses_a_level_out_of_range() -> None:
    with pytest.raises(ValueError, match="level 42"):
        hashing.Encoder(level=42)


# ---- handle misuse --------------------------------------------------------


def test_update_after_finish_is_refused() -> None:
    with hashing.Decoder() as decoder:
        decoder.update(HELLO_GZ)
        assert decoder.finish()[1].diff_id == sha(b"hello\n")
        with pytest.raises(ValueError, match="after finish"):
            decoder.update(b"more")
        with pytest.raises(ValueError, match="twice"):
            decoder.finish()
    with hashing.Encoder() as encoder:
        encoder.finish()
        with pytest.raises(ValueError, match="finished"):
            encoder.update(b"more")
    with hashing.Sha256() as hasher:
        hasher.finish()
        with pytest.raises(ValueError, match="after finish"):
            hasher.update(b"more")


def test_a_failed_decoder_keeps_failing() -> None:
    with hashing.Decoder() as decoder:
        with pytest.raises(errors.TrailingData):
            decoder.update(HELLO_GZ + b"junk")
        with pytest.raises(errors.TrailingData):
            decoder.update(b"more")
        with pytest.raises(errors.TrailingData):
            decoder.finish()


@pytest.mark.parametrize("make", [hashing.Decoder, hashing.Encoder, hashing.Sha256])
def test_use_after_close_is_refused(make: type[hashing.Sha256]) -> None:
    handle = make()
    handle.close()
    handle.close()  # closing twice is harmless
    with pytest.raises(ValueError, match="closed"):
        handle.update(b"x")


def test_concurrent_use_of_one_handle_is_refused() -> None:
    bomb = gzip_of_zeros(512 << 20)
    decoder = hashing.Decoder()
    worker = threading.Thread(target=decoder.update, args=(bomb,))
    worker.start()
    deadline = time.monotonic() + 30
    while not decoder._lock.locked() and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0)  # yield to the worker until its C call holds the handle
    assert decoder._lock.locked(), "the worker never entered update()"
    with pytest.raises(RuntimeError, match="in use by another thread"):
        decoder.update(b"")
    worker.join()
    assert decoder.finish()[1].uncompressed_size == 512 << 20


def test_two_threads_with_two_handles_give_correct_results() -> None:
    inputs = [os.urandom(1 << 20) * 8, b"0123456789abcdef" * (1 << 19)]
    compressed = [gzip.compress(data, compresslevel=1, mtime=0) for data in inputs]
    results: dict[int, hashing.LayerDigests] = {}

    def work(index: int) -> None:
        with hashing.Decoder() as decoder:
            for piece in chunks(compressed[index], list(range(0, len(compressed[index]), 65536))):
                decoder.update(piece)
            results[index] = decoder.finish()[1]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, data in enumerate(inputs):
        assert results[index].diff_id == sha(data)
        assert results[index].digest == sha(compressed[index])


# ---- large streams --------------------------------------------------------


@pytest.mark.slow
def test_a_stream_over_4_gib_is_counted_in_64_bits() -> None:
    chunk = b"\x00" * (8 << 20)
    count = 576  # 4.5 GiB: past 2**32 in both the counters and gzip's ISIZE field
    expected = hashlib.sha256()
    compressed = hashlib.sha256()
    compressed_size = 0
    with hashing.Encoder() as encoder, hashing.Decoder() as decoder:
        for _ in range(count):
            expected.update(chunk)
            out = encoder.update(chunk)
            compressed.update(out)
            compressed_size += len(out)
            decoder.update(out)
        tail, encoded = encoder.finish()
        compressed.update(tail)
        decoder.update(tail)
        decoded = decoder.finish()[1]
    total = count * len(chunk)
    assert total > 1 << 32
    assert encoded.uncompressed_size == decoded.uncompressed_size == total
    assert encoded.diff_id == decoded.diff_id == "sha256:" + expected.hexdigest()
    assert encoded.size == decoded.size == compressed_size + len(tail)
    assert encoded.digest == decoded.digest == "sha256:" + compressed.hexdigest()


@pytest.mark.slow
def test_memory_stays_flat_while_streaming_1_gib() -> None:
    block = os.urandom(1 << 20)
    process = psutil.Process()

    def stream(mebibytes: int) -> int:
        """Stream through an encoder and a decoder; return the peak RSS seen."""
        peak = 0
        with hashing.Encoder() as encoder, hashing.Decoder(keep_output=True) as decoder:
            for i in range(mebibytes):
                piece = block[i % 7 :] + block[: i % 7]  # vary the data a little
                assert len(decoder.update(encoder.update(piece))) <= 2 << 20
                peak = max(peak, process.memory_info().rss)
            tail, _ = encoder.finish()
            decoder.update(tail)
            assert decoder.finish()[1].uncompressed_size == mebibytes << 20
        return peak

    stream(64)  # warm-up: allocator pools, buffers
    baseline = process.memory_info().rss
    grown = stream(1024) - baseline
    assert grown < 16 << 20, f"RSS grew by {grown >> 20} MiB while streaming 1 GiB"
