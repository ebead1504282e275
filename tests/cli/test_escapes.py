"""Untrusted text reaches the user's terminal inert: the real CLI against the real
server, with an image whose labels, author, comment and history hold terminal
escapes (OSC window title ended by BEL, a screen clear, a one-character C1 CSI,
rich markup), a registry whose error message holds them, and an argument that
is not UTF-8. No output carries a raw ESC, BEL, C1 or other control character
(newlines and tabs only as the CLI's own layout); the escapes show as text; JSON
output stays valid and exact; a real terminal (tmux) keeps its title and screen.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import PROJECT
from tests.archives import sha, tar_of
from tests.cli.conftest import Cli
from tests.cli.registry import SmallRegistry
from tests.cli.test_terminal import Terminal
from tests.tools import require

TITLE = "\x1b]0;pwned\x07"  # OSC 0: sets the window title; BEL ends it
CLEAR = "\x1b[2J"  # CSI 2 J: clears the screen
C1_CSI = "\x9b31m"  # U+009B is CSI on its own (8-bit controls)
LINK = "\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\"  # OSC 8 hyperlink, ST-ended
MARKUP = "[bold red]loud[/]"  # rich markup: must print as these very characters
LABELS = {
    "title": TITLE,
    "clear": CLEAR,
    "csi": C1_CSI,
    "link": LINK,
    "markup": MARKUP,
    "layout": "a\tb\nc\rd\x7f\u202eevil",
}
#: what a terminal would obey: C0 but newline and tab, DEL, C1
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _evil_archive() -> bytes:
    layer = tar_of({"app": b"x" * 1000})
    created = "2024-05-06T07:08:09Z"
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": created,
            "author": f"mallory {CLEAR}",
            "comment": f"built {TITLE}",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/app"], "Labels": LABELS},
            "rootfs": {"type": "layers", "diff_ids": [sha(layer)]},
            "history": [
                {"created": created, "created_by": f"/bin/sh -c #(nop) {CLEAR}{TITLE}"},
                {
                    "created": created,
                    "created_by": f"LABEL {C1_CSI}",
                    "comment": LINK,
                    "empty_layer": True,
                },
            ],
        }
    ).encode()
    layer_path = f"{sha(layer)[7:19]}/layer.tar"
    config_path = f"{sha(config)[7:]}.json"
    manifest = [{"Config": config_path, "RepoTags": ["evil:1"], "Layers": [layer_path]}]
    return tar_of(
        {
            config_path: config,
            layer_path: layer,
            "manifest.json": json.dumps(manifest).encode(),
        }
    )


def assert_inert(text: str) -> None:
    found = RAW_CONTROL.search(text)
    assert found is None, f"raw {found.group()!r} in {text!r}"


@pytest.fixture
def evil(cli: Cli, tmp_path: Path) -> Cli:
    archive = tmp_path / "evil.tar"
    archive.write_bytes(_evil_archive())
    assert cli.ok("load", "-i", str(archive)) == "Loaded image: evil:1\n"
    return cli


def test_inspect_shows_escapes_as_text_and_json_keeps_the_exact_values(evil: Cli) -> None:
    document = evil.ok("inspect", "evil:1")
    assert_inert(document)
    [image] = json.loads(document)
    assert image["Config"]["Labels"] == LABELS  # the data, exactly
    assert image["Author"] == f"mallory {CLEAR}"
    shown = evil.ok("inspect", "--format", '{{index .Config.Labels "title"}}', "evil:1")
    assert shown == "\\x1b]0;pwned\\x07\n"
    shown = evil.ok("inspect", "--format", '{{index .Config.Labels "csi"}}|{{.Author}}', "evil:1")
    assert shown == "\\x9b31m|mallory \\x1b[2J\n"
    shown = evil.ok("inspect", "--format", '{{index .Config.Labels "markup"}}', "evil:1")
    assert shown == MARKUP + "\n"
    layout = evil.ok("inspect", "--format", '{{index .Config.Labels "layout"}}', "evil:1")
    assert layout == "a\tb\nc\\rd\\x7f\\u202eevil\n"  # a template's lines stay lines
    for template in ("{{json .Config.Labels}}", "{{.Config.Labels}}", "{{.Comment}}", "json"):
        out = evil.ok("inspect", "--format", template, "evil:1")
        assert_inert(out)
        assert "\u202e" not in out
    labels = json.loads(evil.ok("inspect", "--format", "{{json .Config.Labels}}", "evil:1"))
    assert labels == LABELS


def test_history_and_images_tables_escape_every_cell(evil: Cli) -> None:
    for args in (
        ("history", "evil:1"),
        ("history", "--no-trunc", "evil:1"),
        ("history", "--format", "{{.CreatedBy}}|{{.Comment}}", "evil:1"),
        ("history", "--format", "table {{.CreatedBy}}\t{{.Comment}}", "evil:1"),
        ("images",),
        ("images", "--format", "json"),
        ("df", "-v"),
    ):
        out = evil.ok(*args)
        assert_inert(out)
    table = evil.ok("history", "--no-trunc", "evil:1").splitlines()
    assert len(table) == 3  # a header and two entries: no value made a row of its own
    assert "/bin/sh -c #(nop) \\x1b[2J\\x1b]0;pwned\\x07" in table[2]
    assert "LABEL \\x9b31m" in table[1]
    assert "\\x1b]8;;http://evil.example\\x1b\\click" in table[1]
    rows = evil.ok("history", "--format", "json", "evil:1").splitlines()
    assert json.loads(rows[0])["Comment"] == LINK


def test_error_lines_escape_the_registrys_message_and_the_users_argument(cli: Cli) -> None:
    with SmallRegistry().running() as registry:
        registry.refuse("evil/app", 403, "DENIED", f"gone {TITLE}{CLEAR}{C1_CSI}\nforged: line")
        failed = cli("pull", f"{registry.host}/evil/app:1")
    assert failed.returncode == 1
    assert_inert(failed.stdout + failed.stderr)
    [line] = failed.stderr.splitlines()  # the registry's newline did not make a second line
    assert line.startswith("Error response from daemon: ")
    assert "gone \\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\nforged: line" in line

    missing = cli("inspect", f"nope{CLEAR}")
    assert missing.returncode == 1
    assert_inert(missing.stderr)
    assert "nope\\x1b[2J" in missing.stderr

    # bytes that are not UTF-8 (a lone 0x9b, CSI in Latin-1): one line, no traceback
    not_utf8 = cli.binary("tag", "nope:1", os.fsdecode(b"a\x9bb"))
    assert not_utf8.returncode == 1
    assert not_utf8.stderr == b"Error: invalid argument: not UTF-8: a\\udc9bb\n"


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    session = Terminal(require("tmux"), f"imagestore-escapes-{os.getpid()}")
    yield session
    session.stop()


def test_a_real_terminal_keeps_its_title_and_screen(evil: Cli, terminal: Terminal) -> None:
    command = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "imagestore"))
    template = shlex.quote('{{index .Config.Labels "title"}}{{index .Config.Labels "clear"}}')
    script = (
        f"cd {shlex.quote(str(PROJECT))} && echo before-the-output"
        f" && {command} history --no-trunc evil:1"
        f" && {command} inspect --format {template} evil:1 && echo the-end; sleep 60"
    )
    env = {k: v for k, v in evil.env().items() if k in _PASSED}
    terminal.start(script, env)
    screen = terminal.wait_for(lambda s: "the-end" in s)
    assert "before-the-output" in screen  # no screen clear happened
    assert "\\x1b]0;pwned\\x07\\x1b[2J" in screen
    title = terminal.title()
    assert "pwned" not in title


_PASSED = ("IMAGESTORE_HOST", "DOCKER_CONFIG", "HOME", "PATH", "LANG", "TERM")
