"""The bounded tar reader and the outer decompression of Load archives.

Archives written by the interpreter's tarfile (every format it writes) are the
oracle for what the reader must read; hand-made headers cover what no honest
writer makes. The guarantee that untrusted headers never reach ``tarfile`` is
checked with tarfile's header parsers made to fail.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import tarfile
from pathlib import Path
from typing import NoReturn

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imagestore import errors
from imagestore.archive.decompress import decompressed
from imagestore.archive.load import load
from imagestore.archive.tar import MemberKind, TarLimits, TarMember, TarReader, parse_pax_records
from imagestore.store.store import Store
from tests.archives import (
    ImageSpec,
    docker_archive,
    empty_members_archive,
    long_name_archive,
    pax_digits_archive,
    pax_record,
    tar_end,
    tar_header,
    tar_member,
    tar_of,
)

FORMATS = {"ustar": tarfile.USTAR_FORMAT, "gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT}


def read_all(data: bytes, limits: TarLimits | None = None) -> list[tuple[TarMember, bytes]]:
    reader = TarReader(io.BufferedReader(io.BytesIO(data)), limits)
    members = []
    for member in reader:
        pieces = []
        while piece := reader.read(1000):
            pieces.append(piece)
        members.append((member, b"".join(pieces)))
    return members


def written(entries: list[tuple[str, bytes]], fmt: int, **pax: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt, pax_headers=pax) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


names = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00/", exclude_categories=["Cs"]),
    min_size=1,
    max_size=40,
)
paths = st.lists(names, min_size=1, max_size=8).map("/".join)


@pytest.mark.parametrize("fmt", FORMATS)
@given(entries=st.lists(st.tuples(paths, st.binary(max_size=3000)), max_size=6))
def test_reads_what_tarfile_writes_in_each_format(
    fmt: str, entries: list[tuple[str, bytes]]
) -> None:
    if fmt == "ustar":  # ustar cannot hold long or non-ASCII names: tarfile refuses them
        entries = [(name, data) for name, data in entries if name.isascii() and len(name) < 100]
    members = read_all(written(entries, FORMATS[fmt]))
    assert [(m.path, m.kind, data) for m, data in members] == [
        (name, MemberKind.FILE, data) for name, data in entries
    ]


def test_directories_links_and_devices_are_told_apart() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, link in (
            ("dir", tarfile.DIRTYPE, ""),
            ("dir/sym", tarfile.SYMTYPE, "../target" + "x" * 200),
            ("dir/hard", tarfile.LNKTYPE, "dir/file"),
            ("dev", tarfile.CHRTYPE, ""),
            ("fifo", tarfile.FIFOTYPE, ""),
        ):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            tar.addfile(info)
    members = [(m.path, m.kind, m.linkname) for m, _ in read_all(buffer.getvalue())]
    assert members == [
        ("dir/", MemberKind.DIRECTORY, ""),  # tarfile writes a directory's name with a slash
        ("dir/sym", MemberKind.SYMLINK, "../target" + "x" * 200),
        ("dir/hard", MemberKind.HARDLINK, "dir/file"),
        ("dev", MemberKind.DEVICE, ""),
        ("fifo", MemberKind.DEVICE, ""),
    ]


def test_a_base256_size_is_read() -> None:
    header = bytearray(tar_header(b"big", 0))
    header[124:136] = b"\x80" + (5).to_bytes(11, "big")
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\x00 " % sum(header)
    members = read_all(bytes(header) + b"hello" + b"\x00" * 507 + tar_end())
    assert [(m.path, m.size, data) for m, data in members] == [("big", 5, b"hello")]


def test_pax_headers_with_64_kib_of_xattrs_are_real_content() -> None:
    xattrs = {f"SCHILY.xattr.user.k{i}": "v" * 1000 for i in range(64)}
    members = read_all(written([("etc/hosts", b"127.0.0.1\n")], tarfile.PAX_FORMAT, **xattrs))
    assert [(m.path, data) for m, data in members] == [("etc/hosts", b"127.0.0.1\n")]


def test_the_pax_digits_header_is_refused_by_the_reader_itself() -> None:
    with pytest.raises(errors.MalformedContent, match="does not start with its length"):
        parse_pax_records(b"1" * 200_000, TarLimits())
    with pytest.raises(errors.MalformedContent, match="does not start with its length"):
        read_all(pax_digits_archive())


@pytest.mark.parametrize(
    ("records", "message"),
    [
        (b"5 a=b", "length does not match"),  # no newline
        (b"99 path=x\n", "length does not match"),  # longer than the data
        (b"7 path\n", "no key=value"),
        (b" 5 a=\n", "does not start with its length"),
    ],
)
def test_malformed_pax_records_are_refused(records: bytes, message: str) -> None:
    with pytest.raises(errors.MalformedContent, match=message):
        parse_pax_records(records, TarLimits())


def test_pax_path_and_size_override_the_header() -> None:
    data = pax_record("path", b"a/" + b"n" * 300) + pax_record("size", b"3")
    archive = tar_member(b"././@PaxHeader", data, b"x") + tar_member(b"short", b"abc") + tar_end()
    assert [(m.path, d) for m, d in read_all(archive)] == [("a/" + "n" * 300, b"abc")]


def test_a_huge_gnu_long_name_is_refused_before_it_is_read() -> None:
    # Only 4 KiB of the 200 MiB the header claims are there: the reader must not wait for them.
    with pytest.raises(errors.SizeLimitExceeded, match="GNU long name"):
        read_all(long_name_archive(200 << 20))


def test_names_and_extended_headers_have_caps() -> None:
    long_path = pax_record("path", b"p" * 5000)
    with pytest.raises(errors.SizeLimitExceeded, match="PAX path"):
        read_all(tar_member(b"pax", long_path, b"x") + tar_member(b"f", b"") + tar_end())
    with pytest.raises(errors.SizeLimitExceeded, match="a PAX header is"):
        read_all(tar_member(b"pax", pax_record("comment", b"c" * 2000), b"x"), TarLimits(1024))
    with pytest.raises(errors.MalformedContent, match="too many extended headers"):
        read_all(tar_member(b"g", pax_record("comment", b"c"), b"g") * 9 + tar_end())


def test_members_beyond_the_cap_are_refused() -> None:
    assert len(read_all(empty_members_archive(100), TarLimits(max_members=100))) == 100
    with pytest.raises(errors.SizeLimitExceeded, match="more than 100 members"):
        read_all(empty_members_archive(101), TarLimits(max_members=100))


def pax_header_only() -> bytes:
    """A PAX extended header (a long name) and its data, without the member it
    describes: the tar's own first header is good, what follows is not."""
    info = tarfile.TarInfo("d/" + "long-name-" * 20)
    encoded = info.tobuf(format=tarfile.PAX_FORMAT)
    return encoded[: -tarfile.BLOCKSIZE]  # the member's own header dropped


@pytest.mark.parametrize(
    ("archive", "message"),
    [
        (b"not a tar" * 100, "not a tar archive (its first header's checksum is wrong)"),
        (b"version: 0.1\n", "not a tar archive (shorter than one tar header)"),
        (tar_member(b"f", b"x" * 2000)[:1500], "unexpected end of data"),
        (tar_header(b"f", 0)[:300], "not a tar archive (shorter than one tar header)"),
        (tar_member(b"f", b"x") + b"not a tar" * 100, "not a readable tar"),
        (pax_header_only() + b"not a tar" * 100, "not a readable tar"),
    ],
)
def test_damaged_archives_are_refused(archive: bytes, message: str) -> None:
    with pytest.raises(errors.MalformedContent, match=re.escape(message)):
        read_all(archive)


def test_an_archive_without_end_blocks_is_read_to_its_end() -> None:
    assert [m.path for m, _ in read_all(tar_member(b"a", b"1") + tar_member(b"b", b"2"))] == [
        "a",
        "b",
    ]


# ---- outer compression ------------------------------------------------------------


def expand(data: bytes, max_bytes: int) -> int:
    """Read a compressed archive through; the bytes it expanded to."""
    expanded = decompressed(io.BufferedReader(io.BytesIO(data)), max_bytes)
    total = 0
    while piece := expanded.read(1 << 16):
        total += len(piece)
    return total


@pytest.mark.parametrize(
    "compress",
    [lambda d: d, gzip.compress, bz2.compress, lzma.compress],
    ids=["plain", "gzip", "bzip2", "xz"],
)
def test_each_outer_compression_is_undone(compress: object) -> None:
    archive = written([("a", b"x" * 100_000), ("b", b"y")], tarfile.PAX_FORMAT)
    source = io.BufferedReader(io.BytesIO(compress(archive)))  # type: ignore[operator]
    assert decompressed(source, 1 << 20).read(1 << 30) == archive


@pytest.mark.parametrize(
    "compress", [gzip.compress, bz2.compress, lzma.compress], ids=["gzip", "bzip2", "xz"]
)
def test_an_archive_that_expands_past_the_cap_is_refused(compress: object) -> None:
    bomb = compress(b"\x00" * (8 << 20))  # type: ignore[operator]
    with pytest.raises(errors.SizeLimitExceeded):
        expand(bomb, 1 << 20)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (gzip.compress(b"x" * 10_000)[:-12], errors.TruncatedCompressedData),
        (lzma.compress(b"x" * 10_000)[:-20], errors.TruncatedCompressedData),
        (b"\x28\xb5\x2f\xfd" + b"\x00" * 100, errors.UnsupportedCompression),
    ],
)
def test_damaged_or_unsupported_compression_is_refused(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        expand(data, 1 << 20)


def test_untrusted_headers_never_reach_the_interpreters_tarfile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With tarfile's header parsers made to fail, a Load still reads archives and
    refuses the CVE-2024-6232 header on its own, so no interpreter patch level matters."""

    def parsed(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError("tarfile parsed an untrusted header")

    for method in ("frombuf", "fromtarfile", "_proc_pax", "_proc_gnulong"):
        monkeypatch.setattr(tarfile.TarInfo, method, parsed)
    monkeypatch.setattr(tarfile.TarFile, "next", parsed)
    with Store.open(tmp_path / "root") as store:
        with pytest.raises(errors.MalformedContent, match="does not start with its length"):
            load(store, [gzip.compress(pax_digits_archive())])
        archive = docker_archive(ImageSpec(tags=["a/b:1"], layers=[tar_of({"f": b"x"})]))
        assert [image.names for image in load(store, [archive])] == [("docker.io/a/b:1",)]
