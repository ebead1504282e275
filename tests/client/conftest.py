"""The fixtures the client tests share with tests/registry (registries, a server)."""

from tests.registry.conftest import (  # noqa: F401 - fixtures
    auth_registry,
    fresh_registry,
    published,
    registry,
    server,
)
