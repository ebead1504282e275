"""Fuzz the reference-filter globs (imagestore.oci.globs), differentially.

Input: ``pattern``, then a NUL, then names separated by NULs. A pattern is
refused exactly when Go's rules say it is malformed (the character-by-character
oracle of tests/store/test_globs.py); for an ASCII name the regex path agrees
with the byte-level port of Go's algorithm, and both with a non-ASCII name.
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["imagestore"]):
    from imagestore import errors
    from imagestore.oci.globs import Glob

from tests.fuzz.harness import main
from tests.store.test_globs import go_malformed


def target(data: bytes) -> None:
    pattern, *names = data.decode("utf-8", "replace").split("\0")
    try:
        glob = Glob(pattern)
    except errors.InvalidArgument:
        assert go_malformed(pattern), pattern
        return
    assert not go_malformed(pattern), pattern
    for name in names[:4]:
        matched = glob.match(name)
        assert matched is glob.match_bytes(name.encode()), (pattern, name)
        if name.isascii():
            ascii_only = name.encode().decode("ascii")
            assert glob.match(ascii_only) is matched


if __name__ == "__main__":
    main(target)
