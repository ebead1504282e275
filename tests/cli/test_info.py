"""imagestore info: the server's version, backend, catalog, root, counts and
limits as docker-style ``Key: value`` lines, as JSON and through a template;
the server's text escaped like any other untrusted text."""

from __future__ import annotations

import json
from pathlib import Path

from imagestore import hashing
from imagestore.version import __version__
from tests.api.conftest import start_server
from tests.archives import ImageSpec, docker_archive, tar_of
from tests.cli.conftest import Cli

IMAGE = ImageSpec(["info:1"], [tar_of({"a": b"a" * 3000}), tar_of({"b": b"b"})])


def _parse(out: str) -> dict[str, dict[str, str]]:
    """The lines by section ("" for the top level): label -> value."""
    parsed: dict[str, dict[str, str]] = {"": {}}
    section = ""
    for line in out.splitlines():
        label, _, value = line.strip().partition(": ")
        if not line.startswith(" ") and line.endswith(":"):
            section = line[:-1]
            parsed[section] = {}
        else:
            assert line.startswith(" ") == (section != ""), line
            parsed[section][label] = value
    return parsed


def _stored_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "blobs" / "sha256").iterdir())


def _load(cli: Cli, tmp_path: Path) -> None:
    archive = tmp_path / "info.tar"
    archive.write_bytes(docker_archive(IMAGE))
    cli.ok("load", "-i", str(archive))


def test_info_prints_docker_style_lines(cli: Cli, tmp_path: Path) -> None:
    _load(cli, tmp_path)
    shown = _parse(cli.ok("info"))
    assert shown[""] == {
        "Server Version": __version__,
        "API Version": "imagestore.v1",
        "Gzip Backend": hashing.backend(),
        "Catalog": "sqlite",
        "Root Dir": str(cli.server.root),
        "TLS": "false",
        "Mutual TLS": "false",
        "Auth": "none",
        "Images": "1",
        "Blobs": "4",  # two layers, a config, a manifest
        "Stored Size": shown[""]["Stored Size"],
    }
    assert shown[""]["Stored Size"].endswith("kB")  # docker's decimal sizes
    assert list(shown) == ["", "Limits", "Load Limits", "Registry"]
    assert shown["Limits"]["Max Concurrent RPCs"] == "256"
    assert shown["Limits"]["Max Response Size"] == "3.5MiB"  # docker info's binary sizes
    assert shown["Limits"]["Max Layer Size"] == "64GiB"
    assert shown["Load Limits"]["Max Members"] == "50000"
    # The registry options the fixture's server runs with (tests/registry/conftest.py).
    assert shown["Registry"]["Attempts"] == "3"
    assert shown["Registry"]["Backoff"] == "0.01s"
    assert shown["Registry"]["Blob Timeout"] == "2h"  # as the flag takes it
    assert shown["Registry"]["Min Speed"] == "1KiB/s"


def test_info_format_json_and_template(cli: Cli, tmp_path: Path) -> None:
    _load(cli, tmp_path)
    info = json.loads(cli.ok("info", "--format", "json"))
    assert info["RootDir"] == str(cli.server.root)
    assert (info["Images"], info["Blobs"]) == (1, 4)
    assert info["StoredSize"] == _stored_bytes(cli.server.root)
    assert info["Limits"]["MaxResponseBytes"] == 3584 << 10
    assert info["Registry"]["BackoffSeconds"] == 0.01
    out = cli.ok("info", "--format", "{{.Images}} {{.Limits.MaxConcurrentStreams}} {{.Auth}}")
    assert out == "1 32 none\n"


def test_info_escapes_the_servers_text(tmp_path: Path) -> None:
    root = tmp_path / "root\x1b]0;pwned\x07"  # a root an operator may name so
    server = start_server(root, "--listen", "127.0.0.1:0")
    try:
        home = tmp_path / "home"
        home.mkdir()
        cli = Cli(server, home)
        out = cli.ok("info")
        assert "\x1b" not in out
        assert "\x07" not in out
        assert f"Root Dir: {tmp_path}/root\\x1b]0;pwned\\x07\n" in out
        raw = cli.ok("info", "--format", "json")
        assert "\x1b" not in raw
        assert json.loads(raw)["RootDir"] == str(root)  # JSON stays exact
    finally:
        assert server.stop() == 0
