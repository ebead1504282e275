"""Test-wide setup: hypothesis profiles, the native-variant switch, and the
session's PostgreSQL cluster.

IMAGESTORE_TEST_NATIVE names a built ``_native`` module (the zlib or sanitizer
variant); it is loaded as ``imagestore._native`` before any test imports
``imagestore.hashing`` (see tests/native_variant.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests import native_variant
from tests.pg import Cluster, cluster

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


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """The session's PostgreSQL cluster (tests/pg.py), started by this process
    before any child process looks for it, and stopped at the session's end."""
    started = cluster()
    yield started
    started.stop()
