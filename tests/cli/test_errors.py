"""One error format: the server's answers as ``Error response from daemon: …``
(docker's words), the CLI's own findings as ``Error: …``; connection failures
as docker's "Cannot connect to …"; unreachable registries, retried or not;
`version` and docker's long forms."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import pytest

from tests.cli.conftest import Cli
from tests.registry.conftest import Published
from tests.registry.distribution import Distribution

MISSING = "Error response from daemon: No such image: nope:latest\n"


@pytest.mark.parametrize(
    "args",
    [
        ["rm", "nope"],
        ["inspect", "nope"],
        ["tag", "nope", "other:1"],
        ["save", "-o", "/dev/null", "nope"],
        ["history", "nope"],
        ["image", "rm", "nope"],
        ["image", "tag", "nope", "other:1"],
    ],
)
def test_a_missing_image_is_the_daemons_error_in_every_command(cli: Cli, args: list[str]) -> None:
    result = cli(*args)
    assert (result.returncode, result.stderr) == (1, MISSING)


def test_what_the_cli_finds_itself_is_error(cli: Cli) -> None:
    missing = cli("load", "-i", "/nonexistent/archive.tar")
    assert missing.returncode == 1
    assert missing.stderr.startswith("Error: ")
    assert "no such file or directory" in missing.stderr
    both = cli("login", "-u", "me", "-p", "x", "--password-stdin", "127.0.0.1:1", input="y\n")
    assert both.returncode == 1
    assert both.stderr.endswith("Error: --password and --password-stdin are mutually exclusive\n")


def test_an_invalid_filter_lists_the_valid_ones(cli: Cli) -> None:
    result = cli("images", "--filter", "bogus=1")
    assert result.returncode == 1
    assert result.stderr == (
        "Error response from daemon: invalid filter 'bogus' (valid filters: before,"
        " dangling, label, reference, since, until)\n"
    )


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: connections to it are refused."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


def test_an_unreachable_server_is_one_line(cli: Cli, closed_port: int) -> None:
    result = cli("-H", f"127.0.0.1:{closed_port}", "images")
    assert result.returncode == 1
    assert result.stderr == (
        f"Cannot connect to the imagestore server at 127.0.0.1:{closed_port}."
        " Is the imagestore server running?\n"
    )


@pytest.mark.parametrize("resolver", ["ares", "native"])
def test_a_server_name_that_does_not_resolve_is_one_line(
    cli: Cli, resolver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRPC_DNS_RESOLVER", resolver)
    result = cli("-H", "no-such-host.invalid:50051", "images")
    assert result.returncode == 1
    # the resolver's reason, not the call that failed ("getaddrinfo")
    assert re.fullmatch(
        r"Cannot connect to the imagestore server at no-such-host\.invalid:50051:"
        r" its host name does not resolve \((?!getaddrinfo\))[A-Za-z][^()\n]*\)\n",
        result.stderr,
    ), result.stderr


def test_tls_against_a_plaintext_server_says_so_without_grpc_log_lines(cli: Cli) -> None:
    result = cli("--tls", "images")
    assert result.returncode == 1
    assert result.stderr == (
        f"Cannot connect to the imagestore server at {cli.server.address}: the server does"
        " not speak TLS (drop --tls, or unset IMAGESTORE_TLS)\n"
    )


def test_version_shows_client_and_server(cli: Cli, closed_port: int) -> None:
    out = cli.ok("version").splitlines()
    assert out[0] == "Client:"
    assert out[1].startswith(" Version:")
    assert out[1].split()[-1] == out[9].split()[-1]
    assert "Server: imagestore" in out
    assert any(line.startswith("  API version:") for line in out)
    down = cli("-H", f"127.0.0.1:{closed_port}", "version")
    assert down.returncode == 1
    assert down.stdout.startswith("Client:\n Version:")
    assert "Server:" not in down.stdout.replace(" Server:", "")
    assert down.stderr.startswith("Cannot connect to the imagestore server")


def test_long_forms_are_the_short_commands(cli: Cli, published: Published) -> None:
    image = published.ref("umoci/hello:oci")
    pulled = cli.ok("image", "pull", "-q", image)
    assert pulled == image + "\n"
    assert cli.ok("image", "ls", "-q") == cli.ok("images", "-q") != ""
    assert cli.ok("image", "list", "--format", "{{.Tag}}") == "oci\n"
    cli.ok("image", "tag", image, "long/form:1")
    assert cli.ok("image", "inspect", "-f", "{{.Id}}", "long/form:1") == cli.ok(
        "inspect", "-f", "{{.Id}}", image
    )
    assert cli.ok("image", "history", "-q", "long/form:1")
    assert "Untagged: long/form:1" in cli.ok("image", "remove", "long/form:1")
    unknown = cli("image", "df")
    assert unknown.returncode == 2  # only docker's long forms exist under `image`


def test_a_push_without_login_says_unauthorized_and_how_to_log_in(
    cli: Cli, published: Published, auth_registry: Distribution
) -> None:
    image = published.ref("umoci/hello:oci")
    cli.ok("pull", "-q", image)
    target = f"{auth_registry.host}/private/nologin:1"
    cli.ok("tag", image, target)
    result = cli("push", target)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("Error response from daemon: ")
    assert "unauthorized: authentication required" in line
    assert line.endswith(f"(log in with: imagestore login {auth_registry.host})")


def test_a_registry_refusing_connections_is_retried_with_dockers_line(
    cli: Cli, closed_port: int
) -> None:
    result = cli("pull", f"127.0.0.1:{closed_port}/app:1")
    assert result.returncode == 1
    retries = [line for line in result.stdout.splitlines() if "Retrying in" in line]
    # FAST_RETRIES: three tries, so two waits (of 10 ms, shown as docker rounds up: 1 s)
    assert len(retries) == 2, result.stdout
    assert all(line.endswith("Retrying in 1 second") for line in retries)
    assert "Pulling from" not in result.stdout  # said once the registry answered, as docker
    assert result.stderr.startswith("Error response from daemon: ")
    assert "connection refused" in result.stderr.lower()


def test_a_registry_name_that_does_not_resolve_fails_at_once(cli: Cli) -> None:
    result = cli("pull", "nosuchhost.invalid/app:1")
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("Error response from daemon: ")
    assert "nosuchhost.invalid does not resolve" in line
    assert line.endswith("; check the name")
