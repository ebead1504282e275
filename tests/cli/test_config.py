"""`imagestore serve`'s configuration file, through the real command: which
layer wins (flag > IMAGESTORE_* variable > file > default), --print-config and
its round trip, a server started from a file, and every way a file can be wrong
(one line naming the file and the key, exit 1, no traceback)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imagestore.cli.config_file import DEFAULT_PATH
from tests.api.conftest import PROJECT, start_server
from tests.cli.conftest import Cli


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``imagestore serve ARGS`` with no IMAGESTORE_* variable but ``env``'s."""
    return imagestore("serve", *args, env=env)


def imagestore(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``imagestore ARGS`` with no IMAGESTORE_* variable but ``env``'s."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IMAGESTORE_")}
    result = subprocess.run(
        [sys.executable, "-m", "imagestore", *args],
        cwd=PROJECT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def printed(*args: str, env: dict[str, str] | None = None) -> tuple[str, dict[str, Any]]:
    """--print-config's output, and its settings as TOML reads them."""
    result = serve("--print-config", *args, env=env)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    return result.stdout, tomllib.loads(result.stdout)


def origins(output: str) -> dict[str, str]:
    """key → the origin comment of each line that sets or names a key."""
    found = {}
    for line in output.splitlines():
        head, _, origin = line.rpartition("  # ")
        if line.startswith("# ") and head.endswith(": not set"):
            found[head.removeprefix("# ").removesuffix(": not set")] = origin
        elif not line.startswith("#"):
            found[head.partition(" = ")[0]] = origin
    return found


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_flag_wins_over_a_variable_over_the_file_over_the_default(tmp_path: Path) -> None:
    config = write(
        tmp_path / "config.toml",
        """
        listen = "127.0.0.1:7001"
        max-concurrent-rpcs = 11
        max-concurrent-streams = 12
        grace-period = "30s"
        insecure = true
        insecure-registry = ["file.example:5000"]
        registry-ca = ["/file/ca.pem"]
        log-level = "debug"
        log-format = "json"
        """.replace("\n        ", "\n"),
    )
    env = {
        "IMAGESTORE_MAX_CONCURRENT_RPCS": "21",
        "IMAGESTORE_GRACE_PERIOD": "1m",
        "IMAGESTORE_INSECURE": "0",
        "IMAGESTORE_INSECURE_REGISTRY": "env.example, 10.0.0.0/8",
        "IMAGESTORE_LOG_FORMAT": "text",
    }
    output, settings = printed(
        "--config",
        str(config),
        "--max-concurrent-rpcs",
        "31",
        "--registry-ca",
        "/flag/a.pem",
        "--registry-ca",
        "/flag/b.pem",
        env=env,
    )
    where = origins(output)
    in_file = f"file {config}"
    expected = {
        "max-concurrent-rpcs": (31, "flag"),
        "registry-ca": (["/flag/a.pem", "/flag/b.pem"], "flag"),  # replaces the file's list
        "grace-period": ("1m", "env IMAGESTORE_GRACE_PERIOD"),
        "insecure": (False, "env IMAGESTORE_INSECURE"),
        "insecure-registry": (["env.example", "10.0.0.0/8"], "env IMAGESTORE_INSECURE_REGISTRY"),
        "log-format": ("text", "env IMAGESTORE_LOG_FORMAT"),
        "listen": ("127.0.0.1:7001", in_file),
        "max-concurrent-streams": (12, in_file),
        "log-level": ("debug", in_file),
        "max-concurrent-watches": (256, "default"),
        "registry-backoff": ("1s", "default"),
    }
    assert {key: (settings[key], where[key]) for key in expected} == expected
    assert f"# configuration file: {config} (--config)" in output.splitlines()


def test_without_a_file_every_value_is_the_default(tmp_path: Path) -> None:
    assert not DEFAULT_PATH.exists(), f"{DEFAULT_PATH} on this machine would change the test"
    output, settings = printed()
    assert set(origins(output).values()) == {"default"}
    assert f"# configuration file: none ({DEFAULT_PATH} is not present)" in output
    assert settings["listen"] == "127.0.0.1:50051"
    assert settings["grace-period"] == "10s"
    assert settings["insecure"] is False
    assert settings["insecure-registry"] == []
    assert settings["log-format"] == "text"
    assert "# tls-cert: not set  # default" in output.splitlines()
    assert "registry-test-resolve" not in output  # test-only, hidden unless set


def test_imagestore_config_names_the_file_and_config_names_another_or_none(
    tmp_path: Path,
) -> None:
    by_variable = write(tmp_path / "variable.toml", "max-concurrent-rpcs = 5\n")
    by_flag = write(tmp_path / "flag.toml", "max-concurrent-rpcs = 6\n")
    env = {"IMAGESTORE_CONFIG": str(by_variable)}
    output, settings = printed(env=env)
    assert settings["max-concurrent-rpcs"] == 5
    assert origins(output)["max-concurrent-rpcs"] == f"file {by_variable}"
    assert f"# configuration file: {by_variable} (IMAGESTORE_CONFIG)" in output
    _, settings = printed("--config", str(by_flag), env=env)
    assert settings["max-concurrent-rpcs"] == 6
    output, settings = printed("--config", "", env=env)  # an empty name: no file at all
    assert settings["max-concurrent-rpcs"] == 256
    assert set(origins(output).values()) == {"default"}


def test_print_config_reads_back_as_the_same_configuration(tmp_path: Path) -> None:
    config = write(
        tmp_path / "config.toml",
        'registry-mirror = ["https://mirror.example"]\nregistry-blob-timeout = 5400\n',
    )
    first, settings = printed(
        "--config",
        str(config),
        "--tls-cert",
        str(tmp_path / 'odd "name"\\ with\ttab\nand newline é.pem'),
        "--insecure",
        "--registry-backoff",
        "0.25",
        "--registry-speed-window",
        "0.000000001",  # no duration form reads back as this: written as a number
        "--orphan-grace-period",
        "1d2h3m4s",
        env={"IMAGESTORE_REGISTRY_ALLOW_INTERNAL": "192.168.0.0/16,fd00::/8"},
    )
    assert settings["registry-speed-window"] == pytest.approx(1e-9)
    assert settings["orphan-grace-period"] == "1d2h3m4s"
    assert settings["registry-blob-timeout"] == "1h30m"
    again = write(tmp_path / "printed.toml", first)
    second, settings_again = printed("--config", str(again))
    assert settings_again == settings
    assert set(origins(second)) == set(origins(first))  # unset stays unset
    assert set(origins(second).values()) == {f"file {again}", "default"}
    assert origins(second)["tls-key"] == "default"  # a comment line sets nothing


def test_print_config_shows_the_token_file_path_not_its_tokens(tmp_path: Path) -> None:
    tokens = write(tmp_path / "tokens", "s3cret-token\n")
    config = write(tmp_path / "config.toml", f'auth-token-file = "{tokens}"\n')
    output, settings = printed("--config", str(config))
    assert settings["auth-token-file"] == str(tokens)
    assert "s3cret" not in output


def test_the_clients_global_options_are_not_serves(tmp_path: Path) -> None:
    result = imagestore("--tls-cert", "/client/cert.pem", "serve", "--print-config")
    assert result.returncode == 0, result.stderr
    assert "# tls-cert: not set  # default" in result.stdout.splitlines()


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory for a unix socket (paths are limited to 107 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="is-config-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_a_server_started_from_a_file_serves_with_its_settings(
    tmp_path: Path, socket_dir: Path
) -> None:
    listen = f"unix://{socket_dir / 'imagestore.sock'}"
    config = write(
        tmp_path / "config.toml",
        f"""
        listen = "{listen}"
        grace-period = "5s"
        max-concurrent-rpcs = 7
        max-concurrent-streams = 9
        max-concurrent-watches = 13
        registry-backoff = "250ms"
        load-max-members = 1234
        log-level = "warning"
        """.replace("\n        ", "\n"),
    )
    running = start_server(
        tmp_path / "root",
        "--config",
        str(config),
        "--max-concurrent-watches",
        "11",
        env={"IMAGESTORE_MAX_CONCURRENT_STREAMS": "5"},
    )
    try:
        assert running.address == listen
        info = subprocess.run(
            [sys.executable, "-m", "imagestore", "-H", running.address, "info", "-f", "json"],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    finally:
        code = running.stop(signal.SIGTERM)
    assert code == 0, "".join(running.stderr_lines)
    shown = json.loads(info.stdout)
    assert shown["Limits"]["MaxConcurrentRPCs"] == 7  # the file
    assert shown["Limits"]["MaxConcurrentStreams"] == 5  # the variable over the file
    assert shown["Limits"]["MaxConcurrentWatches"] == 11  # the flag over the file
    assert shown["LoadLimits"]["MaxMembers"] == 1234
    assert shown["Registry"]["BackoffSeconds"] == 0.25


DURATION_FORMS = "seconds, or a duration such as 500ms, 10s, 1m30s, 2h or 7d"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('listn = "127.0.0.1:1"', "unknown key 'listn' (did you mean 'listen'?)"),
        (
            "max_concurrent_rpcs = 3",
            "unknown key 'max_concurrent_rpcs' (did you mean 'max-concurrent-rpcs'?)",
        ),
        ("zzz = 1", "unknown key 'zzz'"),
        ('[server]\nlisten = "x"', "unknown key 'server'"),
        ('config = "/other.toml"', "unknown key 'config' (--config is a command-line option only)"),
        (
            "print-config = true",
            "unknown key 'print-config' (--print-config is a command-line option only)",
        ),
        (
            'max-concurrent-rpcs = "abc"',
            "key 'max-concurrent-rpcs': expected an integer, got \"abc\"",
        ),
        ("max-concurrent-rpcs = 1.5", "key 'max-concurrent-rpcs': expected an integer, got 1.5"),
        ("load-max-members = true", "key 'load-max-members': expected an integer, got true"),
        ('insecure = "yes"', "key 'insecure': expected a boolean (true or false), got \"yes\""),
        ("insecure = 1", "key 'insecure': expected a boolean (true or false), got 1"),
        (
            'grace-period = "soon"',
            f"key 'grace-period': 'soon' is not a duration: {DURATION_FORMS}",
        ),
        ("grace-period = -1", f"key 'grace-period': '-1' is not a duration: {DURATION_FORMS}"),
        (
            "grace-period = false",
            "key 'grace-period': expected a duration (seconds, or a string such as \"1m30s\"),"
            " got false",
        ),
        (
            'insecure-registry = "a"',
            "key 'insecure-registry': expected an array of strings, got \"a\"",
        ),
        ('registry-ca = ["a", 2]', "key 'registry-ca': expected an array of strings, got 2"),
        ("listen = 50051", "key 'listen': expected a string, got 50051"),
        ('tls-cert = ["a"]', "key 'tls-cert': expected a string, got [\"a\"]"),
        (
            'log-level = "verbose"',
            "key 'log-level': invalid choice: 'verbose' (choose from debug, info, warning, error)",
        ),
        ("log-format = 1", 'key \'log-format\': expected one of "text", "json", got 1'),
    ],
)
def test_a_wrong_key_or_value_is_one_line_naming_the_file_and_key(
    tmp_path: Path, text: str, error: str
) -> None:
    config = write(tmp_path / "config.toml", f'root = "{tmp_path / "root"}"\n{text}\n')
    # the flag would win over the file's value: the file is checked all the same
    result = serve("--config", str(config), "--listen", "127.0.0.1:0", "--max-concurrent-rpcs", "3")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line == f"imagestore serve: {config}: {error}"
    assert result.stdout == ""
    assert not (tmp_path / "root").exists()


def test_a_toml_syntax_error_is_one_line_with_its_line_and_column(tmp_path: Path) -> None:
    config = write(tmp_path / "config.toml", 'listen = "127.0.0.1:0"\ngrace-period = 10s\n')
    result = serve("--config", str(config), "--print-config")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"imagestore serve: {config}: invalid TOML: "), line
    assert line.endswith("(at line 2, column 18)"), line


def test_a_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_bytes(b'listen = "\xff"\n')
    result = serve("--config", str(config), "--print-config")
    assert (result.returncode, result.stderr) == (
        1,
        f"imagestore serve: {config}: not UTF-8 text\n",
    )


def test_a_named_file_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    loop = tmp_path / "loop.toml"
    loop.symlink_to(loop)
    missing = tmp_path / "missing.toml"
    cases = [
        ("--config", missing, "no such file or directory"),
        ("IMAGESTORE_CONFIG", missing, "no such file or directory"),
        ("--config", tmp_path, "is a directory"),
        ("--config", loop, "too many levels of symbolic links"),
    ]
    if os.geteuid() != 0:  # root reads a file whatever its mode
        private = write(tmp_path / "private.toml", 'listen = "127.0.0.1:0"\n')
        private.chmod(0)
        cases.append(("--config", private, "permission denied"))
    for named_by, path, reason in cases:
        if named_by == "IMAGESTORE_CONFIG":
            result = serve("--print-config", env={named_by: str(path)})
        else:
            result = serve("--config", str(path), "--print-config")
        expected = f"imagestore serve: {named_by} {path}: {reason}\n"
        assert (result.returncode, result.stderr, result.stdout) == (1, expected, "")


@pytest.mark.parametrize(
    ("variable", "value", "error"),
    [
        ("IMAGESTORE_MAX_CONCURRENT_RPCS", "abc", "invalid integer: 'abc'"),
        ("IMAGESTORE_REGISTRY_BACKOFF", "soon", f"'soon' is not a duration: {DURATION_FORMS}"),
        (
            "IMAGESTORE_LOG_FORMAT",
            "xml",
            "invalid choice: 'xml' (choose from text, json)",
        ),
        (
            "IMAGESTORE_INSECURE",
            "sure",
            "expected a boolean (1, true, yes, on or 0, false, no, off), got 'sure'",
        ),
    ],
)
def test_a_malformed_variable_is_one_line_naming_it(variable: str, value: str, error: str) -> None:
    result = serve("--print-config", env={variable: value})
    assert (result.returncode, result.stderr) == (1, f"imagestore serve: {variable}: {error}\n")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("TRUE", True), ("On", True), ("1", True), ("False", False), ("off", False), ("", False)],
)
def test_a_switch_variable_reads_the_usual_words_in_any_case(value: str, expected: bool) -> None:
    _, settings = printed(env={"IMAGESTORE_INSECURE": value})
    assert settings["insecure"] is expected


def test_a_flag_over_a_malformed_variable_wins_without_reading_it() -> None:
    _, settings = printed("--grace-period", "3", env={"IMAGESTORE_GRACE_PERIOD": "10x"})
    assert settings["grace-period"] == "3s"


def test_other_commands_read_no_configuration_file(cli: Cli, tmp_path: Path) -> None:
    broken = write(tmp_path / "broken.toml", "listen = \n")
    env = {**cli.env(), "IMAGESTORE_CONFIG": str(broken)}
    for args in (["images", "-q"], ["--version"], ["serve", "--help"]):
        result = imagestore(*args, env=env)
        assert (result.returncode, result.stderr) == (0, ""), args
    assert "--print-config" in result.stdout
    assert "--log-format {text,json}" in result.stdout
