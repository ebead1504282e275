"""Typed face of the native extension: streaming SHA-256 fused with gzip.

Every byte that enters or leaves the store passes through one of these:

- :class:`Sha256` hashes a stream (manifests, configs, compressed blobs).
- :class:`Decoder` is fed a layer as stored (gzip, multi-member gzip or plain
  tar) and yields both digests: the blob digest of what it was fed and the
  diff_id of what that inflates to. In digest-only mode (the default) the
  inflated bytes are dropped inside C. It can write what it is fed to a file
  as well, on the thread that hashes it (:meth:`Decoder.write_to`).
- :class:`Encoder` gzip-compresses an uncompressed layer and yields both digests.

The C work runs with the GIL released (cffi does this for every call), so two
threads with two handles run in parallel. A handle refuses concurrent use.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Self

from imagestore import errors
from imagestore._native import ffi, lib

#: gzip level for layers the store compresses (docs/design.md §5: level 1 on both backends).
DEFAULT_LEVEL = 1
# Output buffer per handle that returns bytes; bounded so memory stays flat.
_OUT_CHUNK = 1 << 20

Compression = Literal["gzip", "none"]
#: how many threads a digest-only Decoder uses: a hasher thread once the layer
#: is large ("auto"), never ("one"), or from the first byte ("two": tests, benches)
Threads = Literal["auto", "one", "two"]
_THREAD_MODES: dict[str, int] = {
    "auto": lib.ISN_THREADS_AUTO,
    "one": lib.ISN_THREADS_ONE,
    "two": lib.ISN_THREADS_TWO,
}

_STATUS_ERRORS: dict[int, type[Exception]] = {
    lib.ISN_ERR_NOMEM: MemoryError,
    lib.ISN_ERR_CORRUPT: errors.CorruptCompressedData,
    lib.ISN_ERR_TRUNCATED: errors.TruncatedCompressedData,
    lib.ISN_ERR_TRAILING: errors.TrailingData,
    lib.ISN_ERR_LIMIT: errors.SizeLimitExceeded,
    lib.ISN_ERR_UNSUPPORTED: errors.UnsupportedCompression,
    lib.ISN_ERR_STATE: ValueError,
    lib.ISN_ERR_ARGUMENT: ValueError,
    lib.ISN_ERR_INTERNAL: RuntimeError,
}


def backend() -> str:
    """The gzip library the extension was built with: ``"isa-l"`` or ``"zlib"``."""
    return str(ffi.string(lib.isn_gzip_backend()).decode())


@dataclass(frozen=True, slots=True)
class LayerDigests:
    """Both sides of a layer: as stored (compressed) and as unpacked (the tar)."""

    digest: str  #: ``sha256:<hex>`` of the stored bytes (the blob digest)
    size: int  #: stored size in bytes
    diff_id: str  #: ``sha256:<hex>`` of the uncompressed bytes
    uncompressed_size: int
    compression: Compression  #: what the stored bytes turned out to be


def _digest(raw: Any) -> str:
    return "sha256:" + bytes(ffi.buffer(raw, 32)).hex()


def _raise_for(status: int, message: str) -> None:
    if status != lib.ISN_OK:
        error = _STATUS_ERRORS.get(status, RuntimeError)
        raise error(message)


class _Handle:
    """Owns one C handle: freed by ``close()``, a ``with`` block, or GC."""

    _kind = "handle"

    def __init__(self, handle: Any) -> None:
        self._handle: Any = handle
        self._lock = threading.Lock()

    def close(self) -> None:
        """Free the C handle (and its output buffer) now; later calls raise ValueError."""
        with self._lock:
            if self._handle is not None:
                ffi.release(self._handle)
                self._handle = None
            # the megabyte output buffer goes now too, not whenever the GC
            # breaks the cycle an exception's traceback made around this object
            out = getattr(self, "_out", ffi.NULL)
            if out != ffi.NULL:
                ffi.release(out)
                self._out = ffi.NULL

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _using(self) -> Iterator[Any]:
        # Refuse (never wait for) a second thread: sharing a streaming handle
        # is always a bug, and the C side is not thread-safe.
        if not self._lock.acquire(blocking=False):
            raise RuntimeError(f"{self._kind} is in use by another thread")
        try:
            if self._handle is None:
                raise ValueError(f"{self._kind} is closed")
            yield self._handle
        finally:
            self._lock.release()


class Sha256(_Handle):
    """Streaming SHA-256 through OpenSSL (uses the CPU's SHA instructions)."""

    _kind = "sha256 hasher"

    def __init__(self) -> None:
        out = ffi.new("isn_sha256 **")
        _raise_for(lib.isn_sha256_new(out), "cannot create a SHA-256 hasher")
        super().__init__(ffi.gc(out[0], lib.isn_sha256_free))
        self._finished = False

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Hash more bytes."""
        with self._using() as handle:
            if self._finished:
                raise ValueError("update after finish")
            src = ffi.from_buffer("unsigned char[]", data)
            _raise_for(lib.isn_sha256_update(handle, src, len(src)), "SHA-256 update failed")

    def finish(self) -> tuple[str, int]:
        """Return ``("sha256:<hex>", size)`` of everything hashed."""
        with self._using() as handle:
            if self._finished:
                raise ValueError("finish called twice")
            self._finished = True
            raw = ffi.new("unsigned char[32]")
            size = ffi.new("uint64_t *")
            _raise_for(lib.isn_sha256_finish(handle, raw, size), "SHA-256 final failed")
            return _digest(raw), int(size[0])


def sha256_digest(data: bytes | bytearray | memoryview) -> str:
    """``sha256:<hex>`` of a buffer held in memory (manifests, configs)."""
    with Sha256() as hasher:
        hasher.update(data)
        return hasher.finish()[0]


class Decoder(_Handle):
    """Streams a stored layer in; computes its digest and its diff_id.

    ``max_uncompressed_size`` (0 = no limit) makes a gzip bomb fail with
    :class:`~imagestore.errors.SizeLimitExceeded` instead of filling the disk.
    With ``keep_output`` the inflated bytes are returned by :meth:`update`;
    otherwise they are hashed and dropped in C (digest-only mode), where
    ``threads`` says whether a hasher thread may share the work; the results
    are the same either way.
    """

    _kind = "decoder"

    def __init__(
        self,
        max_uncompressed_size: int = 0,
        *,
        keep_output: bool = False,
        threads: Threads = "auto",
    ) -> None:
        if max_uncompressed_size < 0:
            raise ValueError("max_uncompressed_size must be >= 0")
        if threads not in _THREAD_MODES:
            raise ValueError(f"threads must be one of {sorted(_THREAD_MODES)}, not {threads!r}")
        out = ffi.new("isn_decoder **")
        _raise_for(lib.isn_decoder_new(out, max_uncompressed_size), "cannot create a decoder")
        # freeing the handle joins its hasher thread, if one runs
        super().__init__(ffi.gc(out[0], lib.isn_decoder_free))
        _raise_for(
            lib.isn_decoder_set_threads(self._handle, _THREAD_MODES[threads]),
            "cannot set the decoder's threads",
        )
        self._out = ffi.new("unsigned char[]", _OUT_CHUNK) if keep_output else ffi.NULL
        self._out_cap = _OUT_CHUNK if keep_output else 0
        self._used = ffi.new("size_t *")
        self._out_len = ffi.new("size_t *")

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        """Feed stored bytes; returns inflated bytes (``b""`` in digest-only mode)."""
        with self._using() as handle:
            src = ffi.from_buffer("unsigned char[]", data)
            total, pos = len(src), 0
            pieces: list[bytes] = []
            while True:
                status = lib.isn_decoder_update(
                    handle, src + pos, total - pos, self._used, self._out, self._out_cap,
                    self._out_len,
                )  # fmt: skip
                self._check(handle, status)
                pos += self._used[0]
                produced = self._out_len[0]
                if produced:
                    pieces.append(ffi.buffer(self._out, produced)[:])
                if self._out_cap == 0 or (pos == total and produced < self._out_cap):
                    return b"".join(pieces)

    def write_to(self, fd: int | None) -> None:
        """From the next :meth:`update` on, also write every byte fed to ``fd``
        (None: to nowhere), before it returns. The write is part of the hashing:
        with a hasher thread it runs there, off the inflating thread. A failed
        write raises OSError from :meth:`update`, and the decoder is done."""
        with self._using() as handle:
            _raise_for(lib.isn_decoder_set_sink(handle, -1 if fd is None else fd), "bad sink")

    @property
    def threads_used(self) -> int:
        """2 once the decoder's hasher thread has run in this stream, else 1."""
        with self._using() as handle:
            return int(lib.isn_decoder_threads(handle))

    @property
    def sizes(self) -> tuple[int, int]:
        """(bytes fed, bytes inflated) so far, for progress reporting."""
        with self._using() as handle:
            fed = ffi.new("uint64_t *")
            inflated = ffi.new("uint64_t *")
            lib.isn_decoder_sizes(handle, fed, inflated)
            return int(fed[0]), int(inflated[0])

    def finish(self) -> tuple[bytes, LayerDigests]:
        """End of input: raises if the stream is truncated.

        Returns the last inflated bytes (``b""`` in digest-only mode) and both digests.
        """
        with self._using() as handle:
            result = ffi.new("struct isn_result *")
            status = lib.isn_decoder_finish(handle, self._out, self._out_cap, self._out_len, result)
            self._check(handle, status)
            tail = ffi.buffer(self._out, self._out_len[0])[:] if self._out_cap else b""
            return tail, LayerDigests(
                digest=_digest(result.in_sha256),
                size=int(result.in_size),
                diff_id=_digest(result.out_sha256),
                uncompressed_size=int(result.out_size),
                compression="gzip" if result.format == lib.ISN_FORMAT_GZIP else "none",
            )

    @staticmethod
    def _message(handle: Any) -> str:
        return str(ffi.string(lib.isn_decoder_message(handle)).decode("utf-8", "replace"))

    @classmethod
    def _check(cls, handle: Any, status: int) -> None:
        if status == lib.ISN_ERR_IO:  # the sink's write: the OS's error, as os.write raises it
            code = int(lib.isn_decoder_os_error(handle))
            raise OSError(code, os.strerror(code))
        _raise_for(status, cls._message(handle))


class Encoder(_Handle):
    """gzip-compresses an uncompressed layer; computes its diff_id and digest."""

    _kind = "encoder"

    def __init__(self, level: int = DEFAULT_LEVEL) -> None:
        out = ffi.new("isn_encoder **")
        _raise_for(lib.isn_encoder_new(out, level), f"cannot create an encoder at level {level}")
        super().__init__(ffi.gc(out[0], lib.isn_encoder_free))
        self._out = ffi.new("unsigned char[]", _OUT_CHUNK)
        self._used = ffi.new("size_t *")
        self._out_len = ffi.new("size_t *")

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        """Feed uncompressed bytes; returns the gzip bytes produced so far."""
        with self._using() as handle:
            src = ffi.from_buffer("unsigned char[]", data)
            total, pos = len(src), 0
            pieces: list[bytes] = []
            while pos < total:
                status = lib.isn_encoder_update(
                    handle, src + pos, total - pos, self._used, self._out, _OUT_CHUNK,
                    self._out_len,
                )  # fmt: skip
                _raise_for(status, self._message(handle))
                pos += self._used[0]
                if self._out_len[0]:
                    pieces.append(ffi.buffer(self._out, self._out_len[0])[:])
            return b"".join(pieces)

    def finish(self) -> tuple[bytes, LayerDigests]:
        """Flush the gzip trailer; returns the last bytes and both digests."""
        with self._using() as handle:
            done = ffi.new("int *")
            result = ffi.new("struct isn_result *")
            pieces: list[bytes] = []
            while not done[0]:
                status = lib.isn_encoder_finish(
                    handle, self._out, _OUT_CHUNK, self._out_len, done, result
                )
                _raise_for(status, self._message(handle))
                pieces.append(ffi.buffer(self._out, self._out_len[0])[:])
            return b"".join(pieces), LayerDigests(
                digest=_digest(result.out_sha256),
                size=int(result.out_size),
                diff_id=_digest(result.in_sha256),
                uncompressed_size=int(result.in_size),
                compression="gzip",
            )

    @staticmethod
    def _message(handle: Any) -> str:
        return str(ffi.string(lib.isn_encoder_message(handle)).decode("utf-8", "replace"))
