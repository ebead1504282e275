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

from imagestore.store.catalog import Catalog
from imagestore.store.parts import CatalogFactory, sqlite_catalog
from imagestore.store.postgres import PostgresCatalog
from imagestore.store.store import Store
from tests.pg import Cluster, postgres_catalog

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


@pytest.fixture
def catalog(tmp_path: Path, catalog_name: str) -> Iterator[Catalog]:
    """A bare catalog of the implementation under test (no store around it)."""
    opened = CATALOGS[catalog_name](tmp_path)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def url(postgres_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh PostgreSQL database of the test's own (for replicas that share it)."""
    database = "t_" + request.node.name.lower()[:40].replace("[", "_").replace("]", "")
    postgres_cluster.drop_database(database)
    yield postgres_cluster.create_database(database)
    postgres_cluster.drop_database(database)


#: a short heartbeat and timeout, so that the tests see a replica die quickly;
#: they wait on conditions (a replica counted dead), never for a time
FAST = {"heartbeat_interval": 0.05, "replica_timeout": 1.0}


def replica(
    root: Path,
    url: str,
    blob_dir: Path,
    *,
    heartbeat_interval: float = 2.0,
    replica_timeout: float = 60.0,
) -> Store:
    """One replica (standing for one server process) on the database ``url``
    and the shared blob directory ``blob_dir``."""

    def catalog(_: Path) -> Catalog:
        return PostgresCatalog(url)

    return Store.open(
        root,
        catalog=catalog,
        blob_dir=blob_dir,
        heartbeat_interval=heartbeat_interval,
        replica_timeout=replica_timeout,
    )


@pytest.fixture
def pair(tmp_path: Path, url: str) -> Iterator[tuple[Store, Store]]:
    """Two replicas on one database and one blob directory, quick to count each other dead."""
    shared = tmp_path / "shared"
    with (
        replica(tmp_path / "a", url, shared, **FAST) as a,
        replica(tmp_path / "b", url, shared, **FAST) as b,
    ):
        yield a, b
