"""The CLI as a user runs it: a subprocess against a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.api.conftest import PROJECT, Server
from tests.registry.conftest import (  # noqa: F401 - fixtures shared with registry tests
    auth_registry,
    fresh_registry,
    published,
    registry,
    server,
)


@dataclass
class Cli:
    """Runs `imagestore -H <server> …` with its own docker config folder."""

    server: Server
    home: Path

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "IMAGESTORE_HOST": self.server.address,
            "DOCKER_CONFIG": str(self.home / ".docker"),
            "HOME": str(self.home),
        }

    def __call__(
        self, *args: str, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "imagestore", *args],
            cwd=PROJECT,
            env=self.env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def binary(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run with bytes in and out (archives through pipes)."""
        return subprocess.run(
            [sys.executable, "-m", "imagestore", *args],
            cwd=PROJECT,
            env=self.env(),
            input=input,
            capture_output=True,
            timeout=120,
            check=False,
        )

    def ok(self, *args: str, input: str | None = None) -> str:
        """Run; the command must succeed; its stdout."""
        result = self(*args, input=input)
        assert result.returncode == 0, f"{args}: {result.returncode}\n{result.stderr}"
        return result.stdout

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "imagestore", *args],
            cwd=PROJECT,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture
def cli(server: Server, tmp_path: Path) -> Cli:  # noqa: F811 - the fixture imported above
    home = tmp_path / "home"
    home.mkdir()
    return Cli(server, home)
