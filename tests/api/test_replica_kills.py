"""SIGKILL of a replica in the middle of pulls and loads while the others prune.

Two survivors run for the whole test; each trial starts a fresh victim (a new root,
so a new replica ID) on the same database and blob directory, has it pull from the
real registry and load archives, and SIGKILLs it at a point chosen by an event of
its own work, picked per trial from a seeded random generator:

- ``load-paused``: its load's input stops at a random byte inside a layer (past
  the server's first read of it), and the kill comes once the layer before is
  stored (its progress message) and the paused layer's ingest file exists:
  always mid-ingest, with the stored layer's lease row held;
- ``pull-progress``: the kill comes as the m-th progress message of its pulls
  arrives (m at random): often mid-download, sometimes between layers or pulls;
- ``load-progress``: the same with its loads' progress (one message per member
  stored, the input not held back).

Meanwhile the survivors pull and load the same content under names of their own,
load an image and remove it (so there is garbage), and prune all the time. Victims
run in rounds of a few at once. After each round:

- every survivor call succeeded, and every victim call that failed did so after
  its kill (a live victim refused nothing);
- every image a victim or a survivor had acknowledged is there, with its ID, on
  each survivor (Inspect through each one's own connection), and Check is clean
  with no unrecorded blob: no blob a live operation needed was deleted;
- each victim's catalog row and leases (the ``replicas`` and ``leases`` tables)
  are forgotten once its heartbeat is older than --replica-timeout, and its
  ingest files (named with the ID in its ``<root>/replica-id``) are gone; the
  survivors' prunes report exactly that many stale ingests removed, so it was
  they that swept them. A replica's start-up also removes dead replicas' ingest
  files (docs/design.md §4), so victims are started with a long --replica-timeout
  of their own (a just-killed one is not dead to them), and only once the
  previous round's victims are forgotten and swept (a starting replica finds no
  row for a forgotten one): what sweeps is a survivor's prune, the thing under
  test;
- the round's images are then removed and pruned, and the blob directory must be
  empty: nothing leaked.

Across the trials some kills must land mid-ingest (leftover ingest files) and some
must leave lease rows behind (a tally > 0 of each). IMAGESTORE_SOAK_TRIALS sets the
number of trials (30; ``make soak`` runs 200), IMAGESTORE_SOAK_SEED the seed.
"""

from __future__ import annotations

import io
import os
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO

import pytest

from imagestore import errors
from imagestore.client import ImageStoreClient
from tests.api.conftest import wait_until
from tests.api.scale_out import Replica, ReplicaSet, replica_set
from tests.archives import ImageSpec, docker_archive, sha
from tests.pg import Cluster
from tests.registry.distribution import Distribution, start_distribution
from tests.store.builders import layer_tar

TRIALS = int(os.environ.get("IMAGESTORE_SOAK_TRIALS", "30"))
SEED = int(os.environ.get("IMAGESTORE_SOAK_SEED", "20261130"))
#: victims killed in one round (started together, swept together)
VICTIMS_PER_ROUND = 3
MODES = ("load-paused", "pull-progress", "load-progress")
#: a victim judges the others with this timeout (see the module's docstring)
VICTIM_REPLICA_TIMEOUT = 600.0
#: the unique layer of each image: over 1 MiB, so a paused load is past the
#: server's first read of it (archive/load.py reads members 1 MiB at a time)
LAYER_SIZE = 3 << 20
READ_SIZE = 1 << 20
#: how long a test waits for what happens at once, or after a replica timeout
WAIT = 120.0
PULLS = 3  # images in the registry
LOADS = 3  # archives


@dataclass
class Content:
    """What the trials pull and load: images sharing a base layer, each with a
    unique layer of incompressible bytes (its ingest takes a while)."""

    registry: str
    pulls: list[ImageSpec]
    loads: list[ImageSpec]
    scratch: ImageSpec

    def pull_ref(self, index: int, who: str) -> str:
        """The registry name a victim (``v``) or a survivor (``s``) pulls."""
        return f"{self.registry}/kill/p{index}:{who}"


def make_content(registry: str) -> Content:
    rng = random.Random(SEED)
    base = layer_tar({"etc/base": rng.randbytes(64 << 10)})

    def image(name: str) -> ImageSpec:
        return ImageSpec(tags=[], layers=[base, layer_tar({name: rng.randbytes(LAYER_SIZE)})])

    scratch = ImageSpec(tags=[], layers=[base, layer_tar({"scratch": rng.randbytes(4096)})])
    pulls = [image(f"p{j}") for j in range(PULLS)]
    loads = [image(f"l{j}") for j in range(LOADS)]
    return Content(registry, pulls, loads, scratch)


def tagged(spec: ImageSpec, *tags: str) -> ImageSpec:
    return ImageSpec(tags=tags, layers=spec.layers)


def publish(client: ImageStoreClient, content: Content) -> None:
    """Put the pull images in the registry (through the service: load, push),
    then empty the store."""
    for j, spec in enumerate(content.pulls):
        refs = [content.pull_ref(j, "v"), content.pull_ref(j, "s")]
        client.load(io.BytesIO(docker_archive(tagged(spec, *refs)))).result()
        for ref in refs:
            client.push(ref, timeout=WAIT).result()
    empty_the_store(client)


def empty_the_store(client: ImageStoreClient) -> None:
    images = client.list_images(all=True)
    if images:
        client.remove([image.id for image in images], force=True)
    client.prune()


class PausingArchive(io.RawIOBase):
    """An archive read up to ``pause``, where it waits for ``release`` and then
    ends (the load it feeds is killed meanwhile)."""

    def __init__(self, data: bytes, pause: int) -> None:
        super().__init__()
        self.data = data
        self.pause = pause
        self.position = 0
        self.paused = threading.Event()
        self.release = threading.Event()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.position >= self.pause:
            self.paused.set()
            self.release.wait(WAIT)
            return b""
        end = self.pause if size < 0 else min(self.pause, self.position + size)
        chunk = self.data[self.position : end]
        self.position = end
        return chunk


def member_span(archive: bytes, name: str) -> tuple[int, int]:
    """Where the data of the archive member ``name`` starts and ends."""
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.getmember(name)
        return member.offset_data, member.offset_data + member.size


@dataclass
class Victim:
    """One trial: a victim replica, its work, and the event it is killed at."""

    trial: int
    mode: str
    replica: Replica
    replicas: ReplicaSet
    #: the progress message the kill follows (progress modes)
    at_message: int
    pulls: list[str]
    archives: list[bytes]
    #: load-paused: the first archive's input stops inside a layer, after the
    #: member ``paused_after`` (whose progress message says it is stored)
    paused: PausingArchive | None = None
    paused_after: str = ""
    stored_members: set[str] = field(default_factory=set)
    messages: int = 0
    killed: threading.Event = field(default_factory=threading.Event)
    acknowledged: dict[str, str] = field(default_factory=dict)  # name -> image ID
    failed_alive: list[str] = field(default_factory=list)
    leftovers: list[Path] = field(default_factory=list)
    leases_at_death: int = 0
    replica_id: str = ""

    def __post_init__(self) -> None:
        self.replica_id = self.replica.id
        self._lock = threading.Lock()

    def kill(self) -> None:
        with self._lock:
            if self.killed.is_set():
                return
            self.killed.set()
        self.replica.kill()  # waits for the process to end
        self.leftovers = self.replicas.ingest_files(self.replica_id)
        self.leases_at_death = self.replicas.lease_count(self.replica_id)
        if self.paused is not None:
            self.paused.release.set()

    def progressed(self, counted: bool) -> None:
        """A message arrived (or an operation ended): the kill, if this is its point."""
        with self._lock:
            if counted:
                self.messages += 1
            due = self.messages >= self.at_message or not counted
        if due:
            self.kill()

    def describe(self) -> str:
        return (
            f"trial {self.trial} ({self.mode}, kill at message {self.at_message},"
            f" {self.messages} seen): failed alive {self.failed_alive}"
        )

    def pull_then_trigger(self) -> None:
        """Its pulls, one after another; in pull-progress a trigger beyond their
        last message fires once they are done."""
        self._pull_all()
        if self.mode == "pull-progress":
            self.progressed(False)

    def load_then_trigger(self) -> None:
        self._load_all()
        if self.mode == "load-progress":
            self.progressed(False)

    def _pull_all(self) -> None:
        for ref in self.pulls:
            if not self._run(partial(self._pull, ref)):
                return

    def _load_all(self) -> None:
        for number, archive in enumerate(self.archives):
            source: IO[bytes] = io.BytesIO(archive)
            if number == 0 and self.paused is not None:
                source = self.paused  # type: ignore[assignment]
            if not self._run(partial(self._load, source)):
                return

    def _pull(self, ref: str) -> None:
        with self.replica.client.pull(ref, timeout=WAIT) as call:
            for _ in call:
                if self.mode == "pull-progress":
                    self.progressed(True)
            result = call.result()
        self.acknowledged[ref] = result.image_ids[0]

    def _load(self, source: IO[bytes]) -> None:
        with self.replica.client.load(source, timeout=WAIT) as call:
            for progress in call:
                self.stored_members.add(progress.subject)
                if self.mode == "load-progress":
                    self.progressed(True)
            result = call.result()
        for image in result.images:
            for name in image.names:
                self.acknowledged[name.familiar] = image.id

    def _run(self, operation: Callable[[], None]) -> bool:
        """Run one operation; False once the victim is dead (or it failed alive)."""
        if self.killed.is_set():
            return False
        try:
            operation()
        except Exception as exc:  # once killed, whatever the dead call raises
            if not self.killed.is_set():
                self.failed_alive.append(repr(exc))
            return False
        return True

    def watch_paused(self) -> None:
        """load-paused: the kill comes once the paused layer's ingest has begun."""
        assert self.paused is not None
        assert self.paused.paused.wait(WAIT), "the paused load never reached its pause"
        # the layer before is stored, so the ingest file that appears is the paused one's
        wait_until(lambda: self.paused_after in self.stored_members, WAIT)
        wait_until(lambda: bool(self.replicas.ingest_files(self.replica_id)), WAIT)
        self.kill()


def plan_victim(
    trial: int,
    replica: Replica,
    replicas: ReplicaSet,
    content: Content,
    round_number: int,
    slot: int,
) -> Victim:
    rng = random.Random(SEED * 1_000_003 + trial)
    mode = MODES[trial % len(MODES)]  # every mode in every three trials
    picks = [(slot + n) % PULLS for n in range(2)]
    pulls = [content.pull_ref(j, "v") for j in picks]
    archives = [
        docker_archive(tagged(content.loads[j], f"kill/r{round_number}v{slot}-l{j}:1"))
        for j in picks
    ]
    paused = None
    paused_after = ""
    at_message = 0
    if mode == "load-paused":
        base, unique = (f"{sha(layer)[7:19]}/layer.tar" for layer in content.loads[picks[0]].layers)
        start, end = member_span(archives[0], unique)
        assert member_span(archives[0], base)[1] < start  # the base layer comes first
        paused = PausingArchive(archives[0], rng.randrange(start + READ_SIZE + 4096, end))
        paused_after = base
    elif mode == "pull-progress":
        at_message = rng.randint(1, 14)  # two pulls of two layers send 13 to 16
    else:
        at_message = rng.randint(1, 8)  # two loads of four members
    return Victim(trial, mode, replica, replicas, at_message, pulls, archives, paused, paused_after)


@dataclass
class Survivors:
    """The two long-running replicas' share of a round: the same content under
    their own names, a removed image's garbage, and prunes all along."""

    client: ImageStoreClient
    pruners: list[ImageStoreClient]
    content: Content
    acknowledged: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    stale_ingests_removed: int = 0
    prunes: int = 0
    refused_prunes: int = 0
    stop_pruning: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def work(self, round_number: int) -> list[threading.Thread]:
        content = self.content
        jobs: list[Callable[[], None]] = []
        for j in range(PULLS):
            jobs.append(partial(self._pull, content.pull_ref(j, "s")))
        for j, spec in enumerate(content.loads):
            jobs.append(partial(self._load, tagged(spec, f"kill/s-l{j}:1")))
        jobs.append(partial(self._garbage, round_number))
        return [threading.Thread(target=self._guarded, args=(job,), daemon=True) for job in jobs]

    def prune_all_along(self) -> list[threading.Thread]:
        return [threading.Thread(target=self._prune, args=(c,), daemon=True) for c in self.pruners]

    def _guarded(self, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception as exc:  # reported by the round, not lost with its thread
            self.failures.append(repr(exc))

    def _pull(self, ref: str) -> None:
        result = self.client.pull(ref, timeout=WAIT).result()
        with self._lock:
            self.acknowledged[ref] = result.image_ids[0]

    def _load(self, spec: ImageSpec) -> None:
        archive = io.BytesIO(docker_archive(spec))
        result = self.client.load(archive, timeout=WAIT).result()
        with self._lock:
            for image in result.images:
                for name in image.names:
                    self.acknowledged[name.familiar] = image.id

    def _garbage(self, round_number: int) -> None:
        name = f"kill/scratch-r{round_number}:1"
        archive = io.BytesIO(docker_archive(tagged(self.content.scratch, name)))
        self.client.load(archive, timeout=WAIT).result()
        [removed] = self.client.remove([name])
        assert removed.error is None, removed

    def _prune(self, client: ImageStoreClient) -> None:
        while not self.stop_pruning.is_set():
            try:
                result = client.prune(timeout=WAIT)
            except errors.PruneRunning:  # the other survivor's: try again shortly
                with self._lock:
                    self.refused_prunes += 1
                self.stop_pruning.wait(0.05)
                continue
            except errors.ImageStoreError as exc:
                self.failures.append(f"prune: {exc!r}")
                return
            with self._lock:
                self.prunes += 1
                self.stale_ingests_removed += result.stale_ingests


@dataclass
class Tally:
    """Across the trials: kills that left ingest files or lease rows, by mode."""

    mid_ingest: Counter[str] = field(default_factory=Counter)
    with_leases: Counter[str] = field(default_factory=Counter)
    kills: Counter[str] = field(default_factory=Counter)
    prunes: int = 0
    refused_prunes: int = 0


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Distribution]:
    running = start_distribution(tmp_path / "registry")
    yield running
    running.stop()


def start_victims(replicas: ReplicaSet, first_trial: int, count: int) -> list[Replica]:
    """Fresh victims; they judge the others with a long timeout of their own."""
    names = [f"victim-{trial}" for trial in range(first_trial, first_trial + count)]
    return replicas.start_many(names, replica_timeout=VICTIM_REPLICA_TIMEOUT)


@contextmanager
def starting_victims(replicas: ReplicaSet, first_trial: int, count: int) -> Iterator[list[Replica]]:
    """Start the next victims on a thread while the block runs; joined on leaving.
    Only once the previous ones are swept: a starting replica removes the ingest
    files of the replicas it finds no row for, and so would race the survivors'
    prunes for a just-forgotten victim's."""
    started: list[Replica] = []
    failures: list[BaseException] = []

    def start() -> None:
        try:
            started.extend(start_victims(replicas, first_trial, count))
        except BaseException as exc:  # pytest.fail raises a BaseException
            failures.append(exc)

    starter = threading.Thread(target=start, daemon=True)
    starter.start()
    try:
        yield started
    finally:
        starter.join(WAIT)
    assert not starter.is_alive(), "the next victims did not start"
    if failures:
        raise failures[0]


@pytest.mark.slow
def test_killed_replicas_lose_nothing_acknowledged_and_their_leftovers_are_swept(
    postgres_cluster: Cluster, tmp_path: Path, registry: Distribution
) -> None:
    content = make_content(registry.host)
    tally = Tally()
    with replica_set(postgres_cluster, tmp_path, ["survivor-a", "survivor-b"]) as replicas:
        survivors = replicas.live()
        client = replicas.round_robin(survivors)
        try:
            publish(client, content)
            upcoming = start_victims(replicas, 0, min(VICTIMS_PER_ROUND, TRIALS))
            for round_number, first in enumerate(range(0, TRIALS, VICTIMS_PER_ROUND)):
                victims = [
                    plan_victim(first + slot, replica, replicas, content, round_number, slot)
                    for slot, replica in enumerate(upcoming)
                ]
                work = Survivors(client, [s.client for s in survivors], content)
                kill_and_sweep(replicas, work, victims, round_number)
                following = first + len(victims)
                count = min(VICTIMS_PER_ROUND, TRIALS - following)
                with starting_victims(replicas, following, count) as upcoming:
                    verify_and_empty(replicas, client, survivors, work, victims, tally)
        finally:
            client.close()
    print(
        f"\nkills by mode {dict(tally.kills)}; mid-ingest {dict(tally.mid_ingest)};"
        f" with lease rows {dict(tally.with_leases)}; survivors' prunes {tally.prunes}"
        f" ({tally.refused_prunes} refused while the other pruned)"
    )
    assert tally.mid_ingest.total() > 0, "no kill landed mid-ingest: the trials exercised nothing"
    assert tally.with_leases.total() > 0, "no victim died holding a lease"


def kill_and_sweep(
    replicas: ReplicaSet, work: Survivors, victims: list[Victim], round_number: int
) -> None:
    """The round's work, each victim killed at its point, then the wait until the
    survivors' prunes have forgotten the victims and swept their ingest files."""
    victim_ids = {v.replica_id for v in victims}
    assert victim_ids <= replicas.replica_ids()  # registered before their work starts
    pruning = work.prune_all_along()
    threads = work.work(round_number)
    for victim in victims:
        threads.append(threading.Thread(target=victim.pull_then_trigger, daemon=True))
        threads.append(threading.Thread(target=victim.load_then_trigger, daemon=True))
        if victim.paused is not None:
            threads.append(threading.Thread(target=victim.watch_paused, daemon=True))
    for thread in [*pruning, *threads]:
        thread.start()
    try:
        for thread in threads:
            thread.join(WAIT * 2)
            assert not thread.is_alive(), "a round's operation hung"
        unkilled = [v.describe() for v in victims if not v.killed.is_set()]
        assert not unkilled, unkilled

        def swept() -> bool:
            catalog = replicas.remembered()
            return not victim_ids & (set(catalog.rows) | set(catalog.leases)) and not any(
                replicas.ingest_files(v.replica_id) for v in victims
            )

        wait_until(swept, WAIT)  # the survivors' prunes, once the victims' heartbeats are old
    finally:
        work.stop_pruning.set()
        for thread in pruning:
            thread.join(WAIT)


def verify_and_empty(
    replicas: ReplicaSet,
    client: ImageStoreClient,
    survivors: list[Replica],
    work: Survivors,
    victims: list[Victim],
    tally: Tally,
) -> None:
    """What a round must leave; then the store emptied for the next round."""
    context = [v.describe() for v in victims]
    assert work.failures == [], (work.failures, context)
    for victim in victims:
        assert victim.failed_alive == [], victim.describe()
        if victim.mode == "load-paused":  # killed mid-layer, with a layer stored before
            assert victim.leftovers, victim.describe()
            assert victim.leases_at_death > 0, victim.describe()
    # every leftover went through a survivor's prune
    leftovers = sum(len(v.leftovers) for v in victims)
    assert work.stale_ingests_removed == leftovers, (work.stale_ingests_removed, context)

    expected = dict(work.acknowledged)
    for victim in victims:
        expected.update(victim.acknowledged)
    for survivor in survivors:
        for name, image_id in sorted(expected.items()):
            found = survivor.client.inspect(name).image.id
            assert found == image_id, (survivor.name, name, context)
    report = survivors[0].client.check_report(timeout=WAIT)
    assert report.ok, (report.problems, context)
    assert report.unrecorded_blobs == (), (report.unrecorded_blobs, context)

    for victim in victims:
        tally.kills[victim.mode] += 1
        tally.mid_ingest[victim.mode] += bool(victim.leftovers)
        tally.with_leases[victim.mode] += victim.leases_at_death > 0
    tally.prunes += work.prunes
    tally.refused_prunes += work.refused_prunes

    # the next round pulls and loads into an empty store, and nothing leaked
    empty_the_store(client)
    assert client.list_images(all=True) == []
    assert list((replicas.blob_dir / "sha256").iterdir()) == []
    assert list((replicas.blob_dir / "ingest").iterdir()) == []
