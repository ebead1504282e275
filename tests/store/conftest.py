"""The store contract suite: every test in ``tests/store`` runs once per catalog
implementation (the ``catalog`` parameter), through the same ``Store``.

An implementation joins by adding its factory to ``CATALOGS``; no test
changes. PostgreSQL runs on the session's throwaway cluster (``tests/pg.py``),
one database per store root.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from imagestore.store.parts import CatalogFactory, sqlite_catalog
from imagestore.store.store import Store
from tests.pg import postgres_catalog

#: catalog implementations by name: each opens the catalog of a store root
CATALOGS: dict[str, CatalogFactory] = {"sqlite": sqlite_catalog, "postgresql": postgres_catalog}

OpenStore = Callable[..., Store]


@pytest.fixture(params=sorted(CATALOGS))
def catalog_name(request: pytest.FixtureRequest) -> str:
    """The catalog implementation under test."""
    if request.param == "postgresql":  # started before any child process looks for it
        request.getfixturevalue("postgres_cluster")
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
