"""The native calls return with the upper halves of the vector registers unused.

ISA-L's AVX2 and AVX-512 routines leave that state in use, and OpenSSL's
SSE-encoded SHA-256 then ran ~25% slower on the same thread, so every ISA-L
call is followed by ``vzeroupper`` (docs/design.md §5). The state is read with
``xgetbv(1)`` (XINUSE: bit 2 is the AVX state) right after the call returns,
from a helper built here with the compiler the native build uses; a control
that puts the state in use and clears it first proves the read sees both;
each call starts from a cleared state. Without the
``vzeroupper`` both tests fail here (ISA-L's own code leaves the state in
use). Only the zlib build and CPUs without XINUSE have nothing to check.
"""

from __future__ import annotations

import ctypes
import gzip
import os
import platform
import subprocess
from pathlib import Path

import pytest

from imagestore import hashing

#: XINUSE's bit for the upper halves of the YMM registers
AVX_STATE = 1 << 2

HELPER = r"""
#include <cpuid.h>

/* XGETBV with ECX=1 is there (CPUID.(EAX=0DH,ECX=1):EAX[2]), the OS
 * enabled XSAVE (CPUID.1:ECX[27]) and AVX2 runs (the control below). */
int xinuse_supported(void)
{
    unsigned a, b, c, d;
    if (!__builtin_cpu_supports("avx2"))
        return 0;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27)))
        return 0;
    if (!__get_cpuid_count(0xd, 1, &a, &b, &c, &d))
        return 0;
    return (a >> 2) & 1;
}

unsigned long long xinuse(void)
{
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(1));
    return ((unsigned long long)hi << 32) | lo;
}

/* All ones in ymm0: the upper half is then in use. */
void dirty_upper_state(void)
{
    __asm__ volatile("vpcmpeqd %%ymm0, %%ymm0, %%ymm0" ::: "xmm0");
}

void clear_upper_state(void)
{
    __asm__ volatile("vzeroupper");
}
"""


@pytest.fixture(scope="module")
def cpu(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    if platform.machine() != "x86_64":
        pytest.skip("the vector state checked here is x86-64's")
    if hashing.backend() != "isa-l":
        pytest.skip("the zlib build calls no ISA-L")
    directory = tmp_path_factory.mktemp("xinuse")
    source = directory / "xinuse.c"
    source.write_text(HELPER)
    library = directory / "xinuse.so"
    compiler = os.environ.get("CC", "cc")
    subprocess.run(
        [compiler, "-O1", "-shared", "-fPIC", "-o", str(library), str(source)],
        check=True,
    )
    helper = ctypes.CDLL(str(library))
    helper.xinuse.restype = ctypes.c_ulonglong
    if not helper.xinuse_supported():
        pytest.skip("this CPU has no AVX2 or does not report XINUSE")
    # the control: the read sees the state in use, and cleared
    helper.dirty_upper_state()
    assert helper.xinuse() & AVX_STATE
    helper.clear_upper_state()
    assert not helper.xinuse() & AVX_STATE
    return helper


def _layer() -> bytes:
    # text-like bytes: ISA-L's Huffman decoding, not stored blocks
    words = b" ".join(b"word%d" % (n % 4099) for n in range(400_000))
    return gzip.compress(words, compresslevel=6)


def test_the_decoder_leaves_the_avx_state_unused(cpu: ctypes.CDLL) -> None:
    layer = _layer()
    with hashing.Decoder(threads="one") as decoder:  # inflates on this thread
        cpu.clear_upper_state()
        decoder.update(layer[: len(layer) // 2])
        assert not cpu.xinuse() & AVX_STATE
        decoder.update(layer[len(layer) // 2 :])
        decoder.finish()
    assert not cpu.xinuse() & AVX_STATE


def test_the_encoder_leaves_the_avx_state_unused(cpu: ctypes.CDLL) -> None:
    data = Path(__file__).read_bytes() * 200
    with hashing.Encoder() as encoder:
        cpu.clear_upper_state()
        encoder.update(data)
        assert not cpu.xinuse() & AVX_STATE
        encoder.finish()
    assert not cpu.xinuse() & AVX_STATE
