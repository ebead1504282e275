"""The registry fixtures the client tests share with tests/registry."""

from tests.registry.conftest import (  # noqa: F401 - fixtures
    auth_registry,
    fresh_registry,
    published,
    registry,
)
