"""External tools the tests use for real (skopeo, umoci, …).

In CI a missing tool fails the test run; on a developer's machine it skips with
the command that installs it (``make test`` installs them when run as root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def require(tool: str, package: str | None = None) -> str:
    """The tool's path: from the venv (PyPI-shipped tools) or PATH."""
    beside_python = Path(sys.executable).parent / tool
    if beside_python.is_file():
        return str(beside_python)
    path = shutil.which(tool)
    if path is not None:
        return path
    message = f"{tool} is not installed (Debian package {package or tool}; `make test` installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def run(*args: str | Path, cwd: Path | None = None) -> str:
    """Run a tool; fail the test with its stderr when it fails."""
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, cwd=cwd, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )
    return result.stdout


def feed_until_closed(fd: int) -> bool:
    """Write to a FIFO until its reader closes it (True: EPIPE came); closes ``fd``.

    Each write wakes a reader blocked on the FIFO; a reader that stopped closes
    its end, and the next write fails. A reader that never stops blocks this."""
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except BrokenPipeError:
        return True
    finally:
        os.close(fd)
