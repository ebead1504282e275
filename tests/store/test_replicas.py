"""Replicas: several stores (two roots here, each standing for one server
process) on one PostgreSQL catalog and one shared blob directory."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from imagestore import errors
from imagestore.store.blobs import ingest_owner
from imagestore.store.postgres import SINGLETON_KEYS
from imagestore.store.store import Store
from tests.api.conftest import wait_until
from tests.pg import private_cluster
from tests.store.builders import build_image, layer_tar
from tests.store.conftest import replica

MEDIA = "application/octet-stream"
#: seconds before a thread that should have finished is declared stuck (a
#: failure detector for a deadlock, not a wait for a race)
STUCK = 60


def test_a_replica_keeps_its_id_and_names_its_ingests_with_it(tmp_path: Path, url: str) -> None:
    shared = tmp_path / "shared"
    with replica(tmp_path / "a", url, shared) as a:
        first = a._parts.replica_id
        with a.lease() as lease, a.ingest(lease) as ingest:
            ingest.write(b"data")
            names = [p.name for p in a._parts.blobs.ingest_dir.iterdir()]
            assert [ingest_owner(name) for name in names] == [first]
        assert (shared / "sha256").is_dir()
    with replica(tmp_path / "a", url, shared) as again:
        assert again._parts.replica_id == first
    with replica(tmp_path / "b", url, shared) as b:
        assert b._parts.replica_id != first
    assert (tmp_path / "a" / "replica-id").read_text().strip() == first
    assert not (tmp_path / "a" / "blobs").exists()


def test_the_sqlite_catalog_refuses_another_blob_directory(tmp_path: Path) -> None:
    with pytest.raises(errors.OptionInvalid, match="--blob-dir"):
        Store.open(tmp_path / "root", blob_dir=tmp_path / "elsewhere")
    with Store.open(tmp_path / "root"):  # the lock was released
        pass


def test_a_lease_on_one_replica_protects_a_blob_from_the_others_prune(
    pair: tuple[Store, Store],
) -> None:
    a, b = pair
    lease = a.open_lease()
    info = a.put_blob(lease, b"leased on a", MEDIA)
    assert b.prune().deleted_blobs == ()
    assert b.stored(info.digest)
    a.end_lease(lease)  # nothing references it: its own lease's end sweeps it
    assert not b.stored(info.digest)
    assert not a._parts.blobs.exists(info.digest)


def test_a_dead_replicas_leases_expire_and_its_ingests_are_swept(
    pair: tuple[Store, Store],
) -> None:
    a, b = pair
    with a.lease() as lease:
        info = a.put_blob(lease, b"leased by a replica that dies", MEDIA)
        with a.ingest(lease) as ingest:
            ingest.write(b"half written")
            (partial,) = list(a._parts.blobs.ingest_dir.iterdir())
            assert b.prune().stale_ingests == 0  # a is alive: its ingest is its own
            a._parts.replica.stop(forget=False)  # a hangs: no more heartbeats
            wait_until(lambda: a._parts.replica.id not in b._parts.live_replicas())
            result = b.prune()
            assert info.digest in result.deleted_blobs
            assert result.stale_ingests == 1
            assert not partial.exists()
            assert not b._parts.blobs.exists(info.digest)


def test_a_read_in_progress_keeps_its_file_while_another_replica_deletes_the_row(
    pair: tuple[Store, Store],
) -> None:
    a, b = pair
    content = random.Random(1).randbytes(2 << 20)  # incompressible: two chunks or more
    built = build_image(b, [layer_tar({"big": content})], names=["example/app:1"])
    layer = built.layers[0].digest
    with a.lease(reading=True) as lease:
        lease.add(layer)
        chunks = a.read_verified(layer)
        first = next(chunks)  # the reader is mid-stream
        b.remove(["example/app:1"])  # its collection waits for a's heartbeat
        assert b.stored_record(layer) is None  # the row is gone...
        assert a._parts.blobs.exists(layer)  # ...the file stays while a reads it
        rest = b"".join(chunks)
        assert len(first) + len(rest) == a._parts.blobs.size(layer)
    # unread now: the next collection removes the orphan
    assert layer in b.prune().deleted_blobs
    assert not a._parts.blobs.exists(layer)


def test_a_collection_does_not_wait_for_the_others_next_heartbeat(tmp_path: Path, url: str) -> None:
    """The others heartbeat when they hear of a collection (a notification),
    not an hour later at their next scheduled beat."""
    shared = tmp_path / "shared"
    slow = {"heartbeat_interval": 3600.0, "replica_timeout": 7200.0}
    with (
        replica(tmp_path / "a", url, shared, **slow),
        replica(tmp_path / "b", url, shared, **slow) as b,
    ):
        built = build_image(b, [layer_tar({"f": b"x"})], names=["example/app:1"])
        layer = built.layers[0].digest
        pool = ThreadPoolExecutor(1)
        try:
            pool.submit(b.remove, ["example/app:1"]).result(timeout=STUCK)
        finally:
            pool.shutdown(wait=False)  # if stuck, b's close ends its wait
        assert not b._parts.blobs.exists(layer)


def test_a_hung_replica_does_not_stall_a_removal_it_leaves_the_files_for_later(
    tmp_path: Path, url: str
) -> None:
    """A replica that has stopped heartbeating but is not yet counted dead may
    still be reading: the collection deletes the rows, waits two heartbeat
    intervals for it, then returns and leaves the files as orphans."""
    shared = tmp_path / "shared"
    settings = {"heartbeat_interval": 0.05, "replica_timeout": 3600.0}
    with (
        replica(tmp_path / "a", url, shared, **settings) as a,
        replica(tmp_path / "b", url, shared, **settings) as b,
    ):
        built = build_image(b, [layer_tar({"f": b"x"})], names=["example/app:1"])
        layer = built.layers[0].digest
        a._parts.replica.stop(forget=False)  # hung: alive for another hour
        pool = ThreadPoolExecutor(1)
        try:
            pool.submit(b.remove, ["example/app:1"]).result(timeout=STUCK)
        finally:
            pool.shutdown(wait=False)
        assert b.stored_record(layer) is None
        assert b._parts.blobs.exists(layer)  # an orphan now: a may be reading it


def test_after_a_catalog_outage_longer_than_the_timeout_no_replica_is_counted_dead_at_once(
    tmp_path: Path,
) -> None:
    """Everyone's heartbeats stop while PostgreSQL is down: the first replica
    back must not take the others' old heartbeats for their death (and sweep
    their leases) before its own have gone through for a whole timeout."""
    cluster = private_cluster()
    try:
        url = cluster.create_database("outage")
        shared = tmp_path / "shared"
        settings = {"heartbeat_interval": 0.05, "replica_timeout": 3.0}
        with (
            replica(tmp_path / "a", url, shared, **settings) as a,
            replica(tmp_path / "b", url, shared, **settings) as b,
        ):
            info = a.put_blob(a.open_lease(), b"leased on a, which stays quiet", MEDIA)
            a._parts.replica.stop(forget=False)  # a sends no heartbeat after the outage
            cluster.crash()
            down = time.monotonic()
            wait_until(lambda: b._parts.replica._steady_since is None)  # a beat failed
            # the outage outlasts the timeout (a wait for time itself, not for a race)
            wait_until(lambda: time.monotonic() - down > settings["replica_timeout"])
            cluster.start()
            wait_until(lambda: b._parts.replica._steady_since is not None)  # b is back
            assert a._parts.replica.id in b._parts.live_replicas()
            assert info.digest not in b.prune().deleted_blobs
            assert b.stored(info.digest)
            wait_until(lambda: a._parts.replica.id not in b._parts.live_replicas())
            assert info.digest in b.prune().deleted_blobs  # now a counts as dead
    finally:
        cluster.stop()


def advisory_lock_held(url: str, key: int) -> bool:
    with psycopg.connect(url, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND ((classid::bigint << 32) | objid::bigint) = %s",
            (key,),
        ).fetchone()
    return row is not None and row[0] > 0


def test_a_prune_on_one_replica_refuses_a_prune_on_another(
    pair: tuple[Store, Store], url: str
) -> None:
    a, b = pair
    with b.lease() as lease:
        b.put_blob(lease, b"garbage once the lease ends", MEDIA)
    with ThreadPoolExecutor(1) as pool:
        # a's prune takes the cluster's prune lock, then waits for the writers'
        # lock, which this thread holds through b
        with b._parts.catalog.transaction():
            running = pool.submit(a.prune)
            wait_until(lambda: advisory_lock_held(url, SINGLETON_KEYS["prune"]))
            with pytest.raises(errors.PruneRunning, match="already running"):
                b.prune()
        assert running.result(timeout=STUCK).dry_run is False
    assert not advisory_lock_held(url, SINGLETON_KEYS["prune"])
    assert b.prune().deleted_blobs == ()  # free again


def test_a_check_on_one_replica_refuses_a_check_on_another(pair: tuple[Store, Store]) -> None:
    a, b = pair
    build_image(a, [layer_tar({"a": b"1"})], names=["example/app:1"])
    running = a.check_stream()
    next(running)  # a's check holds the cluster's check lock
    with pytest.raises(errors.CheckRunning, match="another replica") as refused:
        b.check()
    assert refused.value.retry_after is not None
    running.close()  # stopping it frees the lock
    assert b.check().ok


def test_a_read_that_leases_after_another_replica_deleted_the_row_finds_nothing(
    pair: tuple[Store, Store],
) -> None:
    a, b = pair
    built = build_image(b, [layer_tar({"a": b"gone"})], names=["example/app:1"])
    layer = built.layers[0].digest
    b.remove(["example/app:1"])
    with a.lease(reading=True) as lease:
        lease.add(layer)
        with pytest.raises(errors.BlobNotFound):
            next(a.read_verified(layer))
        with pytest.raises(errors.BlobNotFound):
            a.read_blob(layer)
