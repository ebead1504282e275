"""`imagestore completion bash|zsh|fish`: scripts that load in their shell and
complete commands and flags (zsh and fish are run only when installed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.api.conftest import PROJECT
from tests.tools import require


def _script(shell: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "imagestore", "completion", shell],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout


def _bash_complete(script: Path, *words: str) -> list[str]:
    """What bash offers for the command line ``words`` (the last one being typed)."""
    line = " ".join(["imagestore", *words])
    program = (
        f"source {script}\n"
        f"COMP_WORDS=(imagestore {' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words)}\n"
        f"COMP_LINE={line!r}\n"
        "_imagestore\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stderr == ""
    return done.stdout.split()


def test_bash_completes_commands_subcommands_and_flags(tmp_path: Path) -> None:
    script = tmp_path / "imagestore.bash"
    script.write_text(_script("bash"))
    assert "pull" in _bash_complete(script, "p")
    assert set(_bash_complete(script, "p")) == {"prune", "pull", "push"}
    assert _bash_complete(script, "-H", "127.0.0.1:1", "ima") == ["image", "images"]
    assert _bash_complete(script, "image", "l") == ["list", "load", "ls"]
    assert "--all-tags" in _bash_complete(script, "pull", "--a")
    assert _bash_complete(script, "image", "ls", "--dig") == ["--digests"]
    assert "--grace-period" in _bash_complete(script, "serve", "--gr")
    assert _bash_complete(script, "completion", "") == ["bash", "fish", "zsh"]
    # the script registers itself for the command
    loaded = subprocess.run(
        ["bash", "-c", f"source {script}; complete -p imagestore"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert loaded.stdout.strip() == "complete -o default -F _imagestore imagestore"


def test_zsh_script_is_made_and_parses(tmp_path: Path) -> None:
    text = _script("zsh")
    assert text.startswith("#compdef imagestore\n")
    assert "compdef _imagestore imagestore" in text
    assert " images " in text  # the commands are in it
    zsh = require("zsh")
    script = tmp_path / "_imagestore"
    script.write_text(text)
    subprocess.run([zsh, "-n", str(script)], timeout=60, check=True)


def test_fish_script_is_made_and_parses(tmp_path: Path) -> None:
    text = _script("fish")
    assert "complete -c imagestore -f -n \"test (__imagestore_path) = 'root'\" -a pull" in text
    assert "complete -c imagestore -f -n \"test (__imagestore_path) = 'root image'\" -a ls" in text
    assert "-l all-tags" in text
    fish = require("fish")
    script = tmp_path / "imagestore.fish"
    script.write_text(text)
    subprocess.run([fish, "--no-execute", str(script)], timeout=60, check=True)
