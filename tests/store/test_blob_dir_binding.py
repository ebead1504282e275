"""A blob directory belongs to one store: its ``store-id`` file names the
catalog's store ID and a nonce of the directory, which the catalog records
for the first directory marked. A store opened on another store's directory,
on another directory of its own (replicas started on different ones), or on
an empty unmarked one while its catalog records blobs (an unmounted share), is
refused at start (BLOB_DIR_MISMATCH) before anything is collected."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import pytest

from imagestore import errors
from imagestore.store.blobs import STORE_ID_FILE, _write_marker
from imagestore.store.store import Store
from tests.store.builders import build_image, layer_tar
from tests.store.conftest import replica


def store_id(store: Store) -> str:
    with store._parts.catalog.reading() as db:
        return db.store_id()


def marked(blob_dir: Path) -> tuple[str, str]:
    """(store ID, directory nonce) of a directory's mark."""
    store, nonce = (blob_dir / STORE_ID_FILE).read_text().split()
    return store, nonce


def test_a_new_store_marks_its_blob_directory_with_the_catalogs_id(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with Store.open(root) as store:
        identity = store_id(store)
        marker = root / "blobs" / STORE_ID_FILE
        marked_store, nonce = marked(root / "blobs")
        assert marked_store == identity
        assert re.fullmatch("[0-9a-f]{32}", identity)
        assert re.fullmatch("[0-9a-f]{32}", nonce)
        assert marker.stat().st_mode & 0o777 == 0o400
        with store._parts.catalog.transaction() as writer:  # the catalog recorded the nonce
            assert writer.claim_blob_dir("another") == nonce
    with Store.open(root) as again:  # reopened: the same store, the same mark
        assert store_id(again) == identity
    assert sorted(p.name for p in (root / "blobs").iterdir()) == ["ingest", "sha256", "store-id"]


def test_a_store_from_before_the_mark_is_marked_when_opened(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with Store.open(root) as store:
        built = build_image(store, [layer_tar({"f": b"kept"})], names=["example/app:1"])
    # as schema 5 left it, migrated to 6: no mark, and no directory recorded
    (root / "blobs" / STORE_ID_FILE).unlink()
    with sqlite3.connect(root / "catalog.db") as db:
        db.execute("UPDATE store_identity SET blob_dir = NULL")
    with Store.open(root) as store:
        assert marked(root / "blobs")[0] == store_id(store)
        assert store.stored(built.layers[0].digest)


def test_a_catalog_made_anew_beside_the_old_blobs_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with Store.open(root) as store:
        old = store_id(store)
        digest = build_image(store, [layer_tar({"f": b"old"})], names=["a:1"]).layers[0].digest
    for name in os.listdir(root):
        if name.startswith("catalog.db"):
            (root / name).unlink()
    with pytest.raises(errors.BlobDirMismatch) as refused:
        Store.open(root)
    assert refused.value.metadata["blob_dir"] == str(root / "blobs")
    assert refused.value.metadata["found"] == old
    assert refused.value.metadata["expected"] != old
    assert "belongs to store" in refused.value.message
    # nothing was collected: the old store's blob is still there
    assert (root / "blobs" / "sha256" / digest.removeprefix("sha256:")).is_file()
    with Store.open(tmp_path / "other"):  # the root lock was released on the way out
        pass


def test_a_replica_on_another_stores_blob_directory_is_refused(tmp_path: Path, url: str) -> None:
    shared = tmp_path / "shared"
    with replica(tmp_path / "a", url, shared) as a:
        ours = store_id(a)
        assert marked(shared)[0] == ours
    other = tmp_path / "other-store-blobs"
    other.mkdir()
    _write_marker(other / STORE_ID_FILE, f"{'f' * 32} {'0' * 32}")
    with pytest.raises(errors.BlobDirMismatch) as refused:
        replica(tmp_path / "b", url, other)
    assert refused.value.metadata == {"blob_dir": str(other), "expected": ours, "found": "f" * 32}


def test_a_replica_on_an_empty_directory_while_the_catalog_records_blobs_is_refused(
    tmp_path: Path, url: str
) -> None:
    shared = tmp_path / "shared"
    with replica(tmp_path / "a", url, shared) as a:
        built = build_image(a, [layer_tar({"f": b"on the share"})], names=["example/app:1"])
    unmounted = tmp_path / "mnt" / "blobs"  # the share's mount point, nothing mounted
    with pytest.raises(errors.BlobDirMismatch) as refused:
        replica(tmp_path / "b", url, unmounted)
    assert refused.value.metadata == {"blob_dir": str(unmounted)}
    assert "records 3 blobs" in refused.value.message  # layer, config, manifest
    assert not (unmounted / STORE_ID_FILE).exists()  # not marked as the store's either
    with replica(tmp_path / "b", url, shared) as b:  # the right directory is accepted
        assert b.stored(built.layers[0].digest)


def test_replicas_started_at_once_on_two_directories_the_second_is_refused(
    tmp_path: Path, url: str
) -> None:
    """A fresh store records no blob yet: an empty directory is no proof of a
    missing mount. The catalog's record of the first directory marked is."""
    with replica(tmp_path / "a", url, tmp_path / "mounted") as a:
        _, first = marked(tmp_path / "mounted")
        unmounted = tmp_path / "not-mounted"
        with pytest.raises(errors.BlobDirMismatch) as refused:
            replica(tmp_path / "b", url, unmounted)
        _, second = marked(unmounted)  # marked for the store, but not its directory
        assert refused.value.metadata == {
            "blob_dir": str(unmounted),
            "expected": first,
            "found": second,
        }
        assert "recorded another directory first" in refused.value.message
        assert a.prune().deleted_blobs == ()
    with replica(tmp_path / "b", url, tmp_path / "mounted"):  # the right one is accepted
        pass


def test_replicas_marking_one_directory_agree_on_the_first_mark(tmp_path: Path) -> None:
    marker = tmp_path / STORE_ID_FILE
    assert _write_marker(marker, "a" * 32) == "a" * 32
    # a second replica that found no mark a moment ago: the first one's stands
    assert _write_marker(marker, "b" * 32) == "a" * 32
    assert marker.read_text() == "a" * 32 + "\n"
    assert os.listdir(tmp_path) == [STORE_ID_FILE]  # no partial file left
