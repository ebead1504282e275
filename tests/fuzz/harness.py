"""What every fuzz harness shares: the rule of a pass, and the atheris entry point.

A harness passes an input when the code under test returns or raises an
:class:`imagestore.errors.ImageStoreError` (what the server turns into a status
with a reason). Any other exception is a finding, and so is an input that runs
longer than libFuzzer's ``-timeout`` (a hang or a quadratic blow-up) or that
takes more memory than ``-rss_limit_mb``.

Each harness is a module ``tests.fuzz.<name>`` with a ``target(data: bytes)``;
``python -m tests.fuzz.<name> [libFuzzer flags] [corpus dirs]`` runs it (see
tests/fuzz/run.py, ``make fuzz`` and tests/fuzz/test_fuzz.py). Its seed corpus
is ``tests/fuzz/corpus/<name>/``. Harnesses import the code under test inside
``atheris.instrument_imports()`` so that coverage guides the mutations.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

import atheris

from imagestore import errors

Target = Callable[[bytes], object]


def expected_errors() -> contextlib.suppress:
    """Drops an ImageStoreError (a refusal, which passes); lets anything else through."""
    return contextlib.suppress(errors.ImageStoreError)


def passes(target: Target, data: bytes) -> None:
    """Run ``target`` on one input; only ImageStoreError may escape it, and is dropped."""
    with expected_errors():
        target(data)


def text(data: bytes) -> str:
    """The input as text: UTF-8, bad bytes kept as surrogates (as a CLI argument is)."""
    return data.decode("utf-8", "surrogateescape")


def main(target: Target, argv: list[str] | None = None) -> None:
    """Fuzz ``target`` with libFuzzer's command line (``-max_total_time=…`` and so on)."""
    atheris.Setup(sys.argv if argv is None else argv, lambda data: passes(target, data))
    atheris.Fuzz()
