"""What a crash or a bad disk leaves in the store is repaired, through the real server.

Bounds enforced:

- a layer file present without its catalog record (a kill between an ingest's
  rename and its record) does not make a pull fail: the pull downloads the layer
  once more and records it; Check then finds nothing;
- a blob Check reports corrupt (with a detail that says to pull or load it again)
  is written again by the next pull (downloaded again, not "Already exists") or
  load of content containing it; Check then finds nothing;
- start-up removes a blob file without a record once it is older than the grace
  period (1 hour), and keeps a younger one (it may be another process's commit);
- the root is 0700, ``catalog.db``, its ``-wal``/``-shm`` files and ``lock`` are
  0600, blob files 0400;
- while a repair runs, health and an Inspect of the seed answer within 2 s.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagestore.v1 import imagestore_pb2 as pb
from tests.archives import ImageSpec, docker_archive, tar_of
from tests.hostile.conftest import SEED, MiB, Target, load_archive, start_target
from tests.registry.conftest import pull
from tests.registry.hostile import HostileRegistry, Image, make_image

#: what start-up leaves alone (imagestore.store.store.ORPHAN_GRACE_PERIOD)
GRACE = 3600.0
#: the seed as the hostile conftest loads it: loading it again stores the same blobs
SEED_SPEC = ImageSpec(tags=[SEED], layers=[tar_of({"etc/seed": b"seed" * 256})])


@pytest.fixture
def server_options() -> tuple[str, ...]:
    return ("--registry-backoff", "0.01", "--registry-attempts", "2")


@pytest.fixture
def hostile() -> Iterator[HostileRegistry]:
    with HostileRegistry().running() as registry:
        yield registry


def blob_path(root: Path, digest: str) -> Path:
    return root / "blobs" / "sha256" / digest.removeprefix("sha256:")


def plant(root: Path, data: bytes, digest: str) -> Path:
    """A blob file with no record, as a kill right after an ingest's rename leaves it."""
    path = blob_path(root, digest)
    path.write_bytes(data)
    path.chmod(0o400)
    return path


def corrupt(path: Path) -> None:
    good = path.read_bytes()
    path.chmod(0o600)
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    path.chmod(0o400)


def check(target: Target) -> list[pb.CheckProblem]:
    """The problems a whole Check stream reports."""
    report = target.stub.Check(pb.CheckRequest(), timeout=60)
    return [response.problem for response in report if response.HasField("problem")]


def app_image() -> Image:
    return make_image([tar_of({"etc/app": b"app" * 2000})])


def forget(target: Target, name: str) -> None:
    """Untag what a test pulled and prune, so assert_clean sees the seed alone."""
    target.stub.Remove(pb.RemoveRequest(images=[name], force=True), timeout=30)
    target.stub.Prune(pb.PruneRequest(), timeout=30)


def test_a_pull_writes_a_layer_whose_file_is_there_without_its_record(
    target: Target, hostile: HostileRegistry
) -> None:
    image = app_image()
    hostile.add_image("team/app", "1", image)
    (layer,) = image.layer_digests
    plant(target.server.root, image.layers[0], layer)
    name = f"{hostile.host}/team/app:1"

    with target.watch() as seen:
        pulled = pull(target.stub, name)
    seen.assert_within(rss=64 * MiB, threads=12)

    assert list(pulled.last.image_ids) == [image.config_digest]
    assert hostile.downloads(layer) == 1  # the file did not count as stored
    assert check(target) == []
    forget(target, name)
    target.assert_clean()


def test_a_pull_replaces_a_layer_check_found_corrupt(
    target: Target, hostile: HostileRegistry
) -> None:
    image = app_image()
    hostile.add_image("team/app", "1", image)
    (layer,) = image.layer_digests
    name = f"{hostile.host}/team/app:1"
    pull(target.stub, name)
    corrupt(blob_path(target.server.root, layer))

    (problem,) = check(target)
    assert (problem.kind, problem.subject) == ("corrupt-blob", layer)
    assert "pull or load an image that contains it" in problem.detail

    with target.watch() as seen:
        again = pull(target.stub, name)
    seen.assert_within(rss=64 * MiB, threads=12)
    assert "Already exists" not in again.statuses(layer[7:19])
    assert hostile.downloads(layer) == 2
    assert blob_path(target.server.root, layer).read_bytes() == image.layers[0]
    assert check(target) == []
    forget(target, name)
    target.assert_clean()


def test_a_load_replaces_a_layer_check_found_corrupt(target: Target) -> None:
    details = target.stub.Inspect(pb.InspectRequest(image=SEED), timeout=30)
    (layer,) = details.layers
    corrupt(blob_path(target.server.root, layer.digest))
    (problem,) = check(target)
    assert (problem.kind, problem.subject) == ("corrupt-blob", layer.digest)

    with target.watch() as seen:
        load_archive(target.stub, docker_archive(SEED_SPEC))
    seen.assert_within(rss=64 * MiB, threads=12)

    assert check(target) == []
    target.assert_clean()


def test_start_up_removes_an_old_orphan_and_keeps_a_young_one(tmp_path: Path) -> None:
    root = tmp_path / "root"
    server, channel, _ = start_target(root)
    channel.close()
    assert server.stop() == 0
    old, young = (make_image([tar_of({"etc/x": text * 999})]) for text in (b"old", b"young"))
    old_path = plant(root, old.layers[0], old.layer_digests[0])
    young_path = plant(root, young.layers[0], young.layer_digests[0])
    long_ago = time.time() - GRACE - 600
    os.utime(old_path, (long_ago, long_ago))

    server, channel, target = start_target(root)
    try:
        assert not old_path.exists()
        assert young_path.exists()
        assert check(target) == []  # an orphan is garbage, not damage
        report = list(target.stub.Check(pb.CheckRequest(), timeout=60))
        unrecorded = [r.unrecorded_blob for r in report if r.HasField("unrecorded_blob")]
        assert unrecorded == [young.layer_digests[0]]
        assert report[-1].summary.unrecorded_blobs == 1
        target.assert_clean()
    finally:
        channel.close()
        assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]


def test_the_grace_period_is_a_server_option(tmp_path: Path) -> None:
    root = tmp_path / "root"
    server, channel, _ = start_target(root)
    channel.close()
    assert server.stop() == 0
    image = make_image([tar_of({"etc/x": b"minutes" * 999})])
    path = plant(root, image.layers[0], image.layer_digests[0])
    minutes_ago = time.time() - 120
    os.utime(path, (minutes_ago, minutes_ago))
    server, channel, target = start_target(root)  # the default hour spares it
    channel.close()
    assert server.stop() == 0
    assert path.exists()
    server, channel, target = start_target(root, "--orphan-grace-period", "60")
    try:
        assert not path.exists()
        target.assert_clean()
    finally:
        channel.close()
        assert server.stop() == 0, "".join(server.stderr_lines)[-3000:]


def test_the_store_is_private(target: Target) -> None:
    root = target.server.root
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    for name in ("catalog.db", "catalog.db-wal", "catalog.db-shm", "lock"):
        assert stat.S_IMODE((root / name).stat().st_mode) == 0o600, name
    blobs = list((root / "blobs" / "sha256").iterdir())
    assert blobs
    assert {stat.S_IMODE(path.stat().st_mode) for path in blobs} == {0o400}
