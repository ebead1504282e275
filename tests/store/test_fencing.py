"""The lease fence: a replica that stopped heartbeating long enough to be counted
dead (paused, frozen, cut off) must not commit, once it resumes, what relied on
its leases: the others ignored or forgot its lease rows and may have collected
the blobs they held (docs/design.md §4, Replicas and Leases). Two stores stand
for two server processes on one PostgreSQL catalog and one blob directory; the
tests wait on conditions (a replica counted dead, a commit parked at a gate),
never for a time."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

import pytest

from imagestore import errors
from imagestore.oci.references import parse_reference
from imagestore.store.catalog import Catalog
from imagestore.store.store import Store
from tests.api.conftest import wait_until
from tests.store.builders import build_image, layer_tar

MEDIA = "application/octet-stream"
#: seconds before a thread that should have moved on is declared stuck (a
#: failure detector for a deadlock, not a wait for a race)
STUCK = 60


class Gate:
    """Stands in for a store's GC lock, which a commit takes right before its
    transaction: says when a commit has reached it and holds it there until
    opened (the pause of a replica between its checks and its commit)."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self.reached = threading.Event()
        self.opened = threading.Event()

    def __enter__(self) -> bool:
        self.reached.set()
        if not self.opened.wait(STUCK):
            raise AssertionError("the gate was never opened")
        return self._lock.__enter__()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._lock.__exit__(kind, exc, tb)


def count_dead(a: Store, b: Store) -> None:
    """Stop ``a``'s heartbeats (a hangs, its rows stay) and wait until ``b``
    counts it dead."""
    a._parts.replica.stop(forget=False)
    wait_until(lambda: a._parts.replica.id not in b._parts.live_replicas())


def test_an_image_commit_whose_lease_was_forgotten_commits_nothing(
    pair: tuple[Store, Store],
) -> None:
    a, b = pair
    lease = a.open_lease()
    built = build_image(a, [layer_tar({"f": b"ingested on a"})], commit=False, lease=lease)
    needed = {built.manifest.digest, built.image_id, *(layer.digest for layer in built.layers)}
    assert all(b.stored(digest) for digest in needed)

    # a's commit passes its checks, then a pauses right before its transaction
    gate = Gate(a._parts.collector.lock)
    a._parts.collector.lock = gate  # type: ignore[assignment]
    pool = ThreadPoolExecutor(1)
    try:
        commit = pool.submit(
            a.commit_target, lease, built.manifest, [parse_reference("example/app:1")]
        )
        assert gate.reached.wait(STUCK)
        count_dead(a, b)
        pruned = b.prune()  # forgets a's leases, collects what they held
        assert needed <= set(pruned.deleted_blobs)
        assert not any(a._parts.blobs.exists(digest) for digest in needed)
        gate.opened.set()  # a resumes
        with pytest.raises(errors.LeaseExpired, match="expired") as refused:
            commit.result(timeout=STUCK)
    finally:
        gate.opened.set()
        pool.shutdown(wait=False)
    assert refused.value.metadata == {"replica": a._parts.replica.id, "lease": str(lease.id)}

    # nothing committed: no image, no name, no blob row pointing at a missing file
    assert b.list_images(show_all=True).images == ()
    with pytest.raises(errors.ImageNotFound):
        b.inspect("example/app:1")
    assert not any(b.stored_record(digest) for digest in needed)
    # the expired lease takes no new row either: it would protect digests again
    with pytest.raises(errors.LeaseExpired, match="expired"):
        a.put_blob(lease, b"more under the expired lease", MEDIA)
    with b._parts.catalog.reading() as db:
        assert db.leased([a._parts.replica.id]) == set()
    a.end_lease(lease)
    report = b.check()
    assert report.ok, report.problems


def test_a_blob_record_of_a_replica_counted_dead_commits_nothing(
    pair: tuple[Store, Store],
) -> None:
    """No prune has forgotten a's rows yet, but b counts a dead and may already
    have collected what they hold (a collection other than Prune ignores a dead
    replica's rows without deleting them): a's record commit is refused too."""
    a, b = pair
    lease = a.open_lease()
    a.put_blob(lease, b"the lease has rows", MEDIA)
    data = b"written before a hangs"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with a.ingest(lease) as ingest:
        ingest.write(data)
        count_dead(a, b)
        with pytest.raises(errors.LeaseExpired, match="expired"):
            a.commit(ingest, lease, MEDIA)
    assert b.stored_record(digest) is None
    a.end_lease(lease)
    report = b.check()
    assert report.ok, report.problems


def test_a_lease_is_held_while_its_rows_are_there_and_its_replica_heard_from(
    catalog: Catalog,
) -> None:
    """The fence's question, on every catalog (the store asks it on a shared one)."""
    hour = 3600 * 10**9
    layer = "sha256:" + "1" * 64
    with catalog.transaction(bookkeeping=True) as db:
        assert not db.holds_lease("r1", 1)  # nothing added: no rows
        db.add_lease("r1", 1, [layer])
        assert db.holds_lease("r1", 1)
        assert not db.holds_lease("r1", 2)
        assert not db.holds_lease("r2", 1)
        assert not db.holds_lease("r1", 1, heard_within=hour)  # never heard from
        db.heartbeat("r1", db.collector_epoch(), ())
        assert db.holds_lease("r1", 1, heard_within=hour)
        db.release_lease("r1", 1)
        assert not db.holds_lease("r1", 1, heard_within=hour)
        db.add_lease("r1", 3, [layer])
        db.forget_replica("r1")  # another replica counted it dead and forgot it
        assert not db.holds_lease("r1", 3)
