"""The Catalog protocol itself, for every implementation (``catalog_name``):
transactions are all or nothing, a dry run leaves nothing, a read is one
snapshot that neither sees nor waits for a write in progress, and the names ->
images view answers the same through a manifest and through an index."""

from __future__ import annotations

import threading

import pytest

from imagestore.oci import mediatypes as mt
from imagestore.store.catalog import Catalog
from imagestore.store.records import (
    BlobRow,
    ImageRow,
    IndexChild,
    ManifestBlob,
    NameRow,
    TargetRow,
)

#: seconds before a thread that should have finished is declared stuck (a
#: failure detector for a deadlock, not a wait for a race)
STUCK = 60


def digest(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def blob(n: int, size: int = 10) -> BlobRow:
    return BlobRow(digest(n), size, "application/octet-stream", None, None, n)


def image(n: int, created: int | None) -> ImageRow:
    return ImageRow(digest(n), created, n, 1, 1, "linux", "amd64", "", {"n": str(n)}, None)


def name(text: str, target: str) -> NameRow:
    repository, _, tag = text.rpartition(":")
    return NameRow(text, repository, tag, None, target, 0, 0)


def add_image(catalog: Catalog, n: int, created: int | None = None) -> str:
    """An image ``n`` with manifest ``n + 1000`` (config ``n``, one layer ``n + 2000``)."""
    manifest = digest(n + 1000)
    with catalog.transaction() as db:
        for row in (blob(n), blob(n + 1000), blob(n + 2000)):
            db.record_blob(row)
        db.add_image(image(n, created))
        db.add_manifest(
            TargetRow(manifest, mt.OCI_MANIFEST, "manifest", digest(n), n),
            [
                ManifestBlob(0, digest(n), mt.OCI_CONFIG, 10),
                ManifestBlob(1, digest(n + 2000), mt.OCI_LAYER_GZIP, 10),
            ],
        )
    return manifest


def test_a_failed_transaction_changes_nothing(catalog: Catalog) -> None:
    def cut_short() -> None:
        with catalog.transaction() as db:
            db.record_blob(blob(1))
            raise RuntimeError("cut short")

    with pytest.raises(RuntimeError, match="cut short"):
        cut_short()
    with catalog.reading() as db:
        assert db.blob(digest(1)) is None


def test_a_dry_run_sees_its_changes_and_keeps_none(catalog: Catalog) -> None:
    with catalog.transaction(rollback=True) as db:
        db.record_blob(blob(1))
        assert db.blob(digest(1)) == blob(1)
    with catalog.reading() as db:
        assert db.blob(digest(1)) is None


def test_a_record_written_again_takes_the_verified_size_and_keeps_its_first_type(
    catalog: Catalog,
) -> None:
    with catalog.transaction() as db:
        db.record_blob(BlobRow(digest(1), 5, "first/type", "sha256:diff", 50, 1))
        db.record_blob(BlobRow(digest(1), 7, "second/type", None, None, 2))
    with catalog.reading() as db:
        assert db.blob(digest(1)) == BlobRow(digest(1), 7, "first/type", "sha256:diff", 50, 1)


def test_a_read_neither_waits_for_nor_sees_a_write_in_progress(catalog: Catalog) -> None:
    written, release = threading.Event(), threading.Event()

    def writer() -> None:
        with catalog.transaction() as db:
            db.record_blob(blob(1))
            written.set()
            release.wait()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert written.wait(STUCK)
        seen: list[BlobRow | None] = []
        reader = threading.Thread(target=lambda: seen.append(_read_blob(catalog, 1)))
        reader.start()
        reader.join(STUCK)
        assert not reader.is_alive(), "a read waited for the write transaction"
        assert seen == [None]
    finally:
        release.set()
        thread.join()
    assert _read_blob(catalog, 1) == blob(1)


def _read_blob(catalog: Catalog, n: int) -> BlobRow | None:
    with catalog.reading() as db:
        return db.blob(digest(n))


def test_a_read_is_one_snapshot_across_a_commit(catalog: Catalog) -> None:
    add_image(catalog, 1)
    with catalog.reading() as db:
        assert db.image(digest(1)) is not None
        add_image(catalog, 2)  # commits while this snapshot is open
        assert db.image(digest(2)) is None
        assert [row.id for row in db.images()] == [digest(1)]
    with catalog.reading() as db:
        assert db.image(digest(2)) is not None


def test_images_come_newest_first_and_page_after_a_key(catalog: Catalog) -> None:
    for n, created in ((1, 100), (2, 300), (3, None), (4, 200)):
        add_image(catalog, n, created)
    with catalog.reading() as db:
        order = [row.id for row in db.images()]
        assert order == [digest(2), digest(4), digest(1), digest(3)]
        assert [row.id for row in db.images(after=(200, digest(4)))] == [digest(1), digest(3)]
        assert db.image(digest(1)) == image(1, 100)
        assert db.images_by_prefix(digest(4).removeprefix("sha256:")) == [digest(4)]
        assert db.images_by_prefix("0" * 60) == [digest(n) for n in (1, 2, 3, 4)]


def test_names_reach_images_through_a_manifest_and_through_an_index(catalog: Catalog) -> None:
    first, second = add_image(catalog, 1), add_image(catalog, 2)
    index = digest(9000)
    with catalog.transaction() as db:
        db.record_blob(blob(9000))
        db.add_index(
            TargetRow(index, mt.OCI_INDEX, "index", None, 1),
            [
                IndexChild(0, first, mt.OCI_MANIFEST, 10, "linux/amd64"),
                IndexChild(1, second, mt.OCI_MANIFEST, 10, "linux/arm64/v8"),
                IndexChild(2, digest(9999), mt.OCI_MANIFEST, 10, "linux/s390x"),  # absent
            ],
        )
        db.set_name(name("docker.io/library/multi:1", index))
        db.set_name(name("docker.io/library/one:1", first))
    with catalog.reading() as db:
        assert sorted(db.images_of_target(index)) == [digest(1), digest(2)]
        assert db.images_of_target(first) == [digest(1)]
        assert [n.name for n in db.names_of_image(digest(1))] == [
            "docker.io/library/multi:1",
            "docker.io/library/one:1",
        ]
        assert [n.name for n in db.names_of_image(digest(2))] == ["docker.io/library/multi:1"]
        by_image = {k: sorted(n.name for n in v) for k, v in db.names_by_image().items()}
        strings = {k: sorted(v) for k, v in db.name_strings_by_image().items()}
        assert (
            by_image
            == strings
            == {
                digest(1): ["docker.io/library/multi:1", "docker.io/library/one:1"],
                digest(2): ["docker.io/library/multi:1"],
            }
        )
        assert db.unnamed_indexes() == []
        assert digest(9000) in db.referenced_blobs()
    with catalog.transaction() as db:
        assert db.set_name(name("docker.io/library/multi:1", second)) == index  # moved
    with catalog.reading() as db:
        assert db.unnamed_indexes() == [index]
        assert db.referenced_among([index, digest(2000 + 1), digest(12345)]) == {digest(2001)}


def test_deleting_an_image_leaves_its_blobs_to_the_collector(catalog: Catalog) -> None:
    manifest = add_image(catalog, 1)
    with catalog.transaction() as db:
        assert db.delete_image(digest(1)) == [manifest]
    with catalog.reading() as db:
        assert db.image(digest(1)) is None
        assert db.manifests_of_image(digest(1)) == []
        assert db.referenced_blobs() == set()
        assert db.blob_sizes([digest(1), digest(1001), digest(2001), digest(5)]) == {
            digest(1): 10,
            digest(1001): 10,
            digest(2001): 10,
        }
        assert db.total_blob_bytes() == 30


def test_forgetting_a_blob_forgets_its_marks_and_sources(catalog: Catalog) -> None:
    with catalog.transaction() as db:
        db.record_blob(blob(1))
        db.mark_damaged({digest(1): "corrupt-blob"}, 5)
        db.record_blob_sources([digest(1), digest(2)], "registry.test", "team/app", 5)
    with catalog.reading() as db:
        assert db.is_damaged(digest(1))
        assert db.damaged() == {digest(1): "corrupt-blob"}
        assert db.blob_sources(digest(1), "registry.test") == ["team/app"]
        assert db.blob_sources(digest(2), "registry.test") == []  # no record: not kept
    with catalog.transaction() as db:
        db.delete_blobs([digest(1)])
    with catalog.reading() as db:
        assert db.damaged() == {}
        assert db.blob_sources(digest(1), "registry.test") == []
