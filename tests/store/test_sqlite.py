"""The SQLite catalog's own behaviour: its files' modes, schema migrations, and
refusing a catalog newer than the code. (What every catalog must do is the
contract suite in the other modules of ``tests/store``.)"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagestore import errors
from imagestore.store.sqlite import MIGRATIONS, SqliteCatalog
from imagestore.store.store import Store
from tests.store.builders import build_image, layer_tar


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    previous = os.umask(0)  # the modes must not depend on the umask
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("open_umask")
def test_a_new_store_is_private(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with Store.open(root) as store:
        build_image(store, [layer_tar({"a": b"a"})], names=["example/app:1"])
        assert mode(root) == 0o700
        for name in ("catalog.db", "catalog.db-wal", "catalog.db-shm", "lock"):
            assert mode(root / name) == 0o600, name
        for directory in (
            root / "blobs",
            store._parts.blobs.blob_dir,
            store._parts.blobs.ingest_dir,
        ):
            assert mode(directory) == 0o700
        blob_modes = {
            mode(store._parts.blobs.path(digest)) for digest in store._parts.blobs.digests()
        }
        assert blob_modes == {0o400}


@pytest.mark.usefixtures("open_umask")
def test_an_existing_store_is_made_private(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with Store.open(root) as store:
        build_image(store, [layer_tar({"a": b"a"})], names=["example/app:1"])
    root.chmod(0o755)
    for name in ("catalog.db", "catalog.db-wal", "catalog.db-shm", "lock"):
        if (root / name).exists():
            (root / name).chmod(0o644)
    with Store.open(root) as store:
        assert mode(root) == 0o700
        for name in ("catalog.db", "catalog.db-wal", "catalog.db-shm", "lock"):
            assert mode(root / name) == 0o600, name
        assert store.inspect("example/app:1")


# ---- blob sources -----------------------------------------------------------------


def test_a_version_1_catalog_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    db = sqlite3.connect(path, isolation_level=None)
    for statement in MIGRATIONS[0].split(";"):
        code = "\n".join(line.split("--", 1)[0] for line in statement.splitlines()).strip()
        if code:
            db.execute(code)
    db.execute("PRAGMA user_version = 1")
    digest = "sha256:" + "cd" * 32
    db.execute(
        "INSERT INTO blobs VALUES (?, 3, 'application/octet-stream', NULL, NULL, 1)", (digest,)
    )
    db.close()

    catalog = SqliteCatalog(path)
    try:
        assert catalog.schema_version == len(MIGRATIONS)
        with catalog.transaction() as writer:
            writer.record_blob_sources([digest], "registry.test", "team/app", 2)
        with catalog.reading() as reader:
            assert reader.blob(digest) is not None
            assert reader.blob_sources(digest, "registry.test") == ["team/app"]
            assert reader.damaged() == {}
    finally:
        catalog.close()
    assert mode(path) == 0o600


def test_a_catalog_from_a_newer_imagestore_is_refused(tmp_path: Path) -> None:
    catalog = SqliteCatalog(tmp_path / "catalog.db")
    assert catalog.schema_version >= 1
    with catalog.transaction() as db:
        db.db.execute("PRAGMA user_version = 999")
    catalog.close()
    with pytest.raises(errors.FailedPrecondition, match="newer than this imagestore"):
        SqliteCatalog(tmp_path / "catalog.db")
