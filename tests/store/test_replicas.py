"""Replicas: several stores (two roots here, each standing for one server
process) on one PostgreSQL catalog and one shared blob directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imagestore import errors
from imagestore.store.blobs import ingest_owner
from imagestore.store.catalog import Catalog
from imagestore.store.postgres import PostgresCatalog
from imagestore.store.store import Store
from tests.pg import Cluster


@pytest.fixture
def url(postgres_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    database = "r_" + request.node.name.lower()[:40].replace("[", "_").replace("]", "")
    postgres_cluster.drop_database(database)
    yield postgres_cluster.create_database(database)
    postgres_cluster.drop_database(database)


def replica(root: Path, url: str, blob_dir: Path, **options: object) -> Store:
    def catalog(_: Path) -> Catalog:
        return PostgresCatalog(url)

    return Store.open(root, catalog=catalog, blob_dir=blob_dir, **options)  # type: ignore[arg-type]


def test_a_replica_keeps_its_id_and_names_its_ingests_with_it(tmp_path: Path, url: str) -> None:
    shared = tmp_path / "shared"
    with replica(tmp_path / "a", url, shared) as a:
        first = a._parts.replica_id
        with a.lease() as lease, a.ingest(lease) as ingest:
            ingest.write(b"data")
            names = [p.name for p in a._parts.blobs.ingest_dir.iterdir()]
            assert [ingest_owner(name) for name in names] == [first]
        assert (shared / "sha256").is_dir()
    with replica(tmp_path / "a", url, shared) as again:
        assert again._parts.replica_id == first
    with replica(tmp_path / "b", url, shared) as b:
        assert b._parts.replica_id != first
    assert (tmp_path / "a" / "replica-id").read_text().strip() == first
    assert not (tmp_path / "a" / "blobs").exists()


def test_the_sqlite_catalog_refuses_another_blob_directory(tmp_path: Path) -> None:
    with pytest.raises(errors.OptionInvalid, match="--blob-dir"):
        Store.open(tmp_path / "root", blob_dir=tmp_path / "elsewhere")
    with Store.open(tmp_path / "root"):  # the lock was released
        pass
