"""Test-wide setup: hypothesis profiles and the native-variant switch.

IMAGESTORE_TEST_NATIVE names a built ``_native`` module (the zlib or sanitizer
variant); it is loaded as ``imagestore._native`` before any test imports
``imagestore.hashing`` (see tests/native_variant.py).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from tests import native_variant

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


native_variant.load_from_environment()
