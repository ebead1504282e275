"""Fuzz the Load archive reader: outer compression, then tar headers.

Input: an archive as a client uploads it (plain, gzip, bzip2 or xz; ustar, GNU
or PAX headers). imagestore.archive.decompress bounds the expansion and
imagestore.archive.tar reads the members within its limits; every member's data
reads back to exactly its declared size.
"""

from __future__ import annotations

import io

import atheris

with atheris.instrument_imports(include=["imagestore"]):
    from imagestore.archive.decompress import decompressed
    from imagestore.archive.tar import TarLimits, TarReader

from tests.fuzz.harness import main

LIMITS = TarLimits(max_header_bytes=64 << 10, max_name_bytes=4096, max_members=2000)
MAX_EXPANDED = 8 << 20
READ = 64 << 10


def target(data: bytes) -> None:
    source = decompressed(io.BufferedReader(io.BytesIO(data)), MAX_EXPANDED)
    reader = TarReader(source, LIMITS)
    for member in reader:
        assert member.size >= 0, member
        assert len(member.path.encode()) <= LIMITS.max_name_bytes, member
        assert reader.members <= LIMITS.max_members
        total = 0
        while chunk := reader.read(READ):
            total += len(chunk)
        assert total == member.size, member


if __name__ == "__main__":
    main(target)
