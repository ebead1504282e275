"""Load and Save against independent producers and readers: umoci, skopeo, and
archives in the three formats (legacy docker save, Docker 25+ OCI style, OCI
layout), plus hostile archives."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagestore import errors
from imagestore.archive.load import LoadProgress, load
from imagestore.archive.save import save
from imagestore.oci import mediatypes as mt
from imagestore.store.store import Store
from tests.archives import sha, tar_of
from tests.store.builders import build_image, layer_tar
from tests.tools import require, run


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "root") as opened:
        yield opened


def tar_dir(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(directory)))
    return buffer.getvalue()


def chunks(data: bytes, size: int = 65536) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def saved(store: Store, *items: str) -> bytes:
    return b"".join(save(store, list(items)))


def oci_layout_config(layout: Path, tag: str | None = None) -> tuple[str, list[str]]:
    """(config digest, diff_ids) of an OCI layout entry, read straight from its files."""
    index = json.loads((layout / "index.json").read_text())
    entries = index["manifests"]
    if tag is not None:
        entries = [e for e in entries if e.get("annotations", {}).get(mt_ref()) == tag]
    manifest = json.loads((layout / "blobs/sha256" / entries[0]["digest"][7:]).read_text())
    config_digest = manifest["config"]["digest"]
    config = json.loads((layout / "blobs/sha256" / config_digest[7:]).read_text())
    return config_digest, config["rootfs"]["diff_ids"]


def mt_ref() -> str:
    return "org.opencontainers.image.ref.name"


def docker_archive_config(archive: bytes) -> tuple[str, list[str]]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        entry = json.loads(tar.extractfile("manifest.json").read())[0]  # type: ignore[union-attr]
        config = tar.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
    return sha(config), json.loads(config)["rootfs"]["diff_ids"]


# ---- independent producers ------------------------------------------------------


@pytest.fixture
def umoci_layout(tmp_path: Path) -> Path:
    """An OCI layout made by umoci: a base image plus one inserted layer."""
    umoci = require("umoci")
    layout = tmp_path / "layout"
    rootless = [] if os.geteuid() == 0 else ["--rootless"]
    run(umoci, "init", "--layout", layout)
    run(umoci, "new", "--image", f"{layout}:base")
    config = ["--os", "linux", "--architecture", "amd64", "--config.label", "made.by=umoci"]
    run(umoci, "config", "--image", f"{layout}:base", *config, "--tag", "base-amd64")
    source = tmp_path / "src" / "app"
    source.mkdir(parents=True)
    (source / "hello.sh").write_text("#!/bin/sh\necho hello\n")
    (source / "big.bin").write_bytes(os.urandom(300_000))
    run(
        umoci, "insert", *rootless, "--image", f"{layout}:base-amd64", "--tag", "v1", source, "/app"
    )
    return layout


def test_an_oci_layout_made_by_umoci_loads_with_its_config_digest(
    store: Store, umoci_layout: Path
) -> None:
    config_digest, diff_ids = oci_layout_config(umoci_layout, "v1")
    events: list[LoadProgress] = []
    loaded = load(store, chunks(tar_dir(umoci_layout)), progress=events.append)
    ids = {image.image_id for image in loaded}
    assert config_digest in ids
    details = store.inspect(config_digest)
    assert list(details.diff_ids) == diff_ids
    assert details.summary.labels == {"made.by": "umoci"}
    assert any(e.action == "stored" for e in events)
    assert store.check().ok


def test_a_docker_archive_written_by_skopeo_loads(
    store: Store, umoci_layout: Path, tmp_path: Path
) -> None:
    skopeo = require("skopeo")
    archive = tmp_path / "da.tar"
    run(skopeo, "copy", f"oci:{umoci_layout}:v1", f"docker-archive:{archive}:example/da:v1")
    config_digest, diff_ids = docker_archive_config(archive.read_bytes())
    loaded = load(store, chunks(archive.read_bytes()))
    assert [(image.image_id, image.names) for image in loaded] == [
        (config_digest, ("docker.io/example/da:v1",))  # canonical: the API adds familiar
    ]
    details = store.inspect("example/da:v1")
    assert list(details.diff_ids) == diff_ids
    # skopeo writes uncompressed layers: they were gzip-compressed on the way in.
    assert all(layer.media_type == mt.DOCKER_LAYER_GZIP for layer in details.layers)
    assert all(
        store._parts.blobs.read_bytes(layer.digest)[:2] == b"\x1f\x8b" for layer in details.layers
    )
    assert store.check().ok


# ---- independent readers ----------------------------------------------------------


def test_skopeo_reads_a_saved_archive_both_ways(store: Store, tmp_path: Path) -> None:
    skopeo = require("skopeo")
    layers = [layer_tar({"a": os.urandom(20_000)}), layer_tar({"b": b"bee"})]
    built = build_image(store, layers, names=["example/app:1"], oci=False)
    archive = tmp_path / "saved.tar"
    archive.write_bytes(saved(store, "example/app:1"))
    diff_ids = list(store.inspect("example/app:1").diff_ids)

    inspected = json.loads(run(skopeo, "inspect", f"docker-archive:{archive}"))
    assert inspected["Architecture"] == "amd64"
    config = json.loads(run(skopeo, "inspect", "--config", f"docker-archive:{archive}"))
    assert config["rootfs"]["diff_ids"] == diff_ids

    raw = json.loads(run(skopeo, "inspect", "--raw", f"docker-archive:{archive}"))
    assert raw["config"]["digest"] == built.image_id

    # --preserve-digests: without it skopeo converts the config to OCI (new digest).
    from_da = tmp_path / "from-da"
    run(skopeo, "copy", "--preserve-digests", f"docker-archive:{archive}", f"oci:{from_da}:x")
    assert oci_layout_config(from_da) == (built.image_id, diff_ids)
    run(skopeo, "copy", f"oci-archive:{archive}:1", f"oci:{tmp_path / 'from-oci'}:x")
    assert oci_layout_config(tmp_path / "from-oci") == (built.image_id, diff_ids)


def test_load_then_save_then_load_keeps_config_digests_and_diff_ids(
    store: Store, umoci_layout: Path, tmp_path: Path
) -> None:
    config_digest, diff_ids = oci_layout_config(umoci_layout, "v1")
    load(store, chunks(tar_dir(umoci_layout)))
    store.tag(config_digest, "round/trip:1")
    archive = saved(store, "round/trip:1")
    with Store.open(tmp_path / "second") as second:
        loaded = load(second, chunks(archive))
        assert [(i.image_id, i.names) for i in loaded] == [
            (config_digest, ("docker.io/round/trip:1",))
        ]
        assert list(second.inspect("round/trip:1").diff_ids) == diff_ids
        assert second.check().ok


# ---- the three formats, made here -------------------------------------------------


def _image_parts() -> tuple[list[bytes], bytes]:
    layers = [layer_tar({"etc/hostname": b"box\n"}), layer_tar({"app": os.urandom(5000)})]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/app"]},
            "rootfs": {"type": "layers", "diff_ids": [sha(layer) for layer in layers]},
            "history": [{"created_by": "a"}, {"created_by": "b"}],
        }
    ).encode()
    return layers, config


def test_a_legacy_docker_save_archive_loads(store: Store) -> None:
    layers, config = _image_parts()
    members = {
        f"{sha(config)[7:]}.json": config,
        "l1/VERSION": b"1.0",
        "l1/json": b'{"id": "l1"}',
        "l1/layer.tar": layers[0],
        "l2/layer.tar": layers[1],
        "repositories": b'{"legacy/app": {"1": "l2"}}',
        "manifest.json": json.dumps(
            [
                {
                    "Config": f"{sha(config)[7:]}.json",
                    "RepoTags": ["legacy/app:1"],
                    "Layers": ["l1/layer.tar", "l2/layer.tar"],
                }
            ]
        ).encode(),
    }
    loaded = load(store, chunks(tar_of(members), 1000))
    assert [(i.image_id, i.names) for i in loaded] == [(sha(config), ("docker.io/legacy/app:1",))]
    assert store.inspect("legacy/app:1").summary.size == sum(len(layer) for layer in layers)


def test_a_docker_25_archive_loads_and_reuses_stored_layers(store: Store) -> None:
    layers, config = _image_parts()
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": mt.OCI_LAYER, "digest": sha(x), "size": len(x)} for x in layers],
    }
    manifest_bytes = json.dumps(manifest).encode()
    entry = {
        "mediaType": mt.OCI_MANIFEST,
        "digest": sha(manifest_bytes),
        "size": len(manifest_bytes),
    }
    entry["annotations"] = {
        "io.containerd.image.name": "docker.io/new/app:2",
        "org.opencontainers.image.ref.name": "2",
    }
    index = {"schemaVersion": 2, "manifests": [entry]}
    members = {f"blobs/sha256/{sha(x)[7:]}": x for x in [*layers, config, manifest_bytes]}
    members |= {
        "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
        "index.json": json.dumps(index).encode(),
        "manifest.json": json.dumps(
            [
                {
                    "Config": f"blobs/sha256/{sha(config)[7:]}",
                    "RepoTags": ["new/app:2"],
                    "Layers": [f"blobs/sha256/{sha(x)[7:]}" for x in layers],
                }
            ]
        ).encode(),
    }
    archive = tar_of(members)
    first = load(store, chunks(archive))
    assert [(i.image_id, i.names) for i in first] == [(sha(config), ("docker.io/new/app:2",))]
    events: list[LoadProgress] = []
    again = load(store, chunks(archive), progress=events.append)
    assert again[0].image_id == sha(config)
    assert [e.action for e in events if e.path.startswith("blobs") and e.action != "kept"] == [
        "reused",
        "reused",
    ]


# ---- hostile archives ---------------------------------------------------------------


def _with_link(target: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("sub/layer.tar")
        info.type = tarfile.SYMTYPE
        info.linkname = target
        tar.addfile(info)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("archive", "error", "message"),
    [
        (tar_of({"../escape.tar": b"x" * 600}), errors.MalformedContent, "escapes the archive"),
        (tar_of({"/abs/layer.tar": b"x" * 600}), errors.MalformedContent, "escapes the archive"),
        (_with_link("/etc/passwd"), errors.MalformedContent, "points outside the archive"),
        (_with_link("../../etc/passwd"), errors.MalformedContent, "points outside the archive"),
        (tar_of({f"blobs/sha256/{'0' * 64}": b"no" * 400}), errors.DigestMismatch, "hashes to"),
        (tar_of({"blobs/sha256/xyz": b"x"}), errors.MalformedContent, "not a sha256 digest"),
        (tar_of({"manifest.json": b"[]"}), errors.MalformedContent, "lists no images"),
        (tar_of({"hello.txt": b"hi"}), errors.MalformedContent, "neither manifest.json"),
        (b"this is not a tar at all" * 40, errors.MalformedContent, "not a tar archive"),
        (tar_of({"a.tar": os.urandom(40_000)})[:20_000], errors.MalformedContent, "end of data"),
    ],
)
def test_hostile_archives_are_refused_and_leave_nothing(
    store: Store, archive: bytes, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        load(store, chunks(archive, 4096))
    assert set(store._parts.blobs.digests()) == set()
    assert list(store._parts.blobs.ingest_dir.iterdir()) == []


def test_a_manifest_naming_a_missing_layer_is_refused(store: Store) -> None:
    layers, config = _image_parts()
    members = {
        "c.json": config,
        "l1.tar": layers[0],
        "manifest.json": json.dumps(
            [{"Config": "c.json", "Layers": ["l1.tar", "l2.tar"]}]
        ).encode(),
    }
    with pytest.raises(
        errors.MalformedContent, match=r"'l2\.tar' is referenced but not in the archive"
    ):
        load(store, chunks(tar_of(members)))
    assert set(store._parts.blobs.digests()) == set()


def test_a_cancelled_load_leaves_nothing(store: Store) -> None:
    layers, config = _image_parts()
    archive = tar_of({"c.json": config, "l1.tar": layers[0] * 20, "l2.tar": layers[1]})

    def cut_short() -> Iterator[bytes]:
        yield archive[: len(archive) // 2]
        raise KeyboardInterrupt  # the client went away

    with pytest.raises(KeyboardInterrupt):
        load(store, cut_short())
    assert set(store._parts.blobs.digests()) == set()
    assert list(store._parts.blobs.ingest_dir.iterdir()) == []


def test_a_load_larger_than_the_free_disk_is_refused_up_front(store: Store) -> None:
    with pytest.raises(errors.ResourceExhausted, match="only"):
        load(store, iter([b""]), declared_size=1 << 60)


def test_save_refuses_to_ship_a_corrupted_blob(store: Store) -> None:
    built = build_image(store, [layer_tar({"a": b"1" * 10_000})], names=["c:1"])
    path = store._parts.blobs.path(built.layers[0].digest)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(errors.DataLoss, match="is corrupt"):
        saved(store, "c:1")


def test_save_streams_chunks_of_at_most_1_mib(store: Store) -> None:
    build_image(store, [layer_tar({"big": os.urandom(3 << 20)})], names=["big:1"])
    sizes = [len(chunk) for chunk in save(store, ["big:1"])]
    assert max(sizes) <= 1 << 20
    assert len(sizes) >= 3
