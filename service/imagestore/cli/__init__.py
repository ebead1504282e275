"""The `imagestore` command. `serve` runs the server; the docker-like client
commands (images, inspect, tag, rm, …) arrive with the client."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from imagestore import __version__
from imagestore.cli import serve


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imagestore", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"imagestore {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_parser(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    return int(args.run(args))
