"""A real registry for the tests: Debian's CNCF Distribution (`docker-registry`)
on a free loopback port, anonymous or with htpasswd (bcrypt) Basic auth."""

from __future__ import annotations

import re
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.tools import require, run

USER, PASSWORD = "ci", "ci-secret"
READY_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Distribution:
    """One running registry process; :meth:`stop` ends exactly that process."""

    process: subprocess.Popen[bytes]
    host: str  # 127.0.0.1:<port>
    root: Path
    auth: bool

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log(self) -> str:
        return (self.root / "registry.log").read_text(errors="replace")[-4000:]

    def log_size(self) -> int:
        return (self.root / "registry.log").stat().st_size

    def requests_since(self, offset: int) -> list[tuple[str, str, int]]:
        """(method, URI, status) of each request completed since the log had
        ``offset`` bytes (the registry must run at log level info)."""
        with (self.root / "registry.log").open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        found = []
        for line in text.splitlines():
            if "response completed" not in line:
                continue
            method = re.search(r"http\.request\.method=(\w+)", line)
            uri = re.search(r'http\.request\.uri=(?:"([^"]*)"|(\S+))', line)
            status = re.search(r"http\.response\.status=(\d+)", line)
            if method and uri and status:
                found.append((method[1], uri[1] or uri[2], int(status[1])))
        return found


def start_distribution(
    root: Path,
    *,
    auth: bool = False,
    tls: tuple[Path, Path] | None = None,
    log_level: str = "warn",
) -> Distribution:
    """Start a registry; ``tls`` is (certificate, key) to serve HTTPS; at
    ``log_level`` info its log has a line per request (see :func:`requests_in`)."""
    binary = require("docker-registry")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    auth_section = ""
    if auth:
        htpasswd = require("htpasswd", "apache2-utils")
        (root / "htpasswd").write_text(run(htpasswd, "-Bbn", USER, PASSWORD))
        auth_section = (
            f"auth:\n  htpasswd:\n    realm: ci-registry\n    path: {root / 'htpasswd'}\n"
        )
    (root / "config.yml").write_text(
        "version: 0.1\n"
        f"log:\n  level: {log_level}\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        "  delete:\n    enabled: true\n"
        "  maintenance:\n    uploadpurging:\n      enabled: false\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: tests-only-{port}\n"
        + (f"  tls:\n    certificate: {tls[0]}\n    key: {tls[1]}\n" if tls else "")
        + auth_section
    )
    with (root / "registry.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, "serve", str(root / "config.yml")],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    registry = Distribution(process, f"127.0.0.1:{port}", root, auth)
    deadline = time.monotonic() + READY_TIMEOUT
    scheme = "https" if tls else "http"
    unverified = ssl._create_unverified_context()  # readiness only, not trust
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"docker-registry exited: {registry.log()}")
        try:
            urllib.request.urlopen(
                f"{scheme}://{registry.host}/v2/", timeout=1, context=unverified
            ).close()
            return registry
        except urllib.error.HTTPError as exc:
            if exc.code == 401 and auth:
                return registry
        except OSError:
            pass
        time.sleep(0.03)
    registry.stop()
    pytest.fail(f"docker-registry did not start: {registry.log()}")


def skopeo(*args: str | Path) -> str:
    """skopeo as the recipe runs it (host-platform surprises ruled out)."""
    return run(require("skopeo"), "--override-os", "linux", *args)
