"""The store contract suite: every test in ``tests/store`` runs once per catalog
implementation (the ``catalog`` parameter), through the same ``Store``.

A new implementation (PostgreSQL) joins by adding its factory to ``CATALOGS``;
no test changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from imagestore.store.parts import CatalogFactory, sqlite_catalog
from imagestore.store.store import Store

#: catalog implementations by name: each opens the catalog of a store root
CATALOGS: dict[str, CatalogFactory] = {"sqlite": sqlite_catalog}

OpenStore = Callable[..., Store]


@pytest.fixture(params=sorted(CATALOGS))
def catalog_name(request: pytest.FixtureRequest) -> str:
    """The catalog implementation under test."""
    return str(request.param)


@pytest.fixture
def open_store(catalog_name: str) -> OpenStore:
    """``Store.open`` on the catalog implementation under test."""

    def opener(root: Path, **options: Any) -> Store:
        return Store.open(root, catalog=CATALOGS[catalog_name], **options)

    return opener


@pytest.fixture
def store(tmp_path: Path, open_store: OpenStore) -> Iterator[Store]:
    with open_store(tmp_path / "root") as opened:
        yield opened
