"""Load a separately built ``_native`` module (zlib or sanitizer variant) as
``imagestore._native``, before ``imagestore.hashing`` is imported.

Used by tests/conftest.py and the benchmarks when IMAGESTORE_TEST_NATIVE names
a module built by ``native/build_native.py --output``.
"""

from __future__ import annotations

import importlib.util
import os
import sys


def load_from_environment() -> None:
    """Honour IMAGESTORE_TEST_NATIVE, if set."""
    path = os.environ.get("IMAGESTORE_TEST_NATIVE")
    if not path:
        return
    if "imagestore.hashing" in sys.modules:
        raise RuntimeError("imagestore.hashing was imported before the native variant")
    import imagestore

    spec = importlib.util.spec_from_file_location("imagestore._native", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"IMAGESTORE_TEST_NATIVE={path!r} is not a loadable module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["imagestore._native"] = module
    imagestore._native = module  # type: ignore[attr-defined]
