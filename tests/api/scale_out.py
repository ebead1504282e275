"""Several real imagestore replicas on one PostgreSQL database and one blob directory.

A :class:`ReplicaSet` runs real ``imagestore serve`` processes the way a scaled-out
deployment runs them (docs/design.md §4, Replicas): each replica has a root of its
own (its ``replica-id`` file and its lock), all of them share one fresh database of
the test cluster (``--catalog``) and one blob directory (``--blob-dir``), and they
heartbeat fast (``--heartbeat-interval`` 0.2 s) and count each other dead quickly
(``--replica-timeout`` 3 s), so a SIGKILLed replica's leases expire within a test.
:meth:`ReplicaSet.command_line` gives the exact ``imagestore serve`` line a replica
runs (from its process's arguments), for the docs to quote.

A client reaches the set through gRPC's ``round_robin`` over all the addresses
(:meth:`ReplicaSet.round_robin`, the Python client's own channel options), or one
replica through :attr:`Replica.client` and :attr:`Replica.stub`. What each replica
served is read from its JSON access log (:meth:`Replica.served`), and what the
catalog holds about replicas and leases from the database itself
(:meth:`ReplicaSet.replica_ids`, :meth:`ReplicaSet.lease_count`).
"""

from __future__ import annotations

import json
import shlex
import signal
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psycopg

from imagestore.client import ImageStoreClient
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import Server, start_server
from tests.pg import Cluster, database_for

Stub = pb_grpc.ImageStoreServiceStub

#: seconds between two heartbeats: short, so a collection's wait for them is short
HEARTBEAT_INTERVAL = 0.2
#: seconds without a heartbeat before a replica counts as dead: 15 missed beats,
#: so a live replica on a busy 2-core machine is not taken for dead, yet a killed
#: one's leases expire within a test
REPLICA_TIMEOUT = 3.0
#: the logger of the servers' access lines (one per call)
ACCESS_LOGGER = "imagestore.rpc"
SERVICE = "/imagestore.v1.ImageStoreService/"


@dataclass
class Replica:
    """One running replica: its process, its root, and a client and a stub that
    reach it alone."""

    name: str
    server: Server
    client: ImageStoreClient
    channel: grpc.Channel
    stub: Stub
    killed: bool = False

    @property
    def root(self) -> Path:
        return self.server.root

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def id(self) -> str:
        """Its replica ID, as its root records it (ingest files start with it)."""
        return (self.root / "replica-id").read_text().strip()

    def served(self) -> Counter[str]:
        """How many calls of each method (``Pull``, ``Load``…) it has answered,
        from its JSON access lines (a call's line is written when it ends)."""
        counts: Counter[str] = Counter()
        for line in list(self.server.stderr_lines):
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by SIGKILL
            method = record.get("method", "") if isinstance(record, dict) else ""
            if record.get("logger") == ACCESS_LOGGER and method.startswith(SERVICE):
                counts[method.removeprefix(SERVICE)] += 1
        return counts

    def log(self) -> str:
        return "".join(self.server.stderr_lines)[-4000:]

    def kill(self) -> None:
        """SIGKILL: no clean stop, its catalog row and leases stay behind."""
        self.killed = True
        self.server.stop(signal.SIGKILL)
        self._close_clients()

    def stop(self) -> int:
        """A clean stop (SIGTERM); its exit code."""
        self._close_clients()
        return self.server.stop()

    def _close_clients(self) -> None:
        self.client.close()
        self.channel.close()


def replica_options(
    catalog: str,
    blob_dir: Path,
    *,
    heartbeat_interval: float = HEARTBEAT_INTERVAL,
    replica_timeout: float = REPLICA_TIMEOUT,
    extra: Sequence[str] = (),
) -> list[str]:
    """What a replica is started with after ``serve --root ROOT``."""
    return [
        "--catalog", catalog,
        "--blob-dir", str(blob_dir),
        "--listen", "127.0.0.1:0",
        "--heartbeat-interval", str(heartbeat_interval),
        "--replica-timeout", str(replica_timeout),
        "--grace-period", "5",
        "--log-format", "json",
        *extra,
    ]  # fmt: skip


@dataclass(frozen=True)
class Remembered:
    """The catalog's ``replicas`` rows (ID → last heartbeat, ns on the catalog's
    clock) and each replica's count of ``leases`` rows."""

    rows: dict[str, int]
    leases: dict[str, int]


@dataclass
class ReplicaSet:
    """Replicas on one database and one blob directory, started on demand."""

    cluster: Cluster
    base: Path
    extra: Sequence[str] = ()
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    replica_timeout: float = REPLICA_TIMEOUT
    replicas: list[Replica] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.database = database_for(self.base / "catalog")
        self.url = self.cluster.create_database(self.database)
        self.blob_dir = self.base / "shared-blobs"
        self._lock = threading.Lock()

    def options(self, replica_timeout: float | None = None) -> list[str]:
        """A replica's options; ``replica_timeout`` instead of the set's own."""
        return replica_options(
            self.url,
            self.blob_dir,
            heartbeat_interval=self.heartbeat_interval,
            replica_timeout=replica_timeout or self.replica_timeout,
            extra=self.extra,
        )

    @staticmethod
    def command_line(replica: Replica) -> str:
        """The ``imagestore serve`` line a replica runs, as it was started."""
        arguments = [str(a) for a in replica.server.process.args]  # type: ignore[union-attr]
        serve = arguments.index("serve")
        return shlex.join(["imagestore", *arguments[serve:]])

    def start(self, name: str, *, replica_timeout: float | None = None) -> Replica:
        """A new replica with a fresh root ``base/name`` (so a new replica ID);
        ``replica_timeout``: how long it waits before it counts another one dead,
        when not the set's."""
        root = self.base / name
        server = start_server(root, *self.options(replica_timeout))
        client = ImageStoreClient(server.address, timeout=120)
        channel = grpc.insecure_channel(server.address)
        stub: Stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
        replica = Replica(name, server, client, channel, stub)
        with self._lock:
            self.replicas.append(replica)
        return replica

    def start_many(
        self, names: Sequence[str], *, replica_timeout: float | None = None
    ) -> list[Replica]:
        """Start several at once (each start is mostly the interpreter's import time)."""
        started: dict[str, Replica] = {}
        failures: list[BaseException] = []

        def start_one(name: str) -> None:
            try:
                started[name] = self.start(name, replica_timeout=replica_timeout)
            except BaseException as exc:  # pytest.fail raises Failed, a BaseException
                failures.append(exc)

        threads = [threading.Thread(target=start_one, args=(name,), daemon=True) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        return [started[name] for name in names]

    @staticmethod
    def target(replicas: Sequence[Replica]) -> str:
        """One gRPC target naming every replica: ``ipv4:A,B,C``."""
        return "ipv4:" + ",".join(replica.address for replica in replicas)

    def round_robin(self, replicas: Sequence[Replica] | None = None) -> ImageStoreClient:
        """The Python client over all (or the given) replicas: its channel goes
        round_robin over the target's addresses."""
        chosen = self.live() if replicas is None else replicas
        return ImageStoreClient(self.target(chosen), timeout=120)

    def live(self) -> list[Replica]:
        with self._lock:
            return [r for r in self.replicas if not r.killed]

    def ingest_files(self, replica_id: str) -> list[Path]:
        """The ingest files of one replica in the shared blob directory."""
        ingest = self.blob_dir / "ingest"
        return sorted(p for p in ingest.iterdir() if p.name.startswith(replica_id + "-"))

    def replica_ids(self) -> set[str]:
        """The replicas the catalog has a row for (dead ones until a prune forgets them)."""
        return set(self.remembered().rows)

    def lease_count(self, replica_id: str) -> int:
        """The lease rows (one per digest of a writing lease) a replica holds."""
        return self.remembered().leases.get(replica_id, 0)

    def remembered(self) -> Remembered:
        """What the catalog holds about replicas, in one snapshot."""
        with psycopg.connect(self.url, autocommit=True) as db, db.transaction():
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            rows = db.execute("SELECT id, last_seen FROM replicas").fetchall()
            leases = db.execute("SELECT replica, count(*) FROM leases GROUP BY replica").fetchall()
        return Remembered(
            {str(i): int(seen) for i, seen in rows}, {str(r): int(n) for r, n in leases}
        )

    def close(self) -> list[str]:
        """Stop every replica still running; the complaints of those that did not
        stop cleanly (exit code, traceback)."""
        complaints = []
        for replica in self.live():
            code = replica.stop()
            log = "".join(replica.server.stderr_lines)
            if code != 0 or "Traceback" in log:
                complaints.append(f"{replica.name} exited {code}: {log[-3000:]}")
        for replica in self.replicas:
            if replica.killed:
                replica.server.stop()  # joins its readers
        return complaints


@contextmanager
def replica_set(
    cluster: Cluster, base: Path, names: Sequence[str], *, extra: Sequence[str] = ()
) -> Iterator[ReplicaSet]:
    """Replicas ``names`` started on a fresh database; every one still running is
    stopped at the end and must exit cleanly; the database is dropped."""
    replicas = ReplicaSet(cluster, base, extra)
    try:
        replicas.start_many(names)
        yield replicas
    finally:
        complaints = replicas.close()
        cluster.drop_database(replicas.database)
    assert not complaints, complaints
