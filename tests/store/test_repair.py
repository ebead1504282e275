"""What a crash or a bad disk leaves behind is repaired by the next pull or load.

- A blob file without its catalog record (a kill between an ingest's rename and
  its record, or during a prune's unlinks) does not count as stored: a pull
  writes it again, Check lists it apart (not a problem), and start-up removes
  it once it is older than the grace period.
- A blob Check found damaged is marked: the next pull or load writes it again
  (instead of "Already exists"), and Check's detail says so.
- The root is 0700, the catalog files and the lock 0600, blob files 0400,
  whatever the umask.
- Where each blob was pulled from or pushed to is recorded, most recent first,
  bounded per blob and registry, and forgotten with the blob.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from imagestore import hashing
from imagestore.oci import mediatypes as mt
from imagestore.oci.manifests import Descriptor
from imagestore.oci.references import parse_reference
from imagestore.store.blobs import Encoding
from imagestore.store.catalog import MAX_SOURCES_PER_BLOB
from imagestore.store.check import REPAIR_BLOB
from imagestore.store.store import ORPHAN_GRACE_PERIOD, Store
from tests.store.builders import build_image, layer_tar
from tests.store.conftest import OpenStore

HOUR = 3600.0


@dataclass(frozen=True)
class Remote:
    """An image as a registry serves it: a gzip layer, a config and a manifest."""

    layer: bytes
    layer_digest: str
    diff_id: str
    config: bytes
    config_digest: str
    manifest: bytes
    manifest_digest: str


def remote_image(content: bytes) -> Remote:
    with hashing.Encoder() as encoder:
        layer = encoder.update(layer_tar({"app": content}))
        tail, digests = encoder.finish()
    layer += tail
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [digests.diff_id]},
        }
    ).encode()
    config_digest = hashing.sha256_digest(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [
                {"mediaType": mt.OCI_LAYER_GZIP, "digest": digests.digest, "size": len(layer)}
            ],
        }
    ).encode()
    return Remote(
        layer,
        digests.digest,
        str(digests.diff_id),
        config,
        config_digest,
        manifest,
        hashing.sha256_digest(manifest),
    )


def pull(store: Store, image: Remote, name: str) -> bool:
    """What a pull does with the store; True when it wrote the layer."""
    wrote = False
    with store.lease() as lease:
        store.put_blob(lease, image.manifest, mt.OCI_MANIFEST, image.manifest_digest)
        store.put_blob(lease, image.config, mt.OCI_CONFIG, image.config_digest)
        lease.add(image.layer_digest)
        if not store.layer_present(image.layer_digest):
            with store.ingest(
                lease,
                image.layer_digest,
                len(image.layer),
                encoding=Encoding.LAYER,
                expected_diff_id=image.diff_id,
            ) as ingest:
                if not ingest.exists:  # else: "Already exists"
                    ingest.write(image.layer)
                    store.commit(ingest, lease, mt.OCI_LAYER_GZIP)
                    wrote = True
        target = Descriptor(mt.OCI_MANIFEST, image.manifest_digest, len(image.manifest))
        store.commit_target(lease, target, [parse_reference(name)])
    return wrote


def file_only(store: Store, data: bytes) -> str:
    """A blob file without its record: what a kill right after the rename leaves."""
    with store._parts.blobs.ingest() as ingest:
        ingest.write(data)
        return ingest.commit().digest


def damage(store: Store, digest: str, data: bytes) -> None:
    path = store._parts.blobs.path(digest)
    path.chmod(0o600)  # blob files are read-only
    path.write_bytes(data)
    path.chmod(0o400)


def age(store: Store, digest: str, seconds: float) -> None:
    when = time.time() - seconds
    os.utime(store._parts.blobs.path(digest), (when, when))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---- blob files without a record ----------------------------------------------


@pytest.mark.parametrize("left", ["layer", "config", "manifest", "all"])
def test_a_pull_succeeds_when_a_blob_file_is_present_without_its_record(
    store: Store, left: str
) -> None:
    image = remote_image(b"orphaned")
    blobs = {"layer": image.layer, "config": image.config, "manifest": image.manifest}
    orphans = [file_only(store, data) for kind, data in blobs.items() if left in (kind, "all")]
    assert not any(store.stored(digest) for digest in orphans)
    assert not store.layer_present(image.layer_digest)
    report = store.check()
    assert report.ok  # garbage, not a problem: a pull writes it again
    assert report.unrecorded_blobs == tuple(sorted(orphans))

    wrote = pull(store, image, "example/app:1")

    assert wrote  # a layer file without its record does not count as stored
    assert all(store.stored(digest) for digest in orphans)
    assert store.inspect("example/app:1").summary.id == image.config_digest
    after = store.check()
    assert after.ok
    assert after.unrecorded_blobs == ()
    assert store._parts.blobs.path(image.layer_digest).read_bytes() == image.layer


def test_what_a_prune_killed_during_its_unlinks_leaves_is_pulled_again(store: Store) -> None:
    image = remote_image(b"pruned")
    pull(store, image, "example/app:1")
    layer = store._parts.blobs.path(image.layer_digest).read_bytes()
    store.remove(["example/app:1"])  # rows and files go; put the layer file back
    assert file_only(store, layer) == image.layer_digest

    assert pull(store, image, "example/app:1")  # written again, then recorded

    assert store.layer_present(image.layer_digest)
    assert store.check().ok


def test_start_up_removes_an_old_orphan_and_keeps_a_young_one(
    tmp_path: Path, open_store: OpenStore
) -> None:
    root = tmp_path / "root"
    with open_store(root) as store:
        kept = build_image(store, [layer_tar({"kept": b"k"})], names=["example/kept:1"])
        old = file_only(store, b"left by a crash long ago")
        young = file_only(store, b"maybe another process's fresh commit")
        age(store, old, ORPHAN_GRACE_PERIOD + 60)
        for digest in (kept.image_id, kept.manifest.digest, kept.layers[0].digest):
            age(store, digest, 10 * ORPHAN_GRACE_PERIOD)  # recorded: age does not matter

    with open_store(root) as store:
        assert store.orphans_removed == 1
        assert not store._parts.blobs.exists(old)
        assert store._parts.blobs.exists(young)
        assert store.inspect("example/kept:1").summary.id == kept.image_id
        report = store.check()
        assert report.ok
        assert report.unrecorded_blobs == (young,)

    with open_store(root, orphan_grace_period=0) as store:  # the grace period is an option
        assert store.orphans_removed == 1
        assert not store._parts.blobs.exists(young)
        assert store.check().ok


def test_a_leased_orphan_is_neither_swept_nor_listed(store: Store) -> None:
    digest = file_only(store, b"an ingest between its rename and its record")
    age(store, digest, 2 * ORPHAN_GRACE_PERIOD)
    with store.lease() as lease:
        lease.add(digest)  # as Store.commit does before the rename
        assert store.sweep_orphans(0) == []
        assert store.check().unrecorded_blobs == ()
    assert store.check().unrecorded_blobs == (digest,)
    assert store.sweep_orphans(HOUR) == [digest]
    assert not store._parts.blobs.exists(digest)


def test_a_digest_a_lease_protects_already_is_added_without_waiting_for_the_writer(
    store: Store,
) -> None:
    digest = file_only(store, b"leased twice")
    leases = store._parts.leases
    writer_held, let_go = threading.Event(), threading.Event()

    def hold_the_writer() -> None:
        with store._parts.catalog.transaction():
            writer_held.set()
            let_go.wait()

    holder = threading.Thread(target=hold_the_writer)
    with store.lease() as lease:
        lease.add(digest)
        holder.start()
        try:
            assert writer_held.wait(10)
            # a first add would wait for the writer (GC either sees it or is done);
            # this one returns while the writer is held
            again = threading.Thread(target=lease.add, args=(digest,))
            again.start()
            again.join(10)
            returned = not again.is_alive()
        finally:
            let_go.set()
            holder.join()
        again.join()
        assert returned
        assert digest in leases.protected()
    assert digest not in leases.protected()  # released once, as it was held once


# ---- damaged blobs --------------------------------------------------------------


@pytest.mark.parametrize("which", ["layer", "config", "manifest"])
def test_a_blob_check_found_corrupt_is_written_again_by_the_next_pull(
    store: Store, which: str
) -> None:
    image = remote_image(b"rotting")
    pull(store, image, "example/app:1")
    digest = {
        "layer": image.layer_digest,
        "config": image.config_digest,
        "manifest": image.manifest_digest,
    }[which]
    good = store._parts.blobs.path(digest).read_bytes()
    damage(store, digest, b"bit rot" + good[7:])  # same size, other bytes

    report = store.check()
    found = [(p.kind, p.subject) for p in report.problems]
    unparsable = [("bad-config", digest)] if which == "config" else []
    assert found == [("corrupt-blob", digest), *unparsable]
    assert REPAIR_BLOB in report.problems[0].detail  # says how to recover
    assert store.damaged() == {digest: "corrupt-blob"}
    assert not store.stored(digest)

    wrote = pull(store, image, "example/app:1")  # not "Already exists"

    assert wrote == (which == "layer")
    assert store._parts.blobs.path(digest).read_bytes() == good
    assert mode(store._parts.blobs.path(digest)) == 0o400
    assert store.damaged() == {}
    assert store.check().ok


def test_a_load_writes_a_damaged_layer_again(store: Store) -> None:
    built = build_image(store, [layer_tar({"a": b"load me"})], names=["example/app:1"])
    layer = built.layers[0].digest
    good = store._parts.blobs.path(layer).read_bytes()
    damage(store, layer, good[:-1] + bytes([good[-1] ^ 1]))
    assert not store.check().ok
    (diff_id,) = store.inspect(built.image_id).diff_ids
    with store._parts.catalog.reading() as db:  # nor may a load reuse it for its diff_id
        assert db.blob_by_diff_id(diff_id) is None

    with store.lease() as lease, store.ingest(lease, layer, encoding=Encoding.LAYER) as ingest:
        assert not ingest.exists  # as Load asks before copying the member
        ingest.write(good)
        store.commit(ingest, lease, mt.OCI_LAYER_GZIP)

    assert store._parts.blobs.verify(layer)
    assert store.check().ok


def test_a_truncated_blob_does_not_count_as_stored_even_before_check(store: Store) -> None:
    image = remote_image(b"truncated")
    pull(store, image, "example/app:1")
    damage(store, image.layer_digest, image.layer[:-10])
    assert not store.layer_present(image.layer_digest)  # a stat, no hashing

    assert pull(store, image, "example/app:1")

    assert store._parts.blobs.path(image.layer_digest).read_bytes() == image.layer
    assert store.check().ok


def test_a_wrong_size_record_is_corrected_by_the_next_pull(store: Store) -> None:
    image = remote_image(b"misrecorded")
    pull(store, image, "example/app:1")
    with store._parts.catalog.transaction() as db:  # a record that lies about the size
        row = db.blob(image.config_digest)
        assert row is not None
        db.record_blob(dataclasses.replace(row, size=1))
    report = store.check()
    assert [(p.kind, p.subject) for p in report.problems] == [
        ("size-mismatch", image.config_digest)
    ]
    assert "corrects the record" in report.problems[0].detail

    pull(store, image, "example/app:1")

    with store._parts.catalog.reading() as db:
        row = db.blob(image.config_digest)
    assert row is not None
    assert row.size == len(image.config)
    assert store.check().ok


def test_marks_go_with_their_blobs_and_a_restored_file_is_unmarked(store: Store) -> None:
    first = remote_image(b"first")
    second = remote_image(b"second")
    pull(store, first, "example/first:1")
    pull(store, second, "example/second:1")
    for image in (first, second):
        damage(store, image.layer_digest, b"x" * len(image.layer))
    store.check()
    assert set(store.damaged()) == {first.layer_digest, second.layer_digest}

    store.remove(["example/first:1"])  # its blobs go, and their marks
    damage(store, second.layer_digest, second.layer)  # restored by hand
    assert store.check().ok
    assert store.damaged() == {}


def test_a_reader_that_finds_a_blob_corrupt_can_mark_it(store: Store) -> None:
    image = remote_image(b"read")
    pull(store, image, "example/app:1")
    store.mark_damaged(image.config_digest)  # e.g. a push that re-hashed it
    assert store.damaged() == {image.config_digest: "corrupt-blob"}
    assert not store.stored(image.config_digest)
    pull(store, image, "example/app:1")
    assert store.damaged() == {}


def test_missing_blob_details_say_how_to_recover(store: Store) -> None:
    image = remote_image(b"vanished")
    pull(store, image, "example/app:1")
    store._parts.blobs.path(image.layer_digest).unlink()
    (problem,) = store.check().problems
    assert (problem.kind, problem.subject) == ("missing-blob", image.layer_digest)
    assert REPAIR_BLOB in problem.detail
    assert pull(store, image, "example/app:1")
    assert store.check().ok


# ---- file modes -----------------------------------------------------------------


def test_blob_sources_are_most_recent_first_and_per_registry(store: Store) -> None:
    image = remote_image(b"sourced")
    pull(store, image, "127.0.0.1:5000/team/app:1")
    digests = [image.layer_digest, image.config_digest]
    store.record_blob_sources(digests, "127.0.0.1:5000", "team/app")
    store.record_blob_sources(digests, "127.0.0.1:5000", "other/app")
    store.record_blob_sources([image.layer_digest], "docker.io", "library/app")
    assert store.blob_sources(image.layer_digest, "127.0.0.1:5000") == ["other/app", "team/app"]
    assert store.blob_sources(image.config_digest, "127.0.0.1:5000") == ["other/app", "team/app"]
    assert store.blob_sources(image.layer_digest, "docker.io") == ["library/app"]
    assert store.blob_sources(image.config_digest, "docker.io") == []

    store.record_blob_sources([image.layer_digest], "127.0.0.1:5000", "team/app")  # again
    assert store.blob_sources(image.layer_digest, "127.0.0.1:5000") == ["team/app", "other/app"]


def test_blob_sources_are_bounded_and_only_for_recorded_blobs(store: Store) -> None:
    image = remote_image(b"bounded")
    pull(store, image, "example/app:1")
    for number in range(MAX_SOURCES_PER_BLOB + 5):
        store.record_blob_sources([image.layer_digest], "registry.test", f"repo/{number}")
    expected = [f"repo/{n}" for n in reversed(range(5, MAX_SOURCES_PER_BLOB + 5))]
    assert store.blob_sources(image.layer_digest, "registry.test") == expected

    unknown = "sha256:" + "ab" * 32
    store.record_blob_sources([unknown], "registry.test", "repo/x")
    assert store.blob_sources(unknown, "registry.test") == []


def test_forgetting_a_blob_forgets_its_sources(store: Store) -> None:
    image = remote_image(b"forgotten")
    pull(store, image, "example/app:1")
    store.record_blob_sources([image.layer_digest], "registry.test", "team/app")
    store.remove(["example/app:1"])
    assert store.blob_sources(image.layer_digest, "registry.test") == []

    pull(store, image, "example/app:1")  # the same blob, stored anew: no stale sources
    assert store.blob_sources(image.layer_digest, "registry.test") == []
    store.record_blob_sources([image.layer_digest], "registry.test", "team/app")
    store.prune(all_images=True)
    assert store.blob_sources(image.layer_digest, "registry.test") == []
