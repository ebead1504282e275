"""completion: a shell completion script for bash, zsh or fish, printed to stdout.

The scripts are static: the commands, subcommands (``image ls``…) and flags are
read from the CLI's own argparse parser when the script is made, so they always
match this version; file names are completed where nothing else fits. Install::

    imagestore completion bash > /etc/bash_completion.d/imagestore
    imagestore completion zsh > "${fpath[1]}/_imagestore"
    imagestore completion fish > ~/.config/fish/completions/imagestore.fish
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Node:
    """One parser: its subcommands (name → help) and its options."""

    commands: dict[str, str] = field(default_factory=dict)
    #: every option string, with its help
    options: dict[str, str] = field(default_factory=dict)
    #: the options that take a value
    valued: set[str] = field(default_factory=set)


def tree(parser: argparse.ArgumentParser) -> dict[str, Node]:
    """Every parser under ``parser``, keyed by its command path ("" for the top,
    "images", "image ls"…)."""
    found: dict[str, Node] = {}

    def walk(key: str, current: argparse.ArgumentParser) -> None:
        node = found[key] = Node()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
                for name, child in action.choices.items():
                    node.commands[name] = helps.get(name, "")
                    walk(f"{key} {name}".strip(), child)
                continue
            if action.help == argparse.SUPPRESS:
                continue
            if not action.option_strings and action.choices:  # `completion bash|zsh|fish`
                node.commands.update({str(choice): "" for choice in action.choices})
            for option in action.option_strings:
                node.options[option] = action.help or ""
                if action.nargs != 0:
                    node.valued.add(option)

    walk("", parser)
    return found


def print_script(args: argparse.Namespace) -> int:
    from imagestore.cli import build_parser

    nodes = tree(build_parser(serve_options=True))
    make = {"bash": bash_script, "zsh": zsh_script, "fish": fish_script}[args.shell]
    sys.stdout.write(make(nodes))
    return 0


def _words(items: Any) -> str:
    return " ".join(sorted(items))


def _cases(nodes: dict[str, Node], indent: str, pick: str) -> str:
    """A shell ``case`` body: each command path and the words ``pick`` gives it."""
    lines = []
    for key, node in sorted(nodes.items()):
        words = _words(node.commands) if pick == "commands" else _words(node.options)
        if pick == "valued":
            words = _words(node.valued)
        lines.append(f"{indent}{shlex.quote(key)}) reply={shlex.quote(words)} ;;")
    return "\n".join(lines)


def bash_script(nodes: dict[str, Node]) -> str:
    """``complete -F _imagestore imagestore``: commands, then their flags."""
    return f"""# bash completion for imagestore (imagestore completion bash)
_imagestore_words() {{
    local reply=""
    case "$1" in
{_cases(nodes, "        ", "commands")}
    esac
    printf '%s' "$reply"
}}
_imagestore_flags() {{
    local reply=""
    case "$1" in
{_cases(nodes, "        ", "options")}
    esac
    printf '%s' "$reply"
}}
_imagestore_valued() {{
    local reply=""
    case "$1" in
{_cases(nodes, "        ", "valued")}
    esac
    printf '%s' "$reply"
}}
_imagestore() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" cmdpath="" i word skip=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        if [[ -n $skip ]]; then skip=""; continue; fi
        if [[ $word == -* ]]; then
            [[ " $(_imagestore_valued "$cmdpath") " == *" $word "* ]] && skip=1
            continue
        fi
        if [[ " $(_imagestore_words "$cmdpath") " == *" $word "* ]]; then
            cmdpath="${{cmdpath:+$cmdpath }}$word"
        fi
    done
    if [[ -n $skip ]]; then COMPREPLY=(); return; fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_imagestore_flags "$cmdpath")" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "$(_imagestore_words "$cmdpath")" -- "$cur"))
    fi
}}
complete -o default -F _imagestore imagestore
"""


def zsh_script(nodes: dict[str, Node]) -> str:
    """A ``#compdef imagestore`` function: commands, then their flags, else files."""
    return f"""#compdef imagestore
# zsh completion for imagestore (imagestore completion zsh)
_imagestore_words() {{
    local reply=""
    case "$1" in
{_cases(nodes, "        ", "commands")}
    esac
    print -r -- "$reply"
}}
_imagestore_flags() {{
    local reply=""
    case "$1" in
{_cases(nodes, "        ", "options")}
    esac
    print -r -- "$reply"
}}
_imagestore_valued() {{
    local reply=""
    case "$1" in
{_cases(nodes, "        ", "valued")}
    esac
    print -r -- "$reply"
}}
_imagestore() {{
    local cmdpath="" word skip="" i
    for ((i = 2; i < CURRENT; i++)); do
        word="${{words[i]}}"
        if [[ -n $skip ]]; then skip=""; continue; fi
        if [[ $word == -* ]]; then
            [[ " $(_imagestore_valued "$cmdpath") " == *" $word "* ]] && skip=1
            continue
        fi
        if [[ " $(_imagestore_words "$cmdpath") " == *" $word "* ]]; then
            cmdpath="${{cmdpath:+$cmdpath }}$word"
        fi
    done
    if [[ -n $skip ]]; then _files; return; fi
    if [[ $PREFIX == -* ]]; then
        compadd -- ${{=$(_imagestore_flags "$cmdpath")}}
    else
        local found=$(_imagestore_words "$cmdpath")
        if [[ -n $found ]]; then compadd -- ${{=found}}; else _files; fi
    fi
}}
compdef _imagestore imagestore
"""


def fish_script(nodes: dict[str, Node]) -> str:
    """``complete -c imagestore`` lines: each command under its parent, each flag
    under its command."""
    lines = [
        "# fish completion for imagestore (imagestore completion fish)",
        "function __imagestore_path",
        "    set -l words (commandline -opc)",
        "    set -e words[1]",
        "    set -l path root",
        "    for word in $words",
        "        if not string match -q -- '-*' $word",
        "            set path $path $word",
        "        end",
        "    end",
        '    echo (string join " " $path)',
        "end",
    ]
    for key, node in sorted(nodes.items()):
        # the path as __imagestore_path prints it: "root", "root image ls"…
        condition = f"test (__imagestore_path) = '{' '.join(['root', *key.split()])}'"
        for name, text in sorted(node.commands.items()):
            lines.append(
                f'complete -c imagestore -f -n "{condition}" -a {shlex.quote(name)}'
                f" -d {shlex.quote(_short(text))}"
            )
        for option, text in sorted(node.options.items()):
            flag = f"-l {option[2:]}" if option.startswith("--") else f"-s {option[1:]}"
            needs = " -r" if option in node.valued else ""
            lines.append(
                f'complete -c imagestore -n "{condition}" {flag}{needs}'
                f" -d {shlex.quote(_short(text))}"
            )
    return "\n".join(lines) + "\n"


def _short(text: str) -> str:
    """A help text cut to one line (fish shows it beside the candidate)."""
    line = " ".join(text.split())
    return line if len(line) <= 60 else line[:59] + "…"
