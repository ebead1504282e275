"""Manifests and configs are read from their files once, verified, and kept
(bounded); a file that fails its hash is reported and marked, never kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagestore import errors
from imagestore.oci import mediatypes as mt
from imagestore.oci.manifests import Manifest
from imagestore.store.documents import Documents
from imagestore.store.store import Store
from tests.store.builders import build_image, layer_tar
from tests.store.conftest import OpenStore
from tests.store.test_repair import damage

LAYER = layer_tar({"app": b"one"})


def documents_of(store: Store, max_bytes: int = 1 << 20) -> Documents:
    """A fresh cache over the store's blob files, reporting damage as the store does."""
    return Documents(store._parts.blobs, store.found_corrupt, max_bytes)


def test_a_document_is_read_once_and_then_kept(store: Store) -> None:
    image = build_image(store, [LAYER], names=["kept:1"])
    documents = documents_of(store)
    raw, config = documents.config(image.image_id)
    raw_manifest, manifest = documents.manifest(image.manifest.digest, image.manifest.media_type)
    assert isinstance(manifest, Manifest)
    assert manifest.config.digest == image.image_id
    assert config.diff_ids == tuple(json.loads(raw)["rootfs"]["diff_ids"])
    # The files change under the cache: it answers from memory, as read and verified.
    damage(store, image.image_id, b"{}")
    damage(store, image.manifest.digest, b"{}")
    assert documents.config(image.image_id) == (raw, config)
    assert documents.manifest(image.manifest.digest, image.manifest.media_type) == (
        raw_manifest,
        manifest,
    )
    assert store.damaged() == {}


def test_a_file_that_fails_its_hash_is_marked_and_not_kept(store: Store) -> None:
    image = build_image(store, [LAYER], names=["bad:1"])
    good = store._parts.blobs.read_bytes(image.image_id)
    damage(store, image.image_id, good.replace(b"amd64", b"arm64"))
    documents = documents_of(store)
    with pytest.raises(errors.BlobCorrupt) as raised:
        documents.config(image.image_id)
    assert raised.value.metadata["digest"] == image.image_id
    assert store.damaged() == {image.image_id: "corrupt-blob"}
    damage(store, image.image_id, good)  # restored: read afresh, not a kept failure
    raw, config = documents.config(image.image_id)
    assert (raw, config.architecture) == (good, "amd64")


def test_inspect_of_an_image_whose_config_is_corrupt_says_so(
    tmp_path: Path, open_store: OpenStore
) -> None:
    with open_store(tmp_path) as store:
        image = build_image(store, [LAYER], names=["broken:1"])
        damage(store, image.image_id, b'{"architecture": "forged"}')
    with open_store(tmp_path) as store:  # nothing kept from the build
        with pytest.raises(errors.BlobCorrupt):
            store.inspect("broken:1")
        assert store.damaged() == {image.image_id: "corrupt-blob"}


def test_the_cache_is_bounded_by_bytes_least_recently_used_first(store: Store) -> None:
    first = build_image(store, [LAYER], names=["a:1"], labels={"n": "1"})
    second = build_image(store, [LAYER], names=["b:1"], labels={"n": "2"})
    sizes = [len(store._parts.blobs.read_bytes(i.image_id)) for i in (first, second)]
    documents = documents_of(store, max_bytes=max(sizes) + min(sizes) - 1)  # room for one
    documents.config(first.image_id)
    documents.config(second.image_id)  # the first leaves
    damage(store, first.image_id, b"{}")
    damage(store, second.image_id, b"{}")
    assert documents.config(second.image_id)[1].labels == {"n": "2"}  # kept
    with pytest.raises(errors.BlobCorrupt):
        documents.config(first.image_id)  # read again: the damage shows


def test_a_manifest_is_kept_per_media_type(store: Store) -> None:
    image = build_image(store, [LAYER], names=["typed:1"])
    documents = documents_of(store)
    _, as_declared = documents.manifest(image.manifest.digest, image.manifest.media_type)
    with pytest.raises(errors.ImageStoreError):  # an OCI manifest read as a schema 1 one
        documents.manifest(image.manifest.digest, mt.SCHEMA1_SIGNED_MANIFEST)
    assert documents.manifest(image.manifest.digest, None)[1] == as_declared
