"""cffi build script for ``imagestore._native`` (kept outside the package).

setuptools runs it through ``cffi_modules`` in setup.py; ``make native`` and the
sanitizer and benchmark targets run it directly to build variants:

    python native/build_native.py --output build/zlib/_native.so

Environment:
    IMAGESTORE_GZIP_BACKEND   auto (default: ISA-L when its headers are found), isa-l, zlib
    IMAGESTORE_NATIVE_SANITIZE  1 to build with ASan + UBSan (for the sanitizer target)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from cffi import FFI

NATIVE_DIR = Path(__file__).resolve().parent
HEADER = NATIVE_DIR / "imagestore_native.h"
SOURCE = NATIVE_DIR / "imagestore_native.c"
WARNINGS = ["-Wall", "-Wextra", "-Werror"]
SANITIZE = [
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=undefined",
    "-fno-omit-frame-pointer",
    "-g",
    "-O1",
]


def isal_headers_present() -> bool:
    """True when the C compiler finds ISA-L's igzip header (libisal-dev)."""
    compiler = os.environ.get("CC") or shutil.which("cc") or "gcc"
    probe = subprocess.run(
        [compiler, "-E", "-x", "c", "-", "-o", os.devnull],
        input=b"#include <isa-l/igzip_lib.h>\n",
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def choose_backend() -> str:
    wanted = os.environ.get("IMAGESTORE_GZIP_BACKEND", "auto")
    if wanted == "auto":
        return "isa-l" if isal_headers_present() else "zlib"
    if wanted not in ("isa-l", "zlib"):
        raise SystemExit(f"IMAGESTORE_GZIP_BACKEND must be auto, isa-l or zlib, not {wanted!r}")
    if wanted == "isa-l" and not isal_headers_present():
        raise SystemExit("IMAGESTORE_GZIP_BACKEND=isa-l but <isa-l/igzip_lib.h> is not installed")
    return wanted


def make_ffibuilder(*, absolute_paths: bool) -> FFI:
    """setuptools wants sources relative to setup.py; ffi.compile() changes directory."""
    backend = choose_backend()
    sanitize = os.environ.get("IMAGESTORE_NATIVE_SANITIZE") == "1"
    libraries = ["crypto", "z", "pthread"]
    macros: list[tuple[str, str | None]] = []
    if backend == "isa-l":
        libraries.append("isal")
        macros.append(("ISN_HAVE_ISAL", "1"))
    flags = WARNINGS + (SANITIZE if sanitize else ["-O2"])
    builder = FFI()
    builder.cdef(HEADER.read_text())
    builder.set_source(
        "imagestore._native",
        '#include <stddef.h>\n#include <stdint.h>\n#include "imagestore_native.h"\n',
        sources=[str(SOURCE) if absolute_paths else str(SOURCE.relative_to(NATIVE_DIR.parent))],
        include_dirs=[str(NATIVE_DIR)],
        libraries=libraries,
        define_macros=macros,
        extra_compile_args=flags,
        extra_link_args=["-fsanitize=address,undefined"] if sanitize else [],
    )
    return builder


ffibuilder = make_ffibuilder(absolute_paths=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="path of the built module (.so)")
    args = parser.parse_args()
    output = Path(args.output).resolve()
    tmpdir = output.parent / ".native-build"
    built = make_ffibuilder(absolute_paths=True).compile(tmpdir=str(tmpdir), verbose=False)
    output.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(built, output)
    shutil.rmtree(tmpdir, ignore_errors=True)
    print(f"built {output} ({choose_backend()})", file=sys.stderr)


if __name__ == "__main__":
    main()
