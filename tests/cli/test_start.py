"""How the CLI starts: what it imports, Ctrl-C at any point, serve's start-up
errors (one line, exit 1), and server variables read by `serve` only.

The speed itself is measured by ``python -m tests.bench.bench_cli``; here the
modules a command loads are checked, which is what makes it fast."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagestore.cli.durations import format_duration, parse_duration
from tests.api.conftest import PROJECT, Server, start_server
from tests.cli.conftest import Cli

#: the server's modules: no command but `serve` may load one
SERVER_MODULES = (
    "aiohttp",
    "prometheus_client",
    "imagestore.api",
    "imagestore.store",
    "imagestore.registry",
    "imagestore.archive",
)

#: runs `python -m imagestore ARGS` and writes the modules it loaded to $MODULES_OUT
WITH_MODULES = textwrap.dedent(
    """
    import atexit, json, os, runpy, sys
    def dump():
        with open(os.environ["MODULES_OUT"], "w") as out:
            json.dump(sorted(sys.modules), out)
    atexit.register(dump)
    sys.argv = ["imagestore", *sys.argv[1:]]
    runpy.run_module("imagestore", run_name="__main__", alter_sys=True)
    """
)

#: as WITH_MODULES, but the process sends itself SIGINT when it starts importing
#: $INTERRUPT_AT: Ctrl-C at a known point of the start-up
INTERRUPTED = textwrap.dedent(
    """
    import os, runpy, signal, sys
    class Interrupt:
        def find_spec(self, name, path=None, target=None):
            if name == os.environ["INTERRUPT_AT"]:
                sys.meta_path.remove(self)
                os.kill(os.getpid(), signal.SIGINT)
            return None
    sys.meta_path.insert(0, Interrupt())
    sys.argv = ["imagestore", *sys.argv[1:]]
    runpy.run_module("imagestore", run_name="__main__", alter_sys=True)
    """
)


def _loaded(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int, list[str], str]:
    out = tmp_path / "modules.json"
    result = subprocess.run(
        [sys.executable, "-c", WITH_MODULES, *args],
        cwd=PROJECT,
        env={**env, "MODULES_OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.returncode, json.loads(out.read_text()), result.stdout


def _of(modules: list[str], packages: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)]


def test_version_and_help_import_neither_the_server_nor_grpc_for_version(
    tmp_path: Path,
) -> None:
    code, modules, out = _loaded(tmp_path, dict(os.environ), "--version")
    assert (code, out.split()[0]) == (0, "imagestore")
    assert _of(modules, (*SERVER_MODULES, "grpc", "imagestore.client", "rich")) == []
    code, modules, out = _loaded(tmp_path, dict(os.environ), "--help")
    assert code == 0
    assert "serve" in out
    assert "completion" in out
    assert _of(modules, SERVER_MODULES) == []


#: what `images -q` has no use for: the other commands' modules, the template
#: engine, the error classes and google.rpc's details (loaded once a call fails),
#: the stream classes, the models of other calls, and the libraries of other commands
NOT_FOR_IMAGES_Q = (
    "imagestore.cli.completion",
    "imagestore.cli.info",
    "imagestore.cli.login",
    "imagestore.cli.progress",
    "imagestore.cli.serve",
    "imagestore.cli.template",
    "imagestore.cli.transfer",
    "imagestore.cli.version",
    "imagestore.dockerconfig",
    "imagestore.oci",
    "imagestore.errors",
    "imagestore.client.failures",
    "imagestore.client.aio",
    "imagestore.client.calls",
    "imagestore.client.files",
    "imagestore.client.readers",
    "imagestore.client.models.check",
    "imagestore.client.models.events",
    "imagestore.client.models.results",
    "imagestore.client.models.server",
    "imagestore.client.models.transfer",
    "google.rpc.error_details_pb2",
    "pathlib",
    "rich",
    "shutil",  # argparse imports it to find the terminal's width, unless told it
    "tempfile",
)


def test_images_against_a_server_does_not_import_the_server(cli: Cli, tmp_path: Path) -> None:
    code, modules, out = _loaded(tmp_path, cli.env(), "images", "-q")
    assert (code, out) == (0, "")
    assert "grpc" in modules  # the call was made
    assert _of(modules, SERVER_MODULES) == []
    assert _of(modules, NOT_FOR_IMAGES_Q) == []


def test_a_failed_call_loads_the_errors_and_says_so_in_one_line(tmp_path: Path) -> None:
    """The error classes load when a call fails: the line is the same as ever."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{unused.getsockname()[1]}"  # nothing listens once closed
    env = {**os.environ, "IMAGESTORE_HOST": address}
    code, modules, out = _loaded(tmp_path, env, "images", "-q")
    assert (code, out) == (1, "")
    assert "imagestore.errors" in modules
    result = subprocess.run(
        [sys.executable, "-m", "imagestore", "images", "-q"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (result.returncode, result.stderr) == (
        1,
        f"Cannot connect to the imagestore server at {address}."
        " Is the imagestore server running?\n",
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--help", "images"],  # help before the command: every command listed
        ["-H", "127.0.0.1:1", "--he", "images"],  # argparse takes the prefix
    ],
)
def test_help_before_a_command_lists_every_command(tmp_path: Path, args: list[str]) -> None:
    code, _, out = _loaded(tmp_path, dict(os.environ), *args)
    assert code == 0
    assert "completion" in out
    assert "serve" in out


def test_serve_help_shows_its_options(tmp_path: Path) -> None:
    code, modules, out = _loaded(tmp_path, dict(os.environ), "serve", "--help")
    assert code == 0
    assert "--grace-period" in out
    assert "(default 10s)" in out
    assert "imagestore.api.server" in modules  # serve's own help does import it


@pytest.mark.parametrize(
    "where",
    [
        "imagestore.cli",  # `python -m imagestore` importing the command
        "imagestore.client",  # the command importing the client
        "imagestore.cli.images",  # the command modules
    ],
)
def test_ctrl_c_during_start_up_is_cancelled_and_exit_130(cli: Cli, where: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", INTERRUPTED, "images"],
        cwd=PROJECT,
        env={**cli.env(), "INTERRUPT_AT": where},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (result.returncode, result.stderr) == (130, "imagestore: cancelled\n")
    assert result.stdout == ""


BAD_SERVER_VARIABLES = {
    "IMAGESTORE_GRACE_PERIOD": "10x",
    "IMAGESTORE_MAX_CONCURRENT_DOWNLOADS": "abc",
    "IMAGESTORE_REGISTRY_BACKOFF": "soon",
}


def test_malformed_server_variables_do_not_break_other_commands(cli: Cli) -> None:
    env = {**cli.env(), **BAD_SERVER_VARIABLES}
    for args in (["--version"], ["images", "-q"], ["--help"]):
        result = subprocess.run(
            [sys.executable, "-m", "imagestore", *args],
            cwd=PROJECT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert (result.returncode, result.stderr) == (0, ""), args


def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-m", "imagestore", "serve", *args],
        cwd=PROJECT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in result.stderr
    return result.returncode, result.stderr


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_serve_start_up_errors_are_one_line_and_exit_1(tmp_path: Path, busy_port: int) -> None:
    regular = tmp_path / "a-file"
    regular.write_text("not a directory")
    pem = tmp_path / "cert.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    root = str(tmp_path / "root")
    listen = ("--root", root, "--listen", "127.0.0.1:0")
    cases = {
        "--tls-cert": [*listen, "--tls-cert", "/nonexistent/c.pem", "--tls-key", "/dev/null"],
        "--tls-key": [*listen, "--tls-cert", str(pem), "--tls-key", "/nonexistent/k.pem"],
        "--auth-token-file": [*listen, "--auth-token-file", "/nonexistent/tokens"],
        "--root": ["--root", str(regular / "store"), "--listen", "127.0.0.1:0"],
        "--metrics-listen": [*listen, "--metrics-listen", f"127.0.0.1:{busy_port}"],
        f"127.0.0.1:{busy_port}": ["--root", root, "--listen", f"127.0.0.1:{busy_port}"],
    }
    for named, args in cases.items():
        code, stderr = _serve(tmp_path, *args)
        assert code == 1, (named, stderr)
        [line] = stderr.splitlines()  # one line: no gRPC core log line, no traceback
        assert line.startswith("imagestore serve: "), line
        assert named in line, line
    code, stderr = _serve(tmp_path, *listen, env={"IMAGESTORE_GRACE_PERIOD": "10x"})
    assert code == 1
    assert stderr.splitlines() == [
        "imagestore serve: IMAGESTORE_GRACE_PERIOD: '10x' is not a duration: seconds, or a"
        " duration such as 500ms, 10s, 1m30s, 2h or 7d"
    ]


def test_serve_takes_go_and_systemd_durations(tmp_path: Path) -> None:
    running: Server = start_server(
        tmp_path / "root",
        "--listen",
        "127.0.0.1:0",
        "--grace-period",
        "1m30s",
        "--registry-backoff",
        "500ms",
        "--orphan-grace-period",
        "2h",
        env={"IMAGESTORE_EVENTS_MAX_AGE": "7d", "IMAGESTORE_REGISTRY_BLOB_TIMEOUT": "90"},
    )
    try:
        info = subprocess.run(
            [sys.executable, "-m", "imagestore", "-H", running.address, "info", "-f", "json"],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    finally:
        running.stop(signal.SIGTERM)
    registry = json.loads(info.stdout)["Registry"]
    assert registry["BackoffSeconds"] == 0.5
    assert registry["BlobTimeoutSeconds"] == 90


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10", 10.0),
        ("0.5", 0.5),
        ("10s", 10.0),
        ("1m30s", 90.0),
        ("2h", 7200.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        ("7d", 604800.0),
        ("1d12h", 129600.0),
        ("250us", 0.00025),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10x", "s", "1m30", "-5s", "nan", "inf", "1 h", "10s5"])
def test_not_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_defaults_read_as_durations() -> None:
    assert [format_duration(s) for s in (0, 0.5, 10, 90, 3600, 604800, 7200.0)] == [
        "0s",
        "0.5s",
        "10s",
        "1m30s",
        "1h",
        "7d",
        "2h",
    ]
