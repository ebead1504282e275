"""The CLI on a real terminal (tmux): docker's progress lines during a pull, a
load and a push (one line per layer, rewritten in place, a 50-column bar), then
a clean `images` table. Each screen is kept under build/screens/ (or
IMAGESTORE_SCREENS) to be read beside docker's."""

from __future__ import annotations

import os
import random
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imagestore.cli import humanize
from imagestore.cli.progress import ProgressView
from imagestore.client import Phase, Progress
from imagestore.registry.pull import WRITE_CHUNK
from tests.api.conftest import PROJECT
from tests.archives import ImageSpec, docker_archive, tar_of
from tests.cli.conftest import Cli
from tests.cli.registry import SmallRegistry
from tests.registry.distribution import Distribution
from tests.registry.hostile import make_image
from tests.tools import require

#: docker draws its bar only on a terminal wider than 110 columns
WIDTH = 120


class Terminal:
    """One tmux session of ours, WIDTH x 24."""

    def __init__(self, tmux: str, name: str) -> None:
        self.tmux = tmux
        self.name = name

    def start(self, command: str, env: dict[str, str]) -> None:
        settings = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
        subprocess.run(
            [self.tmux, "new-session", "-d", "-s", self.name, "-x", str(WIDTH), "-y", "24",
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
    folder = Path(os.environ.get("IMAGESTORE_SCREENS") or PROJECT / "build" / "screens")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


#: a layer's line while it moves: docker's bar (``=`` then ``>``, 51 wide in all)
#: and the counts in go-units, current padded to 8
BAR = re.compile(r"(?P<id>[0-9a-f]{12}): (?P<status>[A-Z][a-z]+) \[(?P<filled>=*)>(?P<rest> *)\] "
                 r"(?P<counts> *[0-9.]+[kMG]?B/[0-9.]+[kMG]?B)")  # fmt: skip


def _imagestore() -> str:
    return " ".join(shlex.quote(a) for a in (sys.executable, "-m", "imagestore"))


def test_a_pull_shows_live_bars_and_images_a_clean_table(cli: Cli, terminal: Terminal) -> None:
    rng = random.Random(3)
    layers = [tar_of({f"layer{i}": rng.randbytes(3 * WRITE_CHUNK)}) for i in range(3)]
    image = make_image(layers)
    with SmallRegistry().running() as registry:
        registry.add_image("demo/app", "1", image)
        for digest in image.layer_digests:  # each layer waits, half sent, for the screen
            registry.hold(digest, first=2 * WRITE_CHUNK)
        reference = f"{registry.host}/demo/app:1"
        command = _imagestore()
        folder = shlex.quote(str(PROJECT))
        script = f"cd {folder} && {command} pull {reference} && {command} images; sleep 60"
        terminal.start(script, {k: v for k, v in cli.env().items() if k in _PASSED})

        layer_ids = [d.removeprefix("sha256:")[:12] for d in image.layer_digests]
        live = terminal.wait_for(
            lambda s: len([m for m in BAR.finditer(s) if m["status"] == "Downloading"]) == 3
        )  # the layers are held: the lines stay at their bars until the release below
        _keep("pull-live.txt", live)
        lines = live.splitlines()
        assert lines[0] == "1: Pulling from demo/app"
        # one line per layer, in the layers' order, each rewritten in place
        assert [line[:12] for line in lines[1:4]] == layer_ids
        for match in BAR.finditer(live):
            assert len(match["filled"]) + len(match["rest"]) == 50
            assert 0 < len(match["filled"]) < 50  # part of the layer: held before its end
            current, total = match["counts"].strip().split("/")
            assert len(match["counts"].split("/")[0]) == 8  # docker's %8v
            assert current != total

        registry.release()
        done = terminal.wait_for(lambda s: "REPOSITORY" in s)
        _keep("pull-done-and-images.txt", done)
        assert f"Status: Downloaded newer image for {reference}" in done
        lines = done.splitlines()
        assert [line.rstrip() for line in lines[1:4]] == [
            f"{layer}: Pull complete" for layer in layer_ids
        ]  # the final lines replaced the bars, in place
        assert "Downloading" not in done
        table = done[done.index("REPOSITORY") :].splitlines()
        assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
        assert table[1].split()[:3] == [f"{registry.host}/demo/app", "1", image.config_digest[7:19]]


_PASSED = ("IMAGESTORE_HOST", "DOCKER_CONFIG", "HOME", "PATH", "LANG", "TERM")


def test_a_load_shows_one_bar_that_ends_full(cli: Cli, terminal: Terminal, tmp_path: Path) -> None:
    rng = random.Random(5)
    spec = ImageSpec(["loaded/app:1"], [tar_of({"blob": rng.randbytes(2 * WRITE_CHUNK)})])
    archive = tmp_path / "app.tar"
    archive.write_bytes(docker_archive(spec))
    folder = shlex.quote(str(PROJECT))
    script = f"cd {folder} && {_imagestore()} load -i {shlex.quote(str(archive))}; sleep 60"
    terminal.start(script, {k: v for k, v in cli.env().items() if k in _PASSED})
    done = terminal.wait_for(lambda s: "Loaded image: loaded/app:1" in s)
    _keep("load-done.txt", done)
    lines = [line.rstrip() for line in done.splitlines() if line.strip()]
    assert lines[-1] == "Loaded image: loaded/app:1"
    bar = re.fullmatch(r"Loading \[(=*)>( *)\] +(\S+)/(\S+)", lines[-2])
    assert bar is not None, lines
    assert (len(bar[1]), bar[2]) == (50, "")  # the whole archive: a full bar
    assert bar[3] == bar[4] == humanize.size(archive.stat().st_size, 4)


def test_a_push_shows_dockers_lines(
    cli: Cli, terminal: Terminal, tmp_path: Path, fresh_registry: Distribution
) -> None:
    rng = random.Random(7)
    layers = [tar_of({f"f{i}": rng.randbytes(WRITE_CHUNK)}) for i in range(2)]
    archive = tmp_path / "app.tar"
    archive.write_bytes(docker_archive(ImageSpec(["pushed/app:1"], layers)))
    cli.ok("load", "-i", str(archive))
    target = f"{fresh_registry.host}/pushed/app:1"
    cli.ok("tag", "pushed/app:1", target)
    folder = shlex.quote(str(PROJECT))
    terminal.start(
        f"cd {folder} && {_imagestore()} push {shlex.quote(target)}; sleep 60",
        {k: v for k, v in cli.env().items() if k in _PASSED},
    )
    done = terminal.wait_for(lambda s: "1: digest: sha256:" in s)
    _keep("push-done.txt", done)
    lines = [line.rstrip() for line in done.splitlines() if line.strip()]
    assert lines[0] == f"The push refers to repository [{fresh_registry.host}/pushed/app]"
    # one line per layer, its last status in place of its bar
    assert [re.sub(r"^[0-9a-f]{12}: ", "", line) for line in lines[1:3]] == ["Pushed"] * 2
    assert re.fullmatch(r"1: digest: sha256:[0-9a-f]{64} size: \d+", lines[3])
    assert len(lines) == 4


def test_a_pushs_bar_on_a_terminal_is_dockers(terminal: Terminal, tmp_path: Path) -> None:
    # what ProgressView writes mid-push, shown by a real terminal: the cursor moves
    # must leave one line per layer, the bar of the layer that moved redrawn in place
    out = tmp_path / "push.out"
    with out.open("w") as stream, ProgressView(stream, terminal=True, columns=WIDTH) as view:
        view.show(Progress(Phase.RESOLVING, "The push refers to repository [r/app]"))
        for layer in ("aaaaaaaaaaaa", "bbbbbbbbbbbb"):
            view.show(Progress(Phase.PREPARING, "Preparing", subject=layer))
        view.show(Progress(Phase.PUSHING, "Pushing", subject="aaaaaaaaaaaa",
                           current=14_800_000, total=30_010_000))  # fmt: skip
        view.show(Progress(Phase.EXISTS_REMOTELY, "Layer already exists", subject="bbbbbbbbbbbb"))
    terminal.start(f"cat {shlex.quote(str(out))}; sleep 60", {"PATH": os.environ["PATH"]})
    screen = terminal.wait_for(lambda s: "Layer already exists" in s)
    _keep("push-live.txt", screen)
    lines = [line.rstrip() for line in screen.splitlines() if line.strip()]
    assert lines == [
        "The push refers to repository [r/app]",
        # 49 %: 24 columns of 50; "14.8MB" padded to 8 as docker's %8v
        f"aaaaaaaaaaaa: Pushing [{'=' * 24}>{' ' * 26}]   14.8MB/30.01MB",
        "bbbbbbbbbbbb: Layer already exists",
    ]
