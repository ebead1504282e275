"""deploy/: the systemd unit, the example configuration and the container recipe.

The unit is checked by systemd's own verifier and security analyser (offline: no
running systemd is needed), the configuration by the server's reader
(``--print-config``), and the unit's hardening claim that the server needs no
writable executable memory by running the real server under the kernel's
equivalent of ``MemoryDenyWriteExecute=yes``. The Dockerfile cannot be built
here (no container engine); what it copies is checked to exist.
"""

from __future__ import annotations

import configparser
import errno
import os
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from imagestore.cli.durations import parse_duration
from imagestore.v1 import imagestore_pb2 as pb
from imagestore.v1 import imagestore_pb2_grpc as pb_grpc
from tests.api.conftest import (
    PROJECT,
    START_TIMEOUT,
    close_notify_socket,
    notify_socket,
    wait_for_ready,
)
from tests.archives import ImageSpec, docker_archive
from tests.store.builders import layer_tar
from tests.tools import require

DEPLOY = PROJECT / "deploy"
UNIT = DEPLOY / "imagestore.service"
CONFIG = DEPLOY / "config.toml"
INSTALLED_COMMAND = "/opt/imagestore/venv/bin/imagestore"
#: systemd-analyze security's exposure, times ten: below 2.0 is its "OK" band
EXPOSURE_THRESHOLD = 20
PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1


def service_section() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(UNIT)
    return parser["Service"]


@pytest.fixture
def unit_here(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's command: the verifier
    checks that the binary exists and is executable."""
    command = Path(sys.executable).parent / "imagestore"
    assert command.is_file()
    text = UNIT.read_text()
    assert INSTALLED_COMMAND in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED_COMMAND, str(command)))
    return copy


def test_the_unit_passes_systemd_analyze_verify(unit_here: Path) -> None:
    analyze = require("systemd-analyze", "systemd")
    result = subprocess.run(
        [analyze, "verify", str(unit_here)], capture_output=True, text=True, check=False
    )
    # verify exits 0 after an unknown key or a value it cannot parse, only
    # warning about it: anything it says is a defect of the unit. It does not
    # look up User= (useradd is an install step, in the unit's header).
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


def test_the_unit_is_sandboxed(unit_here: Path) -> None:
    analyze = require("systemd-analyze", "systemd")
    threshold = f"--threshold={EXPOSURE_THRESHOLD}"
    result = subprocess.run(
        [analyze, "security", "--offline=yes", threshold, str(unit_here)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    service = service_section()
    for key, value in {
        "Type": "notify",
        "User": "imagestore",
        "Group": "imagestore",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallFilter": "@system-service",
        "CapabilityBoundingSet": "",
        "Restart": "on-failure",
    }.items():
        assert service.get(key) == value, key


def test_the_unit_and_the_example_configuration_agree() -> None:
    service = service_section()
    config = tomllib.loads(CONFIG.read_text())
    command = shlex.split(service["ExecStart"])
    assert command[:2] == [INSTALLED_COMMAND, "serve"]
    config_path = command[command.index("--config") + 1]
    assert config_path == "/etc/imagestore/config.toml"
    assert config["root"] == f"/var/lib/{service['StateDirectory']}"
    socket_path = config["listen"].removeprefix("unix://")
    assert Path(socket_path).parent == Path("/run") / service["RuntimeDirectory"]
    # systemd's stop timeout must leave the server its grace period, and some.
    assert parse_duration(service["TimeoutStopSec"]) > parse_duration(config["grace-period"])


def print_config(config: Path) -> subprocess.CompletedProcess[str]:
    """``serve --config CONFIG --print-config``, with no IMAGESTORE_* variable set."""
    result = subprocess.run(
        [sys.executable, "-m", "imagestore", "serve", "--config", str(config), "--print-config"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("IMAGESTORE_")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_every_key_of_the_example_configuration_is_a_serve_option() -> None:
    keys = set(tomllib.loads(CONFIG.read_text()))
    result = print_config(CONFIG)
    printed = tomllib.loads(result.stdout)  # it prints TOML that reads back
    from_file = {
        line.split(" = ", 1)[0] for line in result.stdout.splitlines() if f"# file {CONFIG}" in line
    }
    assert from_file == keys, result.stdout
    assert printed["listen"] == "unix:///run/imagestore/imagestore.sock"


def test_the_commented_tls_variant_is_valid_too(tmp_path: Path) -> None:
    """Uncommenting the TCP + TLS + token block gives a configuration that reads."""
    lines = CONFIG.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "TCP with TLS" in line)
    variant = [line for line in lines[:start] if not line.startswith("listen")]
    variant += [line.removeprefix("# ") for line in lines[start + 1 :]]
    config = tmp_path / "tls.toml"
    config.write_text("\n".join(variant) + "\n")
    keys = set(tomllib.loads(config.read_text()))
    assert {"tls-cert", "tls-key", "auth-token-file", "listen"} <= keys
    result = print_config(config)
    assert 'listen = "0.0.0.0:50051"' in result.stdout


def test_the_dockerfile_copies_files_that_exist() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    copied = []
    for line in dockerfile.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            copied += words[1:-1]
    assert copied
    for source in copied:
        assert (PROJECT / source).exists(), source
    entrypoint = [line for line in dockerfile.splitlines() if line.startswith("ENTRYPOINT")]
    assert entrypoint == ['ENTRYPOINT ["imagestore", "serve"]']


# ---- MemoryDenyWriteExecute=yes ---------------------------------------------------

#: the kernel's MDWE, set on the process itself: no mapping may become W+X
SET_MDWE = f"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_MDWE): " + os.strerror(ctypes.get_errno()))
assert libc.prctl({PR_GET_MDWE}, 0, 0, 0, 0) == {PR_MDWE_REFUSE_EXEC_GAIN}
"""
#: then becomes the command its arguments name (MDWE survives exec)
MDWE_EXEC = SET_MDWE + "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"


def mdwe_supported() -> bool:
    """PR_SET_MDWE (Linux 6.3+), probed in a child: it cannot be undone."""
    probe = subprocess.run(
        [sys.executable, "-c", SET_MDWE],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode == 0:
        return True
    assert os.strerror(errno.EINVAL) in probe.stderr, probe.stderr
    return False


@pytest.fixture
def server_without_wx_memory(tmp_path: Path) -> Iterator[str]:
    if not mdwe_supported():
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    receiver = notify_socket()
    stderr = (tmp_path / "stderr").open("w")
    command = [sys.executable, "-c", MDWE_EXEC, "-m", "imagestore", "serve", "--config", ""]
    command += ["--root", str(tmp_path / "root"), "--listen", "127.0.0.1:0"]
    process = subprocess.Popen(
        command,
        cwd=PROJECT,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        env={**os.environ, "NOTIFY_SOCKET": receiver.getsockname()},
    )
    try:
        address = wait_for_ready(receiver, START_TIMEOUT)
        assert address, (tmp_path / "stderr").read_text()[-3000:]
        yield address
    finally:
        process.terminate()
        assert process.wait(30) == 0, (tmp_path / "stderr").read_text()[-3000:]
        stderr.close()
        close_notify_socket(receiver)


def test_the_server_needs_no_writable_executable_memory(server_without_wx_memory: str) -> None:
    """A Load hashes and gzip-compresses through the native extension, over gRPC."""
    image = ImageSpec(tags=["mdwe:1"], layers=[layer_tar({"app": b"x" * 100_000})])
    archive = docker_archive(image)
    with grpc.insecure_channel(server_without_wx_memory) as channel:
        stub = pb_grpc.ImageStoreServiceStub(channel)  # type: ignore[no-untyped-call]
        requests = iter([pb.LoadRequest(chunk=archive)])
        responses = list(stub.Load(requests, timeout=60))
        assert [i.id for i in responses[-1].result.images] == [image.image_id]
        listed = stub.ListImages(pb.ListImagesRequest(), timeout=10)
        assert [i.id for i in listed.images] == [image.image_id]
