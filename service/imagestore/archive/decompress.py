"""The outer compression of a Load archive (gzip, bzip2, xz, or none), bounded.

``docker load`` takes a tar that may be compressed as a whole. A compressed
archive may expand to at most ``max_bytes`` (a few KiB of gzip can claim
terabytes), and no single step produces more than about a megabyte, so a bomb
costs neither memory nor, past the cap, disk (docs/design.md §10). gzip goes
through the native decoder like every other byte; bzip2 and xz through the
standard library, which also releases the GIL while it works. An uncompressed
archive is passed through: its sender pays for every byte.
"""

from __future__ import annotations

import bz2
import io
import lzma
from typing import Protocol

from imagestore import errors, hashing

GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: compressed bytes per step: deflate expands at most ~1032x, so a gzip step
#: yields at most ~4 MiB; bzip2 and xz take an output bound directly
_GZIP_STEP = 4 << 10
_OUTPUT_STEP = 1 << 20
_READ_STEP = 64 << 10
#: an xz stream may ask for a dictionary this large at most (xz -9 uses 64 MiB)
XZ_MEMORY_LIMIT = 128 << 20


class Peekable(Protocol):
    def read(self, size: int, /) -> bytes: ...
    def peek(self, size: int, /) -> bytes: ...
    def close(self) -> None: ...


class _Expanding(io.RawIOBase):
    """A read-only stream of what a decompressor makes of ``source``."""

    def __init__(self, source: Peekable, max_bytes: int, kind: str) -> None:
        self._source = source
        self._max_bytes = max_bytes
        self._kind = kind
        self._pending = memoryview(b"")
        self._produced = 0
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending and not self._ended:
            out = self._step()
            self._produced += len(out)
            if self._produced > self._max_bytes:
                raise errors.SizeLimitExceeded(
                    f"the {self._kind} archive expands to more than {self._max_bytes} bytes",
                    metadata={"limit": str(self._max_bytes)},
                )
            self._pending = memoryview(out)
        size = min(len(target), len(self._pending))
        target[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size

    def _step(self) -> bytes:
        raise NotImplementedError


class _Gzip(_Expanding):
    def __init__(self, source: Peekable, max_bytes: int) -> None:
        super().__init__(source, max_bytes, "gzip")
        # the decoder's own cap stops a bomb inside C, before the bytes exist
        self._decoder = hashing.Decoder(max_bytes + 1, keep_output=True)

    def _step(self) -> bytes:
        data = self._source.read(_GZIP_STEP)
        if data:
            return self._decoder.update(data)
        self._ended = True
        tail, _ = self._decoder.finish()
        self._decoder.close()
        return tail

    def close(self) -> None:
        self._decoder.close()
        super().close()


class _Library(_Expanding):
    """bzip2 or xz through a standard-library decompressor with an output bound."""

    def __init__(self, source: Peekable, max_bytes: int, kind: str) -> None:
        super().__init__(source, max_bytes, kind)
        self._decompressor: lzma.LZMADecompressor | bz2.BZ2Decompressor = (
            lzma.LZMADecompressor(memlimit=XZ_MEMORY_LIMIT)
            if kind == "xz"
            else bz2.BZ2Decompressor()
        )

    def _step(self) -> bytes:
        decompressor = self._decompressor
        if decompressor.eof:
            self._ended = True
            return b""
        data = b"" if not decompressor.needs_input else self._source.read(_READ_STEP)
        if decompressor.needs_input and not data:
            raise errors.TruncatedCompressedData(f"the {self._kind} archive is truncated")
        try:
            return decompressor.decompress(data, _OUTPUT_STEP)
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise errors.CorruptCompressedData(
                f"the {self._kind} archive is corrupt: {exc}"
            ) from None


def decompressed(source: Peekable, max_bytes: int) -> Peekable:
    """``source`` as an uncompressed tar stream, whatever its outer compression."""
    head = source.peek(len(XZ_MAGIC))[: len(XZ_MAGIC)]
    raw: _Expanding
    if head.startswith(GZIP_MAGIC):
        raw = _Gzip(source, max_bytes)
    elif head.startswith(XZ_MAGIC):
        raw = _Library(source, max_bytes, "xz")
    elif head.startswith(BZIP2_MAGIC):
        raw = _Library(source, max_bytes, "bzip2")
    elif head.startswith(ZSTD_MAGIC):
        raise errors.UnsupportedCompression(
            "zstd-compressed archives are not supported: decompress it first (zstd -d)"
        )
    else:
        return source
    return io.BufferedReader(raw, _OUTPUT_STEP)
