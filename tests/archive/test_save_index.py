"""Save of a name that points at a multi-platform index writes the index and
every child, and Load restores the name on the index with the same digests;
a partly stored index is refused unless a platform picks one stored child,
as Push does. skopeo reads the saved archive."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagestore import errors
from imagestore.archive.load import load
from imagestore.archive.save import save
from imagestore.oci import mediatypes as mt
from imagestore.oci.manifests import Descriptor
from imagestore.oci.references import parse_reference
from imagestore.store.models import CommitResult
from imagestore.store.store import Store
from tests.store.builders import Built, build_image, build_index, layer_tar
from tests.tools import require, run


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "root") as opened:
        yield opened


@pytest.fixture
def other(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "other") as opened:
        yield opened


def _platforms(store: Store) -> tuple[Built, Built]:
    amd = build_image(store, [layer_tar({"a": b"amd"})], architecture="amd64")
    arm = build_image(store, [layer_tar({"a": b"arm"})], architecture="arm64", variant="v8")
    return amd, arm


def _multi(store: Store, **extra: object) -> tuple[Built, Built, CommitResult]:
    amd, arm = _platforms(store)
    children = [(amd, "linux/amd64"), (arm, "linux/arm64/v8")]
    index = build_index(store, children, names=["multi:1"], **extra)  # type: ignore[arg-type]
    return amd, arm, index


def test_a_multi_platform_name_round_trips_with_every_platform(store: Store, other: Store) -> None:
    amd, arm, index = _multi(store)
    archive = b"".join(save(store, ["multi:1"]))
    loaded = load(other, [archive])
    assert [image.names for image in loaded] == [
        ("docker.io/library/multi:1",),
        (),
    ]  # the name, once
    assert {image.image_id for image in loaded} == {amd.image_id, arm.image_id}
    assert other.resolve("multi:1").target == index.target_digest
    assert other.inspect("multi:1", platform="linux/arm64").summary.id == arm.image_id
    assert other.inspect("multi:1", platform="linux/amd64").summary.id == amd.image_id
    assert other.check().ok


def test_a_partly_stored_index_is_refused_naming_the_absent_platforms(store: Store) -> None:
    _multi(store, absent=[("sha256:" + "e" * 64, "linux/s390x")])
    with pytest.raises(errors.FailedPrecondition, match="not stored: linux/s390x"):
        b"".join(save(store, ["multi:1"]))


def test_a_platform_of_a_partly_stored_index_saves_that_manifest_under_the_name(
    store: Store, other: Store
) -> None:
    _, arm, _ = _multi(store, absent=[("sha256:" + "e" * 64, "linux/s390x")])
    archive = b"".join(save(store, ["multi:1"], platform="linux/arm64"))
    loaded = load(other, [archive])
    assert [(image.image_id, image.names) for image in loaded] == [
        (arm.image_id, ("docker.io/library/multi:1",))
    ]
    assert other.resolve("multi:1").image_ids == (arm.image_id,)
    with pytest.raises(errors.NotFound, match="linux/s390x"):
        b"".join(save(store, ["multi:1"], platform="linux/s390x"))


def test_skopeo_reads_the_saved_index(store: Store, tmp_path: Path) -> None:
    skopeo = require("skopeo")
    _, _, index = _multi(store)
    path = tmp_path / "multi.tar"
    path.write_bytes(b"".join(save(store, ["multi:1"])))
    raw = run(skopeo, "inspect", "--raw", f"oci-archive:{path}")
    assert json.loads(raw)["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == index.target_digest
    arm = json.loads(
        run(skopeo, "inspect", "--override-arch", "arm64", "--override-variant", "v8",
            f"oci-archive:{path}")
    )  # fmt: skip
    assert arm["Architecture"] == "arm64"
    layout = tmp_path / "copied"
    run(skopeo, "copy", "--all", "--preserve-digests", f"oci-archive:{path}", f"oci:{layout}:multi")
    copied = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    assert copied == index.target_digest


def test_an_index_named_by_digest_is_saved_whole(store: Store, other: Store) -> None:
    amd, arm, index = _multi(store)
    pinned = f"multi@{index.target_digest}"
    size = store._parts.blobs.size(index.target_digest) or 0
    with store.lease() as lease:
        target = Descriptor(mt.OCI_INDEX, index.target_digest, size)
        store.commit_target(lease, target, [parse_reference(pinned)])
    loaded = load(other, [b"".join(save(store, [pinned]))])
    assert {image.image_id for image in loaded} == {amd.image_id, arm.image_id}
    assert all(image.names == () for image in loaded)  # a digest name is not a tag
    assert other.check().ok
