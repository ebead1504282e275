"""The CLI on a real terminal (tmux): live progress bars during a pull, then a
clean `images` table. The screens are written to IMAGESTORE_SCREENS when set."""

from __future__ import annotations

import os
import random
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imagestore.registry.pull import WRITE_CHUNK
from tests.api.conftest import PROJECT
from tests.archives import tar_of
from tests.cli.conftest import Cli
from tests.cli.registry import SmallRegistry
from tests.registry.hostile import make_image
from tests.tools import require


class Terminal:
    """One tmux session of ours, 110 x 24."""

    def __init__(self, tmux: str, name: str) -> None:
        self.tmux = tmux
        self.name = name

    def start(self, command: str, env: dict[str, str]) -> None:
        settings = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
        subprocess.run(
            [self.tmux, "new-session", "-d", "-s", self.name, "-x", "110", "-y", "24",
             *settings, command],
            check=True,
        )  # fmt: skip

    def screen(self) -> str:
        return subprocess.run(
            [self.tmux, "capture-pane", "-p", "-t", self.name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def title(self) -> str:
        """The pane's title: what an OSC 0 or 2 sequence printed in it sets."""
        return subprocess.run(
            [self.tmux, "display-message", "-p", "-t", self.name, "#{pane_title}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    def wait_for(self, done: Callable[[str], bool], timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.screen()
            if done(text):
                return text
            time.sleep(0.05)
        pytest.fail(f"terminal never showed what was expected:\n{self.screen()}")

    def stop(self) -> None:
        subprocess.run([self.tmux, "kill-session", "-t", self.name], check=False)


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    session = Terminal(require("tmux"), f"imagestore-test-{os.getpid()}")
    yield session
    session.stop()


def _keep(name: str, text: str) -> None:
    folder = os.environ.get("IMAGESTORE_SCREENS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / name).write_text(text)


def test_a_pull_shows_live_bars_and_images_a_clean_table(cli: Cli, terminal: Terminal) -> None:
    rng = random.Random(3)
    layers = [tar_of({f"layer{i}": rng.randbytes(3 * WRITE_CHUNK)}) for i in range(3)]
    image = make_image(layers)
    with SmallRegistry().running() as registry:
        registry.add_image("demo/app", "1", image)
        for digest in image.layer_digests:  # each layer waits, half sent, for the screen
            registry.hold(digest, first=2 * WRITE_CHUNK)
        reference = f"{registry.host}/demo/app:1"
        command = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "imagestore"))
        folder = shlex.quote(str(PROJECT))
        script = f"cd {folder} && {command} pull {reference} && {command} images; sleep 60"
        terminal.start(script, {k: v for k, v in cli.env().items() if k in _PASSED})

        layer_ids = [d.removeprefix("sha256:")[:12] for d in image.layer_digests]
        live = terminal.wait_for(
            lambda s: s.count("Downloading") == 3 and "━" in s and "MB" in s
        )  # the layers are held: the bars stay live until the release below
        _keep("pull-live.txt", live)
        assert "Pulling from demo/app" in live
        assert sum(f"{i}:" in live for i in layer_ids) == 3

        registry.release()
        done = terminal.wait_for(lambda s: "REPOSITORY" in s)
        _keep("pull-done-and-images.txt", done)
        assert f"Status: Downloaded newer image for {reference}" in done
        for layer in layer_ids:
            assert f"{layer}: Pull complete" in done
        table = done[done.index("REPOSITORY") :].splitlines()
        assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
        assert table[1].split()[:3] == [f"{registry.host}/demo/app", "1", image.config_digest[7:19]]


_PASSED = ("IMAGESTORE_HOST", "DOCKER_CONFIG", "HOME", "PATH", "LANG", "TERM")
