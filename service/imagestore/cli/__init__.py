"""imagestore: the server (serve) and docker's image commands against it.

The commands other than `serve` talk to a server the way the docker CLI talks to
its daemon: same columns, sizes, ages, --filter and --format, and exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from imagestore import errors
from imagestore.cli import images, info, login, serve, transfer
from imagestore.cli.output import say
from imagestore.client import DEFAULT_TARGET, ImageStoreClient
from imagestore.version import __version__

#: how a status reads in the one-line error message
_MEANING = {
    "INVALID_ARGUMENT": "invalid argument",
    "NOT_FOUND": "not found",
    "FAILED_PRECONDITION": "failed precondition",
    "ABORTED": "aborted",
    "PERMISSION_DENIED": "permission denied",
    "UNAUTHENTICATED": "unauthenticated",
    "RESOURCE_EXHAUSTED": "resource exhausted",
    "DATA_LOSS": "data loss",
    "UNAVAILABLE": "unavailable",
    "DEADLINE_EXCEEDED": "deadline exceeded",
    "CANCELLED": "cancelled",
}
EXIT_ERROR, EXIT_INTERRUPTED = 1, 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagestore", description=__doc__.splitlines()[0])
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
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_parser(commands)
    images.add_parsers(commands)
    transfer.add_parsers(commands)
    login.add_parsers(commands)
    info.add_parsers(commands)
    return parser


def _connect(args: argparse.Namespace) -> ImageStoreClient:
    """The client of the global options; what they leave out, the client takes
    from its IMAGESTORE_* variables."""
    return ImageStoreClient(
        args.host,
        tls=args.tls,
        ca_file=args.tls_ca,
        cert_file=args.tls_cert,
        key_file=args.tls_key,
        token_file=args.token_file,
    )


def describe(error: errors.ImageStoreError, host: str) -> str:
    """One line: what kind of failure, and the server's message."""
    meaning = _MEANING.get(error.status, error.status.lower().replace("_", " "))
    if error.status == "UNAVAILABLE" and "failed to connect" in error.message:
        return f"{meaning}: cannot reach the imagestore server at {host} (is it running?)"
    return f"{meaning}: {error.message}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        logging.basicConfig(
            level=getattr(logging, str(args.log_level).upper(), logging.INFO),
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
            stream=sys.stderr,
        )
        return int(args.run(args))
    host = args.host or DEFAULT_TARGET
    try:
        with _connect(args) as client:
            host = client.target
            return int(args.run(client, args) or 0)
    except errors.ImageStoreError as error:
        say(f"imagestore: {describe(error, host)}", out=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        say("imagestore: cancelled", out=sys.stderr)
        return EXIT_INTERRUPTED
    except UnicodeEncodeError as error:  # an argument's bytes were not UTF-8
        say(f"imagestore: invalid argument: not UTF-8: {error.object}", out=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # `imagestore images | head`
        sys.stderr.close()
        return EXIT_ERROR
    except OSError as error:
        say(f"imagestore: {error.strerror or error}: {error.filename or ''}", out=sys.stderr)
        return EXIT_ERROR
