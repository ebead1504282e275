"""A streaming tar reader for untrusted archives: linear, bounded, keeps nothing.

Load reads archives from any client, so their headers never reach the
interpreter's ``tarfile``: its PAX parser is quadratic on a long run of digits
(CVE-2024-6232), it reads a GNU long name of any size into memory, and it keeps a
``TarInfo`` per member. This reader parses ustar, GNU (long names, base-256
sizes) and PAX headers itself, each in one pass, with every size capped before
the bytes are read (docs/design.md §10): an extended header's data, a member's
path, and the number of members. It yields one :class:`TarMember` at a time;
its data is read through :meth:`TarReader.read` before the next one.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from imagestore import errors

BLOCK = 512
#: digits of a PAX record's length: 20 hold any size a 64-bit reader could use
_MAX_LENGTH_DIGITS = 20
#: extended headers ('x', 'g', 'L', 'K') in a row before a member: real archives use 1-2
_MAX_EXTENDED_IN_A_ROW = 8
_FILE_TYPES = (b"0", b"\x00", b"7")
_DEVICE_TYPES = (b"3", b"4", b"6")
_TRUNCATED = "unexpected end of data: the archive ends in the middle of a member"


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


@dataclass(frozen=True, slots=True)
class TarLimits:
    """Caps on what one archive may ask the reader to hold or do."""

    #: data of one PAX ('x', 'g') or GNU long-name ('L', 'K') header
    max_header_bytes: int = 1 << 20
    #: a member's path or link target, in bytes
    max_name_bytes: int = 4096
    #: members (files, directories, links) in the archive
    max_members: int = 50_000


class MemberKind(enum.Enum):
    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    DEVICE = "device"  # character or block device, FIFO
    OTHER = "other"  # types a reader may skip (GNU volume labels, sparse files, ...)


@dataclass(frozen=True, slots=True)
class TarMember:
    path: str  # as written in the archive (decoded as UTF-8, bad bytes replaced)
    kind: MemberKind
    size: int  # bytes of data that follow the header
    linkname: str  # the target of a link, else ""


def _malformed(message: str, member: str = "") -> errors.MalformedContent:
    return errors.MalformedContent(f"invalid archive: {message}", metadata={"member": member[:200]})


def _too_big(what: str, size: int, limit: int, member: str = "") -> errors.SizeLimitExceeded:
    return errors.SizeLimitExceeded(
        f"invalid archive: {what} is {size} bytes; the limit is {limit}",
        metadata={"member": member[:200], "size": str(size), "limit": str(limit)},
    )


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _field(block: bytes, start: int, end: int) -> bytes:
    """A NUL-terminated header field."""
    raw = block[start:end]
    nul = raw.find(b"\x00")
    return raw if nul < 0 else raw[:nul]


def _number(raw: bytes, what: str) -> int:
    """An octal header number, or GNU's base-256 form (first byte 0x80)."""
    if raw[:1] == b"\x80":
        return int.from_bytes(raw[1:], "big")
    if raw[:1] == b"\xff":
        raise _malformed(f"negative {what} in a header")
    digits = raw.replace(b"\x00", b" ").strip()
    if not digits:
        return 0
    if not all(48 <= byte <= 55 for byte in digits):  # 0-7
        raise _malformed(f"the {what} field of a header is not an octal number")
    return int(digits, 8)


def _checksum_ok(block: bytes) -> bool:
    """The header sum, unsigned as POSIX says or signed as some old tars wrote it."""
    stored = _number(block[148:156], "checksum")
    rest = block[:148] + block[156:]
    unsigned = sum(rest) + 8 * 32  # the checksum field counts as spaces
    if stored == unsigned:
        return True
    return stored == unsigned - 256 * sum(1 for byte in rest if byte >= 128)


def parse_pax_records(data: bytes, limits: TarLimits) -> dict[str, str]:
    """PAX records ``"<length> <key>=<value>\\n"``, in one linear pass.

    The length is read digit by digit with a bound, never by a regex (a long run
    of digits is what makes the interpreter's own parser quadratic).
    """
    records: dict[str, str] = {}
    position, end = 0, len(data)
    while position < end:
        if data[position] == 0:  # some writers pad the header's data with NULs
            break
        space = data.find(b" ", position, position + _MAX_LENGTH_DIGITS + 1)
        digits = data[position:space] if space > position else b""
        if not digits or not digits.isdigit():
            raise _malformed("a PAX record does not start with its length")
        length = int(digits)
        record_end = position + length
        if length <= len(digits) + 1 or record_end > end or data[record_end - 1] != 0x0A:
            raise _malformed("a PAX record's length does not match its content")
        key, sep, value = data[space + 1 : record_end - 1].partition(b"=")
        if not sep or not key:
            raise _malformed("a PAX record has no key=value")
        if key in (b"path", b"linkpath") and len(value) > limits.max_name_bytes:
            raise _too_big(f"a PAX {key.decode()}", len(value), limits.max_name_bytes)
        records[_text(key)] = _text(value)
        position = record_end
    return records


class TarReader:
    """Members of a tar stream, one at a time, within :class:`TarLimits`."""

    def __init__(self, source: Readable, limits: TarLimits | None = None) -> None:
        self._source = source
        self.limits = limits or TarLimits()
        self._remaining = 0  # data bytes of the current member not read yet
        self._padding = 0  # zero bytes after them, up to the next block
        self._current = ""
        self.members = 0
        #: a header passed its checksum: from then on the bytes are a tar, if a damaged one
        self._seen_header = False

    # ---- reading the stream -----------------------------------------------

    def _read_exact(self, size: int) -> bytes:
        data = self._source.read(size)
        if len(data) == size:
            return data
        pieces = [data]
        got = len(data)
        while got < size:
            piece = self._source.read(size - got)
            if not piece:
                raise _malformed(_TRUNCATED, self._current)
            pieces.append(piece)
            got += len(piece)
        return b"".join(pieces)

    def _skip(self, size: int) -> None:
        while size > 0:
            size -= len(self._read_exact(min(size, 1 << 20)))

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the current member's data; ``b""`` at its end."""
        size = min(size, self._remaining)
        if size <= 0:
            return b""
        data = self._source.read(size)
        if not data:
            raise _malformed(_TRUNCATED, self._current)
        self._remaining -= len(data)
        return data

    def _finish_member(self) -> None:
        self._skip(self._remaining + self._padding)
        self._remaining = self._padding = 0

    def _data(self, size: int) -> None:
        self._remaining = size
        self._padding = -size % BLOCK

    # ---- headers --------------------------------------------------------------

    def _header(self) -> bytes | None:
        """The next header block; None at the end of the archive."""
        block = self._source.read(BLOCK)
        if not block:
            return None  # no end-of-archive blocks: tolerated, as tar does
        first = not self._seen_header  # bytes that are no tar at all say so
        if len(block) < BLOCK:
            try:
                block += self._read_exact(BLOCK - len(block))
            except errors.MalformedContent:
                if first:
                    raise _malformed("not a tar archive (shorter than one tar header)") from None
                raise
        if block.count(0) == BLOCK:
            return None
        try:
            valid = _checksum_ok(block)
        except errors.MalformedContent:
            valid = False
        if not valid and first:
            raise _malformed("not a tar archive (its first header's checksum is wrong)")
        if not valid:
            raise _malformed("not a readable tar (a header's checksum is wrong)", self._current)
        self._seen_header = True
        return block

    def _extended(self, size: int, what: str, limit: int) -> bytes:
        """An extended header's data (capped before it is read), padding skipped."""
        if size > limit:
            raise _too_big(what, size, limit, self._current)
        data = self._read_exact(size)
        self._skip(-size % BLOCK)
        return data

    def __iter__(self) -> Iterator[TarMember]:
        limits = self.limits
        while True:
            self._finish_member()
            pax: dict[str, str] = {}
            long_name: bytes | None = None
            long_link: bytes | None = None
            for _ in range(_MAX_EXTENDED_IN_A_ROW + 1):
                block = self._header()
                if block is None:
                    return
                kind = block[156:157]
                size = _number(block[124:136], "size")
                if kind in (b"x", b"g"):
                    data = self._extended(size, "a PAX header", limits.max_header_bytes)
                    if kind == b"x":
                        pax.update(parse_pax_records(data, limits))
                    else:
                        parse_pax_records(data, limits)  # validated, then ignored
                elif kind in (b"L", b"K"):
                    data = self._extended(size, "a GNU long name", limits.max_name_bytes + 1)
                    name = data.split(b"\x00", 1)[0]
                    if kind == b"L":
                        long_name = name
                    else:
                        long_link = name
                else:
                    break
            else:
                raise _malformed("too many extended headers in a row")
            yield self._member(block, size, pax, long_name, long_link)

    def _member(
        self,
        block: bytes,
        size: int,
        pax: dict[str, str],
        long_name: bytes | None,
        long_link: bytes | None,
    ) -> TarMember:
        self.members += 1
        if self.members > self.limits.max_members:
            raise errors.SizeLimitExceeded(
                f"invalid archive: more than {self.limits.max_members} members",
                metadata={"limit": str(self.limits.max_members)},
            )
        name = _field(block, 0, 100)
        prefix = _field(block, 345, 500) if block[257:263] == b"ustar\x00" else b""
        path = pax.get("path") or _text(long_name if long_name is not None else name)
        if "path" not in pax and long_name is None and prefix:
            path = _text(prefix) + "/" + path
        linkname = pax.get("linkpath") or _text(
            long_link if long_link is not None else _field(block, 157, 257)
        )
        self._current = path
        if len(path.encode()) > self.limits.max_name_bytes:
            raise _too_big("a member's path", len(path.encode()), self.limits.max_name_bytes)
        if "size" in pax:
            if not pax["size"].isdigit():
                raise _malformed("a PAX size is not a number", path)
            size = int(pax["size"])
        kind = _kind(block[156:157])
        if kind not in (MemberKind.FILE, MemberKind.OTHER):
            size = 0  # header-only types: their size field means nothing
        self._data(size)
        return TarMember(path, kind, size, linkname)


def _kind(flag: bytes) -> MemberKind:
    if flag in _FILE_TYPES:
        return MemberKind.FILE
    if flag == b"5":
        return MemberKind.DIRECTORY
    if flag == b"2":
        return MemberKind.SYMLINK
    if flag == b"1":
        return MemberKind.HARDLINK
    if flag in _DEVICE_TYPES:
        return MemberKind.DEVICE
    return MemberKind.OTHER
