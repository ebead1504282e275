"""Names an archive brings must follow Tag's rules, and a digest name must
equal the digest of what it names: an archive cannot re-point a pinned name,
nor shadow an image ID with a tag spelled like one. A refused archive stores
nothing, not even the images listed before the forged name."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagestore import errors
from imagestore.archive.load import load
from imagestore.oci import mediatypes as mt
from imagestore.oci.manifests import Descriptor
from imagestore.oci.references import parse_reference
from imagestore.store.store import Store
from tests.archives import ImageSpec, docker_archive, sha, tar_of

VICTIM = ImageSpec(tags=["library/alpine:3"], layers=[tar_of({"etc/alpine": b"3"})])
FORGER = ImageSpec(tags=[], layers=[tar_of({"evil": b"payload"})], labels={"evil": "yes"})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "root") as opened:
        load(opened, [docker_archive(VICTIM)])
        yield opened


def _victim_manifest(store: Store) -> str:
    target = store.resolve("library/alpine:3").target
    assert target is not None
    return target


def _assert_only_the_victim(store: Store) -> None:
    assert [image.id for image in store.list_images(show_all=True).images] == [VICTIM.image_id]


def oci_layout(spec: ImageSpec, name: str | None = None, **extra: str) -> tuple[bytes, str]:
    """An OCI layout tar of gzip layers (stored as they are); (tar, manifest digest)."""
    layers = [gzip.compress(layer, mtime=0) for layer in spec.layers]
    config = spec.config()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": sha(config), "size": len(config)},
            "layers": [
                {"mediaType": mt.OCI_LAYER_GZIP, "digest": sha(x), "size": len(x)} for x in layers
            ],
        }
    ).encode()
    annotations = dict(extra)
    if name is not None:
        annotations["io.containerd.image.name"] = name
    entry = {
        "mediaType": mt.OCI_MANIFEST,
        "digest": sha(manifest),
        "size": len(manifest),
        "annotations": annotations,
    }
    members = {f"blobs/sha256/{sha(x)[7:]}": x for x in [*layers, config, manifest]}
    members["oci-layout"] = b'{"imageLayoutVersion": "1.0.0"}'
    members["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode()
    return tar_of(members), sha(manifest)


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("library/alpine@sha256:{victim}", "tag with a digest reference"),
        ("sha256:{victim_id}", "using digest algorithm as name"),
        ("Alpine:3", "must be lowercase"),
        ("{victim_id_hex}", "64-byte hexadecimal"),
    ],
)
def test_a_docker_archive_with_a_name_tag_refuses_is_refused_whole(
    store: Store, tag: str, message: str
) -> None:
    victim = _victim_manifest(store)
    forged = tag.format(
        victim=victim.removeprefix("sha256:"),
        victim_id=VICTIM.image_id.removeprefix("sha256:"),
        victim_id_hex=VICTIM.image_id.removeprefix("sha256:"),
    )
    honest = ImageSpec(tags=["honest/app:1"], layers=[tar_of({"ok": b"1"})])
    forger = ImageSpec(tags=[forged], layers=FORGER.layers, labels=FORGER.labels)
    with pytest.raises(errors.InvalidArgument, match=message):
        load(store, [docker_archive(honest, forger)])
    _assert_only_the_victim(store)
    assert store.inspect(f"library/alpine@{victim}").summary.id == VICTIM.image_id
    assert store.inspect(VICTIM.image_id.removeprefix("sha256:")).summary.id == VICTIM.image_id


def test_an_oci_layout_naming_other_content_by_digest_is_refused(store: Store) -> None:
    victim = _victim_manifest(store)
    archive, _ = oci_layout(FORGER, f"docker.io/library/alpine@{victim}")
    with pytest.raises(errors.InvalidArgument, match="names other content"):
        load(store, [archive])
    _assert_only_the_victim(store)
    assert store.inspect(f"library/alpine@{victim}").summary.id == VICTIM.image_id


def test_an_oci_layout_ref_name_spelled_as_an_image_id_is_refused(store: Store) -> None:
    archive, _ = oci_layout(FORGER, **{"org.opencontainers.image.ref.name": "sha256:" + "a" * 64})
    with pytest.raises(errors.InvalidArgument, match="digest algorithm as name"):
        load(store, [archive])
    _assert_only_the_victim(store)


def test_an_oci_layout_may_name_its_own_content_by_digest(store: Store) -> None:
    spec = ImageSpec(tags=[], layers=[tar_of({"own": b"1"})])
    _, digest = oci_layout(spec)
    archive, _ = oci_layout(spec, f"docker.io/example/own@{digest}")
    loaded = load(store, [archive])
    assert [(image.image_id, image.names) for image in loaded] == [
        (spec.image_id, (f"docker.io/example/own@{digest}",))
    ]


def test_the_store_refuses_a_digest_name_for_other_content(store: Store) -> None:
    victim = _victim_manifest(store)
    other = parse_reference(f"example/app@sha256:{'b' * 64}")
    with store.lease() as lease, pytest.raises(errors.InvalidArgument, match="digest differs"):
        store.commit_target(lease, Descriptor(mt.DOCKER_MANIFEST, victim, 1), [other])
