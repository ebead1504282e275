"""A real containerd for the tests: Debian's `containerd`, run as root on a private
socket with its own root and state directories, driven by `ctr`.

The tests pull from imagestore's OCI Distribution endpoint the way a node does:
`ctr images pull --plain-http` of a name on the endpoint, or of an upstream's name
through a `hosts.toml` mirror (`--hosts-dir`). `ctr images pull` also unpacks the
host platform's layers into the snapshotter; the helpers here prove that the
unpack happened by finding the image's chain ID among the committed snapshots
(containerd commits a layer's snapshot under its chain ID only after the applied
tar's digest matched the config's diff_id).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.api.conftest import wait_until
from tests.tools import require, run

#: every ctr call works in this namespace of the private containerd
NAMESPACE = "imagestore-tests"
START_TIMEOUT = 20.0
#: plugins that need what a CI container may lack (CRI, kernel file systems, task
#: runtimes) or would write outside the private directories (`opt` installs to /opt)
DISABLED_PLUGINS = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.internal.v1.opt",
    "io.containerd.internal.v1.restart",
    "io.containerd.runtime.v1.linux",
    "io.containerd.runtime.v2.task",
    "io.containerd.monitor.v1.cgroups",
    "io.containerd.service.v1.tasks-service",
    "io.containerd.grpc.v1.tasks",
    "io.containerd.tracing.processor.v1.otlp",
)
#: Go's names of the machine architectures the tests may run on
GO_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}


def host_architecture() -> str:
    """The architecture `ctr images pull` picks by default (containerd's own)."""
    machine = platform.machine()
    return GO_ARCHITECTURES.get(machine, machine)


def chain_id(diff_ids: Sequence[str]) -> str:
    """The OCI chain ID of a stack of layers: the snapshot key of the top layer."""
    chain = diff_ids[0]
    for diff_id in diff_ids[1:]:
        chain = "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
    return chain


@dataclass(frozen=True)
class ImageRow:
    """One row of `ctr images ls`."""

    name: str
    media_type: str
    digest: str


@dataclass
class Containerd:
    """One running containerd; :meth:`stop` ends exactly that process."""

    process: subprocess.Popen[bytes]
    socket: Path
    directory: Path
    snapshotter: str
    ctr_binary: str

    def ctr(self, *args: str | Path) -> str:
        return run(self.ctr_binary, "--address", self.socket, "--namespace", NAMESPACE, *args)

    def answers(self) -> bool:
        result = subprocess.run(
            [self.ctr_binary, "--address", str(self.socket), "version"],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def pull_plain_http(self, reference: str) -> str:
        """Pull (and unpack) ``reference`` from a plain-HTTP registry."""
        return self.ctr(
            "images", "pull", "--plain-http", "--snapshotter", self.snapshotter, reference
        )

    def pull_through_hosts(self, reference: str, hosts_dir: Path) -> str:
        """Pull (and unpack) ``reference`` with the registry hosts of ``hosts_dir``."""
        return self.ctr(
            "images",
            "pull",
            "--hosts-dir",
            hosts_dir,
            "--snapshotter",
            self.snapshotter,
            reference,
        )

    def images(self) -> dict[str, ImageRow]:
        """`ctr images ls`, by name."""
        rows = self.ctr("images", "ls").splitlines()[1:]
        found = {}
        for row in rows:
            name, media_type, digest = row.split()[:3]
            found[name] = ImageRow(name, media_type, digest)
        return found

    def ready_images(self) -> set[str]:
        """Names whose content is all local and unpacked into the snapshotter."""
        out = self.ctr("images", "check", "--quiet", "--snapshotter", self.snapshotter)
        return set(out.split())

    def committed_snapshots(self) -> set[str]:
        """Keys of the committed snapshots (a layer stack's chain ID each)."""
        rows = self.ctr("snapshots", "--snapshotter", self.snapshotter, "ls").splitlines()[1:]
        return {row.split()[0] for row in rows if row.split()[-1] == "Committed"}

    def unpacked(self, diff_ids: Sequence[str]) -> bool:
        """Whether the layer stack with these diff_ids is unpacked, whole."""
        return chain_id(diff_ids) in self.committed_snapshots()

    def log(self) -> str:
        return (self.directory / "containerd.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def config_toml(directory: Path, socket: Path) -> str:
    disabled = ", ".join(f'"{name}"' for name in DISABLED_PLUGINS)
    return (
        "version = 2\n"
        f'root = "{directory / "root"}"\n'
        f'state = "{directory / "state"}"\n'
        f'temp = "{directory / "tmp"}"\n'
        f"disabled_plugins = [{disabled}]\n"
        "[grpc]\n"
        f'  address = "{socket}"\n'
    )


def overlayfs_loaded(daemon: Containerd) -> bool:
    """containerd loads its overlayfs plugin only after a test mount worked in its root."""
    for row in daemon.ctr("plugins", "ls").splitlines():
        fields = row.split()
        if fields[:2] == ["io.containerd.snapshotter.v1", "overlayfs"]:
            return fields[-1] == "ok"
    return False


def start_containerd(directory: Path) -> Containerd:
    """Start containerd as root with everything it keeps under ``directory``."""
    binary = require("containerd")
    ctr_binary = require("ctr", "containerd")
    if os.geteuid() != 0:
        pytest.fail("containerd must run as root (make test runs the tests as root in CI)")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tmp").mkdir(exist_ok=True)
    # a unix socket path must fit in 107 bytes: a short directory of its own
    socket = Path(tempfile.mkdtemp(prefix="is-ctrd-", dir="/tmp")) / "containerd.sock"
    (directory / "config.toml").write_text(config_toml(directory, socket))
    with (directory / "containerd.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, "--config", str(directory / "config.toml"), "--log-level", "info"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    daemon = Containerd(process, socket, directory, "native", ctr_binary)

    def answering() -> bool:
        if process.poll() is not None:
            pytest.fail(f"containerd exited ({process.returncode}): {daemon.log()}")
        return daemon.answers()

    try:
        wait_until(answering, START_TIMEOUT)
        if overlayfs_loaded(daemon):
            daemon.snapshotter = "overlayfs"
    except BaseException:
        stop_containerd(daemon)
        raise
    return daemon


def stop_containerd(daemon: Containerd) -> None:
    """Stop the process, then remove its directories (nothing stays mounted: the tests
    pull and unpack, and neither leaves a mount behind)."""
    daemon.stop()
    shutil.rmtree(daemon.socket.parent, ignore_errors=True)
    shutil.rmtree(daemon.directory, ignore_errors=True)


@pytest.fixture(name="containerd")
def running_containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    daemon = start_containerd(tmp_path_factory.mktemp("containerd"))
    yield daemon
    stop_containerd(daemon)


def write_hosts_toml(hosts_dir: Path, upstream: str, mirror: str, server: str) -> Path:
    """A containerd `hosts.toml` for ``upstream`` (the name's registry host, e.g.
    `docker.io` or `127.0.0.1:5000`) that resolves and pulls through ``mirror``
    (`http://127.0.0.1:PORT`) first and falls back to ``server``. containerd adds
    `?ns=<upstream>` to each request it sends a mirror, so a mirror serving
    several upstreams knows which one the path belongs to."""
    folder = hosts_dir / upstream
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "hosts.toml"
    path.write_text(
        f'server = "{server}"\n\n[host."{mirror}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    return path
