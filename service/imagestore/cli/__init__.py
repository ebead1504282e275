"""imagestore: the server (serve) and docker's image commands against it.

The commands other than `serve` talk to a server the way the docker CLI talks to
its daemon: same columns, sizes, ages, --filter and --format, and exit codes (but
2, argparse's, for a command line it cannot parse, where docker's flag errors exit 125).

Start-up stays short: ``--version`` imports nothing but the version; `serve`'s
options (and with them the server's modules) are built only when `serve` runs;
every other command imports the client and its own module (the parser is built
from declarations, :mod:`imagestore.cli.parser`), never the server. Errors are
one line on stderr: ``Error response from daemon: …`` for what the server
answered, ``Error: …`` for what the CLI found itself (:mod:`imagestore.cli.output`);
a refused command line adds docker's ``See 'imagestore COMMAND --help'.``
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    from imagestore import errors
    from imagestore.cli.parser import UsageError
    from imagestore.client import ImageStoreClient

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
#: the global options that take a value (the command word is found before parsing)
_VALUED = frozenset({"-H", "--host", "--tls-ca", "--tls-cert", "--tls-key", "--token-file"})
_VALUED_ALSO = frozenset({"--config"})
#: commands that need no server: run with the parsed arguments alone
_STANDALONE = frozenset({"serve", "completion"})


def main(argv: Sequence[str] | None = None) -> int:
    """The `imagestore` command: its exit code (0; 1 on an error; 2 for a command
    line it cannot parse; 130 after Ctrl-C)."""
    # gRPC core writes its own log lines to stderr (a TLS handshake with a plaintext
    # server, a busy port); the CLI says what went wrong in one line of its own
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:  # Ctrl-C at any point: while importing, or during a call
        return cancelled()


def cancelled() -> int:
    """What Ctrl-C prints; the exit code to return."""
    sys.stderr.write("imagestore: cancelled\n")
    sys.stderr.flush()
    return EXIT_INTERRUPTED


def _main(argv: list[str]) -> int:
    command = command_word(argv)
    if command is None and "--version" in argv[: _globals_end(argv)]:
        from imagestore.version import __version__

        print(f"imagestore {__version__}")
        return 0
    only = None if _asks_for_help(argv[: _globals_end(argv)]) else command
    from imagestore.cli.parser import UsageError, implementation

    try:
        args = build_parser(serve_options=command == "serve", only=only).parse_args(argv)
    except UsageError as exc:
        return usage_error(exc)

    run = implementation(args.run)
    if args.command in _STANDALONE:
        return int(run(args))
    return _run_against_server(run, args)


def usage_error(exc: UsageError) -> int:
    """A command line the parser refused, in docker's words: what is wrong, and
    where the help is (the command's, when a command was named); exit code 2,
    argparse's convention (docker's own flag errors exit 125)."""
    message, prog = exc.message, exc.prog
    unknown = message.removeprefix("unrecognized arguments: ")
    if unknown != message:
        flag = next((word for word in unknown.split() if word.startswith("-")), None)
        if flag:
            message = f"unknown flag: {flag.partition('=')[0]}"
        else:
            message = f"unexpected argument: {unknown}"
    elif message.startswith("argument COMMAND: invalid choice: "):
        word = message.removeprefix("argument COMMAND: invalid choice: ").partition(" (")[0]
        message = f"{word} is not an {prog} command"
    sys.stderr.write(f"Error: {message}\nSee '{prog} --help'.\n")
    return EXIT_USAGE


def _asks_for_help(global_options: list[str]) -> bool:
    """``-h`` or ``--help`` (or a prefix argparse takes for it) before the command:
    the help lists every command."""
    return any(
        token == "-h" or (len(token) > 3 and "--help".startswith(token)) for token in global_options
    )


def _globals_end(argv: list[str]) -> int:
    """Where the global options end (the index of the command word, or the end)."""
    skip = False
    for index, token in enumerate(argv):
        if skip:
            skip = False
        elif token == "--":
            return index
        elif token in _VALUED or token in _VALUED_ALSO:
            skip = True
        elif not token.startswith("-") or token == "-":
            return index
    return len(argv)


def command_word(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names (None: none, as in ``--version`` or ``--help``)."""
    tokens = list(argv)
    end = _globals_end(tokens)
    if end < len(tokens) and tokens[end] == "--":
        end += 1
    return tokens[end] if end < len(tokens) else None


def build_parser(*, serve_options: bool, only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line (:func:`imagestore.cli.parser.build_parser`)."""
    from imagestore.cli import parser

    return parser.build_parser(serve_options=serve_options, only=only)


def connect(args: argparse.Namespace) -> ImageStoreClient:
    """The client of the global options; what they leave out, the client takes
    from its IMAGESTORE_* variables."""
    from imagestore.client import ImageStoreClient

    return ImageStoreClient(
        args.host,
        tls=args.tls,
        ca_file=args.tls_ca,
        cert_file=args.tls_cert,
        key_file=args.tls_key,
        token_file=args.token_file,
    )


def _run_against_server(run: Callable[..., Any], args: argparse.Namespace) -> int:
    from imagestore.cli.output import local_error, say
    from imagestore.client.settings import DEFAULT_TARGET

    host = args.host or DEFAULT_TARGET
    try:
        with connect(args) as client:
            host = client.target
            return int(run(client, args) or 0)
    except _domain_error() as error:
        say(describe(error, host, args), out=sys.stderr)
        return EXIT_ERROR
    except UnicodeEncodeError as error:  # an argument's bytes were not UTF-8
        say(local_error(f"invalid argument: not UTF-8: {error.object}"), out=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # `imagestore images | head`
        sys.stderr.close()
        return EXIT_ERROR
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        say(local_error(f"{where}{(error.strerror or str(error)).lower()}"), out=sys.stderr)
        return EXIT_ERROR


def _domain_error() -> type[errors.ImageStoreError]:
    """The base of the domain errors, imported once a call has failed (an except
    clause's class is looked up only when an exception reaches it)."""
    from imagestore.errors import ImageStoreError

    return ImageStoreError


#: what gRPC says when no connection could be made (pick_first's words, round_robin's,
#: the resolver's)
_UNREACHABLE = ("failed to connect", "connections to all backends failing", "errors resolving")


def describe(error: errors.ImageStoreError, host: str, args: argparse.Namespace | None) -> str:
    """The one line an error prints: the server cannot be reached (and why), or
    the server's answer, or what the CLI found itself."""
    from imagestore.cli.output import error_line

    lowered = error.message.lower()
    if error.status == "UNAVAILABLE" and any(words in lowered for words in _UNREACHABLE):
        return _cannot_connect(error.message, host)
    line = error_line(error)
    if error.reason == "REGISTRY_UNAUTHORIZED" and args is not None:
        hint = _login_hint(args)
        if hint:
            line += f" (log in with: {hint})"
    return line


def _cannot_connect(message: str, host: str) -> str:
    """docker's "Cannot connect to the Docker daemon at …", with the reason when
    the connection was made but TLS was not spoken on both sides."""
    where = f"Cannot connect to the imagestore server at {host}"
    if "WRONG_VERSION_NUMBER" in message:  # a TLS hello answered in plaintext
        return f"{where}: the server does not speak TLS (drop --tls, or unset IMAGESTORE_TLS)"
    if "handshake" in message.lower():
        detail = message.rsplit(": ", 2)[-2] if message.count(": ") >= 2 else message
        return f"{where}: TLS handshake failed: {detail}"
    if message.startswith("errors resolving"):
        return f"{where}: its host name does not resolve ({_resolver_reason(message)})"
    return f"{where}. Is the imagestore server running?"


def _resolver_reason(message: str) -> str:
    """Why a name did not resolve, from gRPC's resolvers' words: c-ares's "… lookup
    failed for X: why]", the native one's "… os_error: why syscall: getaddrinfo]"."""
    detail = message.rstrip("]")
    if "os_error: " in detail:
        return detail.partition("os_error: ")[2].partition(" syscall: ")[0]
    return detail.rsplit(": ", 1)[-1]


def _login_hint(args: argparse.Namespace) -> str:
    """`imagestore login REGISTRY` for the registry a pull or push named."""
    image = getattr(args, "image", None)
    if args.command not in ("pull", "push", "image") or not isinstance(image, str):
        return ""
    from imagestore import errors
    from imagestore.oci.references import DEFAULT_DOMAIN, parse_reference

    try:
        domain = parse_reference(image).domain
    except errors.ImageStoreError:
        return ""
    return "imagestore login" if domain == DEFAULT_DOMAIN else f"imagestore login {domain}"
