"""Three real replicas behind gRPC round_robin answer as one store.

Three server processes share one PostgreSQL database and one blob directory
(docs/design.md §4, Replicas); the Python client reaches them through one target
naming the three addresses, which its channel goes round_robin over. Many clients'
worth of work runs at once through it: pulls from and pushes to a real registry,
loads, tags, removes and prunes. Then:

- the three serve lines differ in their root alone (one catalog, one blob
  directory);
- each replica answered some of those calls, and together exactly as many of
  each method as were made (their JSON access lines);
- each replica's own Check is clean, with no unrecorded blob;
- each replica, asked on its own connection, lists exactly the names the
  acknowledged calls leave and gives each the image it was given; a removed
  name is not found;
- what was pushed is in the registry: each manifest hashes to the digest the
  push returned, and every blob it names is there;
- a watcher on the first replica received every change, in commit order with no
  gap in the cursors, and then the tags made through the other two replicas'
  own connections.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from imagestore import errors
from imagestore.client import ImageStoreClient
from imagestore.v1 import imagestore_pb2 as pb
from tests.api.conftest import wait_until
from tests.api.scale_out import Replica, ReplicaSet, replica_set
from tests.api.test_events import KIND, Watcher, last_cursor
from tests.archives import ImageSpec, docker_archive
from tests.pg import Cluster
from tests.registry.distribution import Distribution, start_distribution
from tests.store.builders import layer_tar

#: images pulled from the registry, and images loaded from archives
SOURCES = 6
LOADS = 6
WAIT = 120.0
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)


@dataclass
class Ledger:
    """What the acknowledged calls leave: names and their image IDs, names that
    must be gone, pushed references and their digests; and the calls made."""

    present: dict[str, str] = field(default_factory=dict)
    absent: set[str] = field(default_factory=set)
    pushed: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    prunes_refused: int = 0
    reclaimed: int = 0

    def __post_init__(self) -> None:
        self.lock = threading.Lock()

    def called(self, method: str) -> None:
        with self.lock:
            self.calls[method] += 1

    def named(self, name: str, image_id: str) -> None:
        with self.lock:
            self.present[name] = image_id
            self.absent.discard(name)

    def removed(self, name: str) -> None:
        with self.lock:
            self.present.pop(name, None)
            self.absent.add(name)


@dataclass
class Work:
    """The calls, each through the round_robin client, each counted."""

    client: ImageStoreClient
    ledger: Ledger
    registry: str

    def load(self, spec: ImageSpec) -> str:
        self.ledger.called("Load")
        result = self.client.load(io.BytesIO(docker_archive(spec)), timeout=WAIT).result()
        [image] = result.images
        for name in image.names:
            self.ledger.named(name.familiar, image.id)
        return image.id

    def pull(self, ref: str) -> str:
        self.ledger.called("Pull")
        result = self.client.pull(ref, timeout=WAIT).result()
        [image_id] = result.image_ids
        self.ledger.named(ref, image_id)
        return image_id

    def tag(self, source: str, target: str, image_id: str) -> None:
        self.ledger.called("Tag")
        self.client.tag(source, target)
        self.ledger.named(target, image_id)
        with self.ledger.lock:
            self.ledger.tags.append(target)

    def push(self, ref: str) -> None:
        self.ledger.called("Push")
        result = self.client.push(ref, timeout=WAIT).result()
        with self.ledger.lock:
            self.ledger.pushed[ref] = result.digest

    def remove(self, name: str) -> None:
        self.ledger.called("Remove")
        [result] = self.client.remove([name])
        assert result.error is None, result
        self.ledger.removed(name)

    def prune(self) -> bool:
        """One prune; False when another replica's prune was running."""
        self.ledger.called("Prune")
        try:
            result = self.client.prune(timeout=WAIT)
        except errors.PruneRunning:
            with self.ledger.lock:
                self.ledger.prunes_refused += 1
            return False
        with self.ledger.lock:
            self.ledger.reclaimed += result.reclaimed_bytes
        return True

    # ---- the chains run at once ------------------------------------------------

    def publish(self, spec: ImageSpec, ref: str) -> None:
        """A source for the pulls: loaded, pushed, then removed from the store."""
        self.load(spec)
        self.push(ref)
        self.remove(ref)

    def pull_tag_push_remove(self, number: int) -> None:
        ref = f"{self.registry}/scale/src{number}:1"
        image_id = self.pull(ref)
        self.tag(ref, f"scale/keep{number}:1", image_id)
        self.tag(ref, f"scale/gone{number}:1", image_id)
        out = f"{self.registry}/scale/out{number}:1"
        self.tag(f"scale/keep{number}:1", out, image_id)
        self.push(out)
        self.remove(f"scale/gone{number}:1")

    def load_tag_remove(self, spec: ImageSpec, number: int) -> None:
        name = spec.tags[0]
        image_id = self.load(spec)
        self.tag(name, f"scale/loaded{number}:extra", image_id)
        if number % 2:  # the whole image goes: its layers become garbage for the prunes
            self.remove(name)
            self.remove(f"scale/loaded{number}:extra")


def run_at_once(jobs: Sequence[Callable[[], None]], work: Work) -> None:
    """The jobs on a pool while two pruners prune all along (each refused while
    the other's prune runs, on whichever replica); any failure fails."""
    done = threading.Event()

    def prune_until_done() -> None:
        while not done.is_set():
            if not work.prune():
                done.wait(0.05)  # the other replica's prune: try again shortly

    with ThreadPoolExecutor(10) as pool:
        pruning = [pool.submit(prune_until_done) for _ in range(2)]
        try:
            futures = [pool.submit(job) for job in jobs]
            for future in futures:
                future.result(timeout=WAIT * 2)
        finally:
            done.set()
        for pruner in pruning:
            pruner.result(timeout=WAIT)


def images(seed: int, count: int, prefix: str) -> list[ImageSpec]:
    """Images sharing a base layer, each with a unique layer."""
    rng = random.Random(seed)
    base = layer_tar({"etc/base": rng.randbytes(32 << 10)})
    return [
        ImageSpec(
            tags=[f"{prefix}{n}:1"],
            layers=[base, layer_tar({f"app{n}": rng.randbytes(256 << 10)})],
        )
        for n in range(count)
    ]


def registry_get(url: str, accept: str = "") -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return int(answer.status), bytes(answer.read())


def assert_pushed(registry: str, ref: str, digest: str) -> None:
    """The registry serves ``ref``'s manifest, hashing to ``digest``, and its blobs."""
    repository, _, tag = ref.removeprefix(registry + "/").rpartition(":")
    base = f"http://{registry}/v2/{repository}"
    status, body = registry_get(f"{base}/manifests/{tag}", MANIFEST_TYPES)
    assert status == 200
    assert "sha256:" + hashlib.sha256(body).hexdigest() == digest, ref
    manifest = json.loads(body)
    for blob in [manifest["config"], *manifest["layers"]]:
        status, data = registry_get(f"{base}/blobs/{blob['digest']}")
        assert status == 200
        assert "sha256:" + hashlib.sha256(data).hexdigest() == blob["digest"]


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Distribution]:
    running = start_distribution(tmp_path / "registry")
    yield running
    running.stop()


@pytest.mark.slow
def test_three_replicas_behind_round_robin_serve_as_one_store(
    postgres_cluster: Cluster, tmp_path: Path, registry: Distribution
) -> None:
    host = registry.host
    names = ["replica-0", "replica-1", "replica-2"]
    with replica_set(postgres_cluster, tmp_path, names) as replicas:
        first, second, third = replicas.live()
        # one deployment: the same serve line but for each replica's own root
        lines = {ReplicaSet.command_line(r).replace(str(r.root), "ROOT") for r in replicas.live()}
        assert len(lines) == 1, lines
        assert f"--blob-dir {replicas.blob_dir} " in lines.pop()
        watcher = Watcher(first.stub, pb.WatchEventsRequest())
        start = watcher.wait_caught_up()
        ledger = Ledger()
        try:
            with replicas.round_robin() as client:
                work = Work(client, ledger, host)
                sources = images(1, SOURCES, f"{host}/scale/src")
                run_at_once([partial(work.publish, s, s.tags[0]) for s in sources], work)
                loads = images(2, LOADS, "scale/loaded")
                chains = [partial(work.pull_tag_push_remove, n) for n in range(SOURCES)]
                chains += [partial(work.load_tag_remove, s, n) for n, s in enumerate(loads)]
                run_at_once(chains, work)

            spread = served_by_each(replicas.live(), ledger)
            print(
                f"\ncalls served by each replica: {spread}; prunes refused {ledger.prunes_refused}"
            )
            for replica in (first, second, third):
                report = replica.client.check_report(timeout=WAIT)
                assert report.ok, (replica.name, report.problems)
                assert report.unrecorded_blobs == (), (replica.name, report.unrecorded_blobs)
                assert_same_answers(replica, ledger)
            assert ledger.reclaimed > 0  # the prunes collected the removed images' layers
            for ref, digest in sorted(ledger.pushed.items()):
                assert_pushed(host, ref, digest)
            pulled = {f"{host}/scale/src{n}:1" for n in range(SOURCES)}
            assert_watched_everything(watcher, first, start, ledger, pulled)
            # tags made on the other two replicas' own connections reach the watcher
            seen = len(watcher.events)
            second.client.tag("scale/keep0:1", "scale/from-second:1")
            third.client.tag("scale/keep0:1", "scale/from-third:1")
            watcher.wait_count(seen + 2)
            with watcher.changed:
                latest = [(KIND(e.kind), e.name.familiar) for e in watcher.events[seen:]]
            assert latest == [
                ("EVENT_KIND_TAG", "scale/from-second:1"),
                ("EVENT_KIND_TAG", "scale/from-third:1"),
            ]
            assert watcher.error is None
        finally:
            watcher.stop()


def served_by_each(replicas: list[Replica], ledger: Ledger) -> dict[str, dict[str, int]]:
    """Each replica answered some of the calls; together, each method as often as
    it was called (a call's access line is written as it ends: wait for them)."""

    def total() -> Counter[str]:
        counts: Counter[str] = Counter()
        for replica in replicas:
            counts += Counter({m: n for m, n in replica.served().items() if m in ledger.calls})
        return counts

    wait_until(lambda: total() == ledger.calls, WAIT)
    spread = {r.name: dict(r.served()) for r in replicas}
    for replica in replicas:
        mine = {m: n for m, n in spread[replica.name].items() if m in ledger.calls}
        assert sum(mine.values()) > 0, (replica.name, spread)
    return spread


def assert_same_answers(replica: Replica, ledger: Ledger) -> None:
    """The replica, on its own connection, lists exactly the names the ledger
    holds, each on its image, and knows none of the removed ones."""
    listed = {
        name.familiar: image.id
        for image in replica.client.list_images(all=True)
        for name in image.repo_tags
    }
    assert listed == ledger.present, replica.name
    for name, image_id in sorted(ledger.present.items()):
        assert replica.client.inspect(name).image.id == image_id, (replica.name, name)
    for name in sorted(ledger.absent):
        with pytest.raises(errors.ImageNotFound):
            replica.client.inspect(name)


def assert_watched_everything(
    watcher: Watcher, replica: Replica, start: int, ledger: Ledger, pulled: set[str]
) -> None:
    """The watcher received every event committed since it caught up, on any
    replica: consecutive cursors, every tag, every push and every pull."""
    watcher.wait_cursor(last_cursor(replica.stub))
    with watcher.changed:
        events = list(watcher.events)
    cursors = [e.cursor for e in events]
    assert cursors == list(range(start + 1, start + 1 + len(events)))
    tagged = {e.name.familiar for e in events if KIND(e.kind) == "EVENT_KIND_TAG"}
    assert set(ledger.tags) <= tagged
    pushes = [e for e in events if KIND(e.kind) == "EVENT_KIND_PUSH"]
    assert len(pushes) == ledger.calls["Push"]
    assert {e.name.familiar for e in events if KIND(e.kind) == "EVENT_KIND_PULL"} == pulled
