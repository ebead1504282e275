"""pull, push, login and logout as a user runs them, against the real registry;
and Ctrl-C in the middle of a pull."""

from __future__ import annotations

import json
import random
import signal
import threading
from collections.abc import Iterator

import pytest

from imagestore.registry.pull import WRITE_CHUNK
from tests.api.conftest import Server, wait_until
from tests.archives import tar_of
from tests.cli.conftest import Cli
from tests.cli.registry import SmallRegistry
from tests.registry.conftest import Published
from tests.registry.distribution import PASSWORD, USER, Distribution, skopeo
from tests.registry.hostile import make_image


def test_pull_prints_dockers_lines_when_not_a_terminal(cli: Cli, published: Published) -> None:
    image = published.ref("umoci/hello:oci")
    manifest_digest, config_digest, _ = published.images["umoci/hello:oci"]
    out = cli.ok("pull", image).splitlines()
    assert out[0] == "oci: Pulling from umoci/hello"
    layer = out[1].split(":")[0]
    # docker prints no byte counts without a terminal: no Downloading line
    assert out[1:5] == [
        f"{layer}: Pulling fs layer",
        f"{layer}: Verifying Checksum",
        f"{layer}: Download complete",
        f"{layer}: Pull complete",
    ]
    assert out[-3:] == [
        f"Digest: {manifest_digest}",
        f"Status: Downloaded newer image for {image}",
        image,
    ]
    # up to date: docker's Digest and Status, no line per layer
    assert cli.ok("pull", image).splitlines() == [
        "oci: Pulling from umoci/hello",
        f"Digest: {manifest_digest}",
        f"Status: Image is up to date for {image}",
        image,
    ]
    assert cli.ok("pull", "-q", image) == image + "\n"
    assert cli.ok("inspect", "--format", "{{.Id}}", image).strip() == config_digest
    shown = cli.ok("images", "--format", "{{.Repository}}@{{.Digest}}").split()
    assert shown == [f"{published.host}/umoci/hello@{manifest_digest}"]
    table = cli.ok("images", "--digests", "--format", "table {{.Tag}}").splitlines()
    assert table[0].split() == ["TAG", "DIGEST"]
    assert table[1].split() == ["oci", manifest_digest]


def test_pull_all_tags_prints_each_tag_then_the_repository(cli: Cli, published: Published) -> None:
    repository = published.ref("umoci/hello")
    result = cli("pull", "-a", repository)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert "Using default tag: latest" not in out
    headings = [line for line in out if line.endswith(": Pulling from umoci/hello")]
    assert sorted(headings) == [
        "oci: Pulling from umoci/hello",
        "v2s2: Pulling from umoci/hello",
    ]
    digests = {published.images[f"umoci/hello:{tag}"][0] for tag in ("oci", "v2s2")}
    assert {line for line in out if line.startswith("Digest: ")} == {
        f"Digest: {digest}" for digest in digests
    }
    assert out[-2:] == [f"Status: Downloaded newer image for {repository}", repository]
    tags = cli.ok("images", "--format", "{{.Tag}}", repository).split()
    assert sorted(tags) == ["oci", "v2s2"]
    refused = cli("pull", "--all-tags", published.ref("umoci/hello:oci"))
    assert refused.returncode == 1
    assert refused.stderr == "Error: tag can't be used with --all-tags/-a\n"


def test_pull_without_a_tag_says_it_uses_latest(cli: Cli, published: Published) -> None:
    result = cli("pull", published.ref("umoci/hello"))
    assert result.stdout.startswith("Using default tag: latest\n")
    assert result.returncode == 1
    assert result.stderr.startswith("Error response from daemon: manifest for")


def test_pull_a_platform_then_push_to_a_fresh_registry(
    cli: Cli, published: Published, fresh_registry: Distribution
) -> None:
    name = published.ref("umoci/multi:1")
    cli.ok("pull", "--platform", "linux/arm64", name)
    assert (
        cli.ok("inspect", "--platform", "linux/arm64", "--format", "{{.Architecture}}", name)
        == "arm64\n"
    )
    target = f"{fresh_registry.host}/cli/app:1"
    cli.ok("tag", name, target)
    refused = cli("push", target)
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error response from daemon: cannot push the whole index")
    out = cli.ok("push", "--platform", "linux/arm64", target).splitlines()
    assert out[0] == f"The push refers to repository [{fresh_registry.host}/cli/app]"
    assert any(line.endswith(": Pushed") for line in out)
    digest = published.images["umoci/multi:1@arm64"][0]
    assert out[-1] == f"1: digest: {digest} size: {out[-1].rsplit(' ', 1)[1]}"
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{target}"))
    assert inspected["Digest"] == digest


def test_login_keeps_credentials_that_pull_and_push_then_use(
    cli: Cli, published: Published, auth_registry: Distribution
) -> None:
    private = f"{auth_registry.host}/private/cli:1"
    skopeo(
        "copy", "--dest-tls-verify=false", "--dest-creds", f"{USER}:{PASSWORD}",
        f"oci:{published.layout}:v1-amd64", f"docker://{private}",
    )  # fmt: skip
    denied = cli("pull", private)
    assert denied.returncode == 1
    assert denied.stderr.startswith("Error response from daemon: ")

    wrong = cli("login", "-u", USER, "--password-stdin", auth_registry.host, input="nope\n")
    assert wrong.returncode == 1
    assert "unauthorized" in wrong.stderr
    assert not (cli.home / ".docker" / "config.json").exists()

    out = cli.ok("login", "-u", USER, "--password-stdin", auth_registry.host, input=PASSWORD + "\n")
    assert out == "Login Succeeded\n"
    config = cli.home / ".docker" / "config.json"
    assert config.stat().st_mode & 0o077 == 0
    assert auth_registry.host in json.loads(config.read_text())["auths"]

    assert cli.ok("pull", "-q", private) == private + "\n"
    cli.ok("tag", private, f"{auth_registry.host}/private/cli:2")
    cli.ok("push", f"{auth_registry.host}/private/cli:2")

    assert (
        cli.ok("logout", auth_registry.host)
        == f"Removing login credentials for {auth_registry.host}\n"
    )
    assert cli.ok("logout", auth_registry.host) == f"Not logged in to {auth_registry.host}\n"
    cli.ok("rm", private)
    assert cli("pull", private).returncode == 1


def test_login_without_a_terminal_needs_password_stdin(
    cli: Cli, auth_registry: Distribution
) -> None:
    result = cli("login", "-u", USER, auth_registry.host, input="")
    assert result.returncode == 1
    assert "non TTY device" in result.stderr


@pytest.fixture
def small_registry() -> Iterator[SmallRegistry]:
    with SmallRegistry().running() as registry:
        yield registry


def test_ctrl_c_during_a_pull_cancels_it_and_leaves_the_store_clean(
    cli: Cli, server: Server, small_registry: SmallRegistry
) -> None:
    # the registry sends two of the server's write batches (the CLI then shows the
    # layer: it has work), then holds the rest: the pull cannot end before Ctrl-C does
    image = make_image([tar_of({"big": random.Random(6).randbytes(4 * WRITE_CHUNK)})])
    small_registry.add_image("slow/app", "1", image)
    held = small_registry.hold(image.layer_digests[0], first=2 * WRITE_CHUNK)
    process = cli.popen("pull", f"{small_registry.host}/slow/app:1")
    assert process.stdout is not None
    shown = []
    watchdog = threading.Timer(120, process.kill)  # a CLI that never says it ends the wait
    watchdog.start()
    for line in process.stdout:
        shown.append(line)
        if line.endswith(": Pulling fs layer\n"):
            break
    watchdog.cancel()
    assert "".join(shown).endswith(": Pulling fs layer\n"), "".join(shown)
    assert held.wait(60)  # the first part is out and the rest held: the pull is mid-layer
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.endswith("imagestore: cancelled\n")
    wait_until(lambda: not list((server.root / "blobs" / "ingest").iterdir()), timeout=60)
    small_registry.release()  # too late: the server has dropped the pull
    assert cli.ok("images", "-a", "-q") == ""
    assert cli.ok("check").startswith("ok: ")
    assert not list((server.root / "blobs" / "sha256").iterdir())
