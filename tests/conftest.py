"""Test-wide setup: hypothesis profiles and the native-variant switch.

IMAGESTORE_TEST_NATIVE names a built ``_native`` module (the zlib or sanitizer
variant from native/build_native.py --outdir); it is loaded as
``imagestore._native`` before any test imports ``imagestore.hashing``.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    max_examples=60,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def _load_native_variant(path: str) -> None:
    import imagestore

    spec = importlib.util.spec_from_file_location("imagestore._native", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"IMAGESTORE_TEST_NATIVE={path!r} is not a loadable module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["imagestore._native"] = module
    imagestore._native = module  # type: ignore[attr-defined]


if os.environ.get("IMAGESTORE_TEST_NATIVE"):
    _load_native_variant(os.environ["IMAGESTORE_TEST_NATIVE"])
