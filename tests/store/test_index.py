"""Multi-platform images: a name pointing at an index, some children absent."""

from __future__ import annotations

import pytest

from imagestore import errors
from imagestore.oci.platforms import host_platform
from imagestore.store.store import Store
from tests.store.builders import build_image, build_index, layer_tar


def test_a_name_on_an_index_reaches_each_stored_platform(store: Store) -> None:
    amd = build_image(store, [layer_tar({"a": b"amd"})], architecture="amd64")
    arm = build_image(store, [layer_tar({"a": b"arm"})], architecture="arm64")
    result = build_index(
        store,
        [(amd, "linux/amd64"), (arm, "linux/arm64/v8")],
        names=["multi:1"],
        absent=[("sha256:" + "e" * 64, "linux/s390x")],
    )
    assert set(result.image_ids) == {amd.image_id, arm.image_id}
    assert store.inspect("multi:1", platform="linux/arm64").summary.id == arm.image_id
    assert store.inspect("multi:1", platform="linux/amd64").summary.id == amd.image_id
    host = store.inspect("multi:1").summary.platform
    assert host.architecture == host_platform().architecture
    with pytest.raises(errors.NotFound, match="present: linux/amd64, linux/arm64"):
        store.inspect("multi:1", platform="linux/s390x")
    rows = {row.id: [t.familiar for t in row.repo_tags] for row in store.list_images().images}
    assert rows == {amd.image_id: ["multi:1"], arm.image_id: ["multi:1"]}
    assert store.check().ok  # an absent, unselected child is not a problem


def test_moving_a_name_off_an_index_leaves_its_images_dangling_for_prune(store: Store) -> None:
    amd = build_image(store, [layer_tar({"a": b"amd"})], architecture="amd64")
    arm = build_image(store, [layer_tar({"a": b"arm"})], architecture="arm64")
    index = build_index(store, [(amd, "linux/amd64"), (arm, "linux/arm64")], names=["multi:1"])
    other = build_image(store, [layer_tar({"a": b"other"})], names=["other:1"])
    store.tag("other:1", "multi:1")
    dangling = {i.id for i in store.list_images(show_all=True).images} - {other.image_id}
    assert dangling == {amd.image_id, arm.image_id}
    result = store.prune()
    assert set(result.deleted_images) == {amd.image_id, arm.image_id}
    assert index.target_digest in result.deleted_blobs  # an unnamed index is garbage
    assert {i.id for i in store.list_images(show_all=True).images} == {other.image_id}
    assert store.check().ok


def test_removing_the_only_name_of_an_index_deletes_its_images(store: Store) -> None:
    amd = build_image(store, [layer_tar({"a": b"amd"})], architecture="amd64")
    arm = build_image(store, [layer_tar({"a": b"arm"})], architecture="arm64")
    build_index(store, [(amd, "linux/amd64"), (arm, "linux/arm64")], names=["multi:1"])
    (result,) = store.remove(["multi:1"])
    assert [name.familiar for name in result.untagged] == ["multi:1"]
    assert set(result.deleted_images) == {amd.image_id, arm.image_id}
    assert set(store._parts.blobs.digests()) == set()
    assert store.check().ok


def test_blob_reads_honour_offset_and_limit(store: Store) -> None:
    built = build_image(store, [layer_tar({"a": bytes(range(256)) * 5000})], names=["r:1"])
    digest = built.layers[0].digest
    whole = store._parts.blobs.path(digest).read_bytes()
    assert b"".join(store._parts.blobs.read(digest)) == whole
    assert b"".join(store._parts.blobs.read(digest, 100, 50)) == whole[100:150]
    assert b"".join(store._parts.blobs.read(digest, len(whole))) == b""
    assert b"".join(store._parts.blobs.read(digest, 10, 10**9)) == whole[10:]
    with pytest.raises(errors.OutOfRange, match="past the end"):
        list(store._parts.blobs.read(digest, len(whole) + 1))
    with pytest.raises(errors.NotFound):
        list(store._parts.blobs.read("sha256:" + "0" * 64))
