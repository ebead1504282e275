"""The command line, declared: each command's name, help and options, and the
function that runs it, named as ``"module:function"`` under ``imagestore.cli``.

Building the parser imports no command's implementation: a command's module is
imported when the command runs (start-up pays for that command only). A command
line naming a known command gets a parser holding that command alone, since
argparse never looks at the others then; a line without one (``--help``, an
unknown word), `image`'s long forms and `completion` get every command.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

DESCRIPTION = "imagestore: the server (serve) and docker's image commands against it."
#: docker's long forms: `imagestore image ls` is `imagestore ls`, with the same parser
IMAGE_COMMANDS = ("ls", "rm", "prune", "inspect", "history", "tag", "pull", "push", "load", "save")
#: the long forms' own aliases (`image list`, `image remove`)
_LONG_ALIASES = {"ls": ["list"], "rm": ["remove"]}

IMAGES_EPILOG = """columns:
  SIZE     the image's layers uncompressed (what docker's SIZE shows), not the
           bytes they take here: those are `imagestore df -v`'s CONTENT SIZE
  CREATED  when the image was built (its config's created time)

filters (-f key=value, repeat):
  dangling=true|false, label=KEY[=VALUE], reference=GLOB,
  before=IMAGE, since=IMAGE (built before/after that image),
  until=TIMESTAMP (built before it: the image's build time, not when it was
  stored here; RFC 3339, a date, Unix seconds, or a Go duration such as 24h)

--tree: each name that points at an index (a multi-platform image) with the
  platforms stored under it (-a: the ones not stored too)"""

PRUNE_EPILOG = """filters (--filter key=value, repeat):
  until=TIMESTAMP  only images stored here before it (when this store got them,
                   not their build time); RFC 3339, a date, Unix seconds, or a
                   Go duration such as 24h
  label=KEY[=VALUE], label!=KEY[=VALUE], dangling=true|false

Without -a only dangling images go (no tag, no digest name); with -a every image
the filters select: here no container ever holds one."""

DF_EPILOG = """columns:
  TOTAL         images stored
  ACTIVE        images with a name (a tag or a digest name): those `prune`
                without -a keeps (there are no containers here)
  SIZE          bytes on disk: every blob once, compressed layers as pulled
  RECLAIMABLE   what `prune -a` would free: all of SIZE (no container holds an
                image here) but blobs a pull or load in progress holds
-v, per image (bytes on disk, compressed, as in SIZE above; `images` shows
  uncompressed sizes):
  CONTENT SIZE  the image's blobs; SHARED SIZE those other images use too;
  UNIQUE SIZE   those only it uses (what removing it frees)

--format: table, table TEMPLATE, json or TEMPLATE over .Type .TotalCount
  .Active .Size .Reclaimable (with -v, over each image: .Repository .Tag .ID
  .CreatedSince .Size .SharedSize .UniqueSize)"""

HISTORY_EPILOG = """SIZE is the layer's uncompressed size; -H/--human=false prints it in bytes and
CREATED as an RFC 3339 time, as docker does."""

COMPLETION_DESCRIPTION = (
    "completion: a shell completion script for bash, zsh or fish, printed to stdout."
)
SHELLS = ("bash", "zsh", "fish")


def go_boolean(text: str) -> bool:
    """A Go flag's boolean: 1, t, true, 0, f, false (any case)."""
    value = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}.get(
        text.lower()
    )
    if value is None:
        raise argparse.ArgumentTypeError(f"invalid boolean value {text!r}")
    return value


def _runs(parser: argparse.ArgumentParser, target: str) -> None:
    """``target`` ("module:function") runs the command: see :func:`implementation`."""
    parser.set_defaults(run=target)


def implementation(run: str | Callable[..., Any]) -> Callable[..., Any]:
    """The function a parsed command line runs, its module imported now."""
    if callable(run):  # `serve` sets its function itself
        return run
    import importlib

    module, _, function = run.partition(":")
    found: Callable[..., Any] = getattr(
        importlib.import_module(f"imagestore.cli.{module}"), function
    )
    return found


# ---- the commands ---------------------------------------------------------------


def _serve(commands: Any, name: str, *, serve_options: bool = False) -> None:
    from imagestore.cli import serve

    if serve_options:
        serve.add_parser(commands)
    else:
        serve.add_stub(commands)


def _images(commands: Any, name: str) -> None:
    ls = commands.add_parser(
        name,
        help="list images" if name == "images" else "alias of images",
        epilog=IMAGES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ls.add_argument("repository", nargs="?", help="only REPOSITORY[:TAG] (a reference filter)")
    ls.add_argument("-a", "--all", action="store_true", help="show all images (dangling too)")
    ls.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    ls.add_argument("--digests", action="store_true", help="show digests")
    ls.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    ls.add_argument("-f", "--filter", action="append", default=[], help="key=value (repeat)")
    ls.add_argument("--format", default="", help="table, table TEMPLATE, json or TEMPLATE")
    ls.add_argument(
        "--tree",
        action="store_true",
        help="names of multi-platform images (indexes) with their platforms below",
    )
    _runs(ls, "images:list_images")


def _inspect(commands: Any, name: str) -> None:
    inspect = commands.add_parser(name, help="detailed information on images")
    inspect.add_argument("images", nargs="+", metavar="IMAGE")
    inspect.add_argument("-f", "--format", default="", help="Go template, or json")
    inspect.add_argument(
        "--platform", default="", help="os/arch[/variant]: one variant of a multi-platform image"
    )
    _runs(inspect, "images:inspect_images")


def _history(commands: Any, name: str) -> None:
    history = commands.add_parser(
        name,
        help="the history of an image",
        epilog=HISTORY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    history.add_argument("image", metavar="IMAGE")
    history.add_argument(
        "-H",
        "--human",
        nargs="?",
        const=True,
        default=True,
        type=go_boolean,
        metavar="BOOL",
        help="sizes and dates for people (default true; --human=false: bytes, RFC 3339)",
    )
    history.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    history.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    history.add_argument("--format", default="", help="table, table TEMPLATE, json or TEMPLATE")
    history.add_argument("--platform", default="", help="os/arch[/variant]")
    _runs(history, "images:show_history")


def _tag(commands: Any, name: str) -> None:
    tag = commands.add_parser(name, help="create a tag TARGET that refers to SOURCE")
    tag.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    tag.add_argument("target", metavar="TARGET_IMAGE[:TAG]")
    _runs(tag, "images:tag_image")


def _rm(commands: Any, name: str) -> None:
    rm = commands.add_parser(name, help="remove images" if name == "rm" else "alias of rm")
    rm.add_argument("images", nargs="+", metavar="IMAGE")
    rm.add_argument("-f", "--force", action="store_true", help="force removal")
    rm.add_argument("--no-prune", action="store_true", help="accepted; changes nothing")
    _runs(rm, "images:remove_images")


def _prune(commands: Any, name: str) -> None:
    prune = commands.add_parser(
        name,
        help="remove unused images",
        epilog=PRUNE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prune.add_argument("-a", "--all", action="store_true", help="remove all unused images")
    prune.add_argument(
        "--filter",
        action="append",
        default=[],
        help="key=value (repeat): until=TIMESTAMP compares when the image was stored here",
    )
    prune.add_argument("-f", "--force", action="store_true", help="do not prompt")
    prune.add_argument("--dry-run", action="store_true", help="only say what would go")
    _runs(prune, "images:prune_images")


def _df(commands: Any, name: str) -> None:
    df = commands.add_parser(
        name,
        help="disk usage of images",
        epilog=DF_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    df.add_argument("-v", "--verbose", action="store_true", help="per-image usage")
    df.add_argument("--format", default="", help="table, table TEMPLATE, json or TEMPLATE")
    _runs(df, "images:disk_usage")


def _check(commands: Any, name: str) -> None:
    check = commands.add_parser(name, help="re-verify every blob and the catalog")
    _runs(check, "images:check_store")


def _pull(commands: Any, name: str) -> None:
    pull = commands.add_parser(name, help="download an image from a registry")
    pull.add_argument("image", metavar="NAME[:TAG|@DIGEST]")
    pull.add_argument(
        "-a",
        "--all-tags",
        action="store_true",
        help="download all tagged images in the repository",
    )
    pull.add_argument(
        "--platform",
        action="append",
        default=[],
        help="os/arch[/variant] of a multi-arch image, or all (repeat; default this server's)",
    )
    pull.add_argument("-q", "--quiet", action="store_true", help="print only the image name")
    _runs(pull, "transfer:pull_image")


def _push(commands: Any, name: str) -> None:
    push = commands.add_parser(name, help="upload an image to its registry")
    push.add_argument("image", metavar="NAME[:TAG]")
    push.add_argument(
        "--platform",
        default="",
        help="push only this platform of an index (an image of one platform must be it)",
    )
    push.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _runs(push, "transfer:push_image")


def _load(commands: Any, name: str) -> None:
    load = commands.add_parser(name, help="load images from a tar archive")
    load.add_argument("-i", "--input", default="", help="archive file (default: stdin)")
    load.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _runs(load, "transfer:load_images")


def _save(commands: Any, name: str) -> None:
    save = commands.add_parser(name, help="save images to a tar archive")
    save.add_argument("images", nargs="+", metavar="IMAGE")
    save.add_argument("-o", "--output", default="", help="file (default: stdout)")
    save.add_argument(
        "--platform",
        default="",
        help="save one platform (os[/arch[/variant]]) of a multi-platform image (an image of"
        " one platform must be it)",
    )
    _runs(save, "transfer:save_images")


def _image(commands: Any, name: str) -> None:
    image = commands.add_parser(
        name, help="docker's long forms: image ls, rm, prune, inspect, history, tag…"
    )
    long_forms = image.add_subparsers(
        dest="image_command", required=True, metavar="COMMAND", prog="imagestore image"
    )
    only = _Commands(long_forms, long_forms=True)
    for form, declare in COMMANDS.items():
        if form in IMAGE_COMMANDS:
            declare(only, form)


def _login(commands: Any, name: str) -> None:
    login = commands.add_parser(name, help="log in to a registry")
    login.add_argument("server", nargs="?", default="", help="registry (default Docker Hub)")
    login.add_argument("-u", "--username", default="")
    login.add_argument("-p", "--password", default="", help="insecure: use --password-stdin")
    login.add_argument("--password-stdin", action="store_true", help="read the password")
    _runs(login, "login:log_in")


def _logout(commands: Any, name: str) -> None:
    logout = commands.add_parser(name, help="log out from a registry")
    logout.add_argument("server", nargs="?", default="", help="registry (default Docker Hub)")
    _runs(logout, "login:log_out")


def _info(commands: Any, name: str) -> None:
    info = commands.add_parser(
        name, help="the server's version, settings, limits, and what it holds"
    )
    info.add_argument("-f", "--format", default="", help="json, or a Go template")
    _runs(info, "info:show_info")


def _version(commands: Any, name: str) -> None:
    version = commands.add_parser(name, help="the client's and the server's versions")
    version.add_argument("-f", "--format", default="", help="json, or a Go template")
    _runs(version, "version:show_version")


def _completion(commands: Any, name: str) -> None:
    completion = commands.add_parser(
        name,
        help="print a shell completion script (bash, zsh or fish)",
        description=COMPLETION_DESCRIPTION,
    )
    completion.add_argument("shell", choices=SHELLS)
    _runs(completion, "completion:print_script")


#: every command, in the order `--help` lists them
COMMANDS: dict[str, Callable[[Any, str], None]] = {
    "serve": _serve,
    "images": _images,
    "ls": _images,
    "inspect": _inspect,
    "history": _history,
    "tag": _tag,
    "rm": _rm,
    "rmi": _rm,
    "prune": _prune,
    "df": _df,
    "check": _check,
    "pull": _pull,
    "push": _push,
    "load": _load,
    "save": _save,
    "image": _image,
    "login": _login,
    "logout": _logout,
    "info": _info,
    "version": _version,
    "completion": _completion,
}
#: the commands that get every command's parser (they read the whole tree)
_WHOLE_TREE = frozenset({"image", "completion"})


def _columns() -> int:
    """The terminal's width as :func:`shutil.get_terminal_size` finds it ($COLUMNS,
    else stdout's terminal, else 80), which is what argparse asks it for."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    if sys.__stdout__ is None:
        return 80
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, given the width argparse would find itself.
    argparse makes one for every option added (to check its metavar), and the
    width it finds imports shutil: a few milliseconds of start-up for nothing."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        width = _columns() - 2 if width is None else width
        super().__init__(prog, indent_increment, max_help_position, width)


class _RawFormatter(_Formatter, argparse.RawDescriptionHelpFormatter):
    """:class:`argparse.RawDescriptionHelpFormatter`, given its width as above."""


class UsageError(Exception):
    """A command line argparse refused; ``prog`` the (sub)command it was parsing."""

    def __init__(self, message: str, prog: str) -> None:
        super().__init__(message)
        self.message = message
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose refusals are raised (UsageError), for the CLI to
    say in docker's two lines rather than the usage block."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.prog)

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: None = None
    ) -> argparse.Namespace:
        """As argparse's, but words left over are refused on behalf of the
        command they followed, whose help the refusal names."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            prog = getattr(parsed, "usage_prog", self.prog)
            raise UsageError(f"unrecognized arguments: {' '.join(extras)}", prog)
        return parsed


class _Commands:
    """A subparsers action whose parsers use the formatters above; for `image`,
    each long form with its aliases (``image list``), and ``ls`` under its own
    help, not as an alias of ``images``."""

    def __init__(self, commands: Any, *, long_forms: bool = False) -> None:
        self._commands = commands
        self._long_forms = long_forms

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        raw = kwargs.get("formatter_class") is argparse.RawDescriptionHelpFormatter
        kwargs["formatter_class"] = _RawFormatter if raw else _Formatter
        if self._long_forms:
            kwargs.setdefault("aliases", _LONG_ALIASES.get(name, []))
            if name == "ls":
                kwargs["help"] = "list images"
        parser: argparse.ArgumentParser = self._commands.add_parser(name, **kwargs)
        # the deepest command parsed names its own help in a refusal (image ls, not image)
        parser.set_defaults(usage_prog=parser.prog)
        return parser


def build_parser(*, serve_options: bool, only: str | None = None) -> argparse.ArgumentParser:
    """The command line. ``serve_options``: `serve` with its options (which imports
    the server's modules for their defaults); else only its help line. ``only``:
    the command the line names: the parser then holds that command alone (unless
    it reads the whole tree); None: every command."""
    from imagestore.client.settings import DEFAULT_TARGET
    from imagestore.version import __version__

    parser = _Parser(prog="imagestore", description=DESCRIPTION, formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"imagestore {__version__}")
    # None: the client's own default, from the same IMAGESTORE_* variable
    parser.add_argument(
        "-H",
        "--host",
        default=None,
        help=f"server: host:port or unix:///path (IMAGESTORE_HOST; default {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--tls", action="store_true", default=None, help="use TLS (system CAs; IMAGESTORE_TLS)"
    )
    parser.add_argument("--tls-ca", help="trust this CA (PEM; IMAGESTORE_TLS_CA)")
    parser.add_argument("--tls-cert", help="client cert (IMAGESTORE_TLS_CERT)")
    parser.add_argument("--tls-key", help="client key (IMAGESTORE_TLS_KEY)")
    parser.add_argument(
        "--token-file",
        help="file holding the server's bearer token (IMAGESTORE_TOKEN_FILE;"
        " or the token itself in IMAGESTORE_TOKEN)",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="docker config folder for registry logins (default $DOCKER_CONFIG or ~/.docker)",
    )
    # prog given: else argparse formats the usage to find it (and imports shutil)
    commands = _Commands(
        parser.add_subparsers(dest="command", required=True, metavar="COMMAND", prog="imagestore")
    )
    chosen = [only] if only in COMMANDS and only not in _WHOLE_TREE else list(COMMANDS)
    for name in chosen:
        if name == "serve":
            _serve(commands, name, serve_options=serve_options)
        else:
            COMMANDS[name](commands, name)
    return parser
