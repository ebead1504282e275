"""A throwaway PostgreSQL cluster for the tests and benchmarks.

One cluster per test session (per process tree): ``initdb`` and ``pg_ctl`` from
Debian's ``postgresql`` package, run as the ``postgres`` user when the tests
run as root (``initdb`` refuses root), in a private directory that is also the
only place it listens (a unix socket; no TCP port). It is started on first use
and stopped when the process that started it exits; child processes (a crash
worker, a server under test) find it through ``IMAGESTORE_TEST_PG_HOST`` and
never start their own.

Each store root gets a database of its own, named after the root's path, so a
test that reopens a root finds its catalog again and no two tests share rows.

The test cluster runs with ``fsync=off``: the tests kill imagestore processes,
never PostgreSQL or the machine, so flushing the disk would prove nothing and
slow every commit on a shared machine. The benchmarks ask for a durable cluster
(``durable=True``: fsync and synchronous commit on, PostgreSQL's defaults) so
that they compare like with like against SQLite's ``synchronous=FULL``.

A machine without PostgreSQL fails these tests (``make test`` installs it);
they are never skipped.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg

from imagestore.store.catalog import Catalog

#: the environment variable that hands a running cluster's socket directory to child processes
HOST_VARIABLE = "IMAGESTORE_TEST_PG_HOST"
PG_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"


@dataclass
class Cluster:
    """A running cluster: its socket directory, and whether this process stops it."""

    host: Path
    owned: bool
    durable: bool = False

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@/{database}?host={quote(str(self.host))}"

    def create_database(self, database: str) -> str:
        """Create ``database`` unless it exists; its URL."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as admin:
            exists = admin.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
            if exists is None:
                admin.execute(f'CREATE DATABASE "{database}" TEMPLATE template0')
        return self.url(database)

    def drop_database(self, database: str) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    def stop(self) -> None:
        if not self.owned:
            return
        self.owned = False
        _as_postgres([_binary("pg_ctl"), "stop", "-D", str(self.host / "data"), "-m", "fast"])
        shutil.rmtree(self.host, ignore_errors=True)


_clusters: dict[bool, Cluster] = {}
_clusters_lock = threading.Lock()


def cluster(*, durable: bool = False) -> Cluster:
    """The session's cluster (started on first use; a parent's when one runs)."""
    with _clusters_lock:
        found = _clusters.get(durable)
        if found is not None:
            return found
        inherited = os.environ.get(_variable(durable))
        if inherited:
            found = Cluster(Path(inherited), owned=False, durable=durable)
        else:
            found = _start(durable)
            os.environ[_variable(durable)] = str(found.host)
            atexit.register(found.stop)
        _clusters[durable] = found
        return found


def database_for(root: Path) -> str:
    """The database of one store root: named after its path (63 bytes at most)."""
    return "store_" + hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:32]


def postgres_catalog(root: Path) -> Catalog:
    """A :data:`~imagestore.store.parts.CatalogFactory`: the root's own database
    on the session's cluster (created on first open)."""
    from imagestore.store.postgres import PostgresCatalog  # after tests/conftest.py's setup

    return PostgresCatalog(cluster().create_database(database_for(root)))


def _variable(durable: bool) -> str:
    return HOST_VARIABLE + ("_DURABLE" if durable else "")


def _binary(name: str) -> str:
    versions = sorted(
        (p for p in PG_ROOT.glob("*/bin") if (p / name).exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        raise RuntimeError(
            f"PostgreSQL's {name} is not installed under {PG_ROOT}:"
            " apt-get install postgresql (make test does)"
        )
    return str(versions[-1] / name)


def _as_postgres(command: list[str]) -> None:
    if os.geteuid() == 0:
        command = ["runuser", "-u", SUPERUSER, "--", *command]
    subprocess.run(command, check=True, capture_output=True, text=True)


def _settings(host: Path, durable: bool) -> str:
    """The server's options: the unix socket in ``host`` only, and (not durable) no fsync."""
    settings = [
        "-c listen_addresses=''",
        f"-c unix_socket_directories='{host}'",
        "-c max_connections=200",
        "-c shared_buffers=64MB",
    ]
    if not durable:
        settings += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
    return " ".join(settings)


def _start(durable: bool) -> Cluster:
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")  # fail before making anything
    host = Path(tempfile.mkdtemp(prefix="imagestore-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam(SUPERUSER)
        os.chown(host, user.pw_uid, user.pw_gid)
    data = host / "data"
    try:
        _as_postgres([initdb, "-D", str(data), "-U", SUPERUSER, "-A", "trust", "--no-sync",
                      "-E", "UTF8", "--locale=C.UTF-8"])  # fmt: skip
        _as_postgres([pg_ctl, "start", "-w", "-D", str(data), "-l", str(host / "log"),
                      "-o", _settings(host, durable)])  # fmt: skip
    except subprocess.CalledProcessError as exc:
        log = host / "log"
        tail = log.read_text()[-2000:] if log.exists() else ""
        shutil.rmtree(host, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {exc.stderr}{tail}") from None
    return Cluster(host, owned=True, durable=durable)


@dataclass
class PrivateCluster(Cluster):
    """A durable cluster of one test's own, which the test may crash and restart."""

    def crash(self) -> None:
        """Stop it the way a crash would (``pg_ctl stop -m immediate``: no checkpoint;
        the next start replays the WAL)."""
        _as_postgres([_binary("pg_ctl"), "stop", "-D", str(self.host / "data"), "-m", "immediate"])

    def stop(self) -> None:
        if self.owned and not (self.host / "data" / "postmaster.pid").exists():  # crashed
            self.owned = False
            shutil.rmtree(self.host, ignore_errors=True)
        super().stop()

    def start(self) -> None:
        data, log = str(self.host / "data"), str(self.host / "log")
        options = _settings(self.host, durable=True)
        _as_postgres([_binary("pg_ctl"), "start", "-w", "-D", data, "-l", log, "-o", options])


def private_cluster() -> PrivateCluster:
    """A durable cluster for one test, stopped and removed by ``stop()``."""
    started = _start(durable=True)
    return PrivateCluster(started.host, owned=True, durable=True)
