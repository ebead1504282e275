"""version: the client's version and the server's, in ``docker version``'s layout.

The Client section needs no server and is printed first; the Server section
comes from GetServerInfo. When the server cannot be reached the Client section
is still printed, then the error, and the exit code is 1 (as docker does).
"""

from __future__ import annotations

import argparse
import platform
import sys

from imagestore.cli.output import say, write_objects
from imagestore.cli.template import Struct
from imagestore.client import ImageStoreClient, ServerInfo
from imagestore.version import __version__

#: docker aligns the values of ``docker version`` at this column
_WIDTH = 19


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


def client_object() -> Struct:
    """What the CLI knows of itself."""
    import grpc

    return Struct(
        {
            "Version": __version__,
            "PythonVersion": platform.python_version(),
            "GrpcVersion": grpc.__version__,
            "Os": sys.platform,
            "Arch": _arch(),
        }
    )


def server_object(info: ServerInfo) -> Struct:
    """What GetServerInfo says of the server's build."""
    return Struct(
        {
            "Version": info.server_version,
            "ApiVersion": info.api_version,
            "GzipBackend": info.gzip_backend,
            "Catalog": info.catalog,
        }
    )


def _line(indent: str, label: str, value: str) -> None:
    say(f"{indent}{(label + ':').ljust(_WIDTH - len(indent))}{value}")


def show_version(client: ImageStoreClient, args: argparse.Namespace) -> int:
    mine = client_object()
    if args.format:
        info = client.server_info()
        both = Struct({"Client": mine, "Server": server_object(info)})
        write_objects(sys.stdout, [both], args.format)
        return 0
    say("Client:")
    _line(" ", "Version", mine["Version"])
    _line(" ", "Python version", mine["PythonVersion"])
    _line(" ", "gRPC version", mine["GrpcVersion"])
    _line(" ", "OS/Arch", f"{mine['Os']}/{mine['Arch']}")
    _line(" ", "Server", client.target)
    sys.stdout.flush()  # the client's part stands even when the server is unreachable
    server = server_object(client.server_info())
    say()
    say("Server: imagestore")
    say(" Engine:")
    _line("  ", "Version", server["Version"])
    _line("  ", "API version", server["ApiVersion"])
    _line("  ", "Gzip backend", server["GzipBackend"])
    _line("  ", "Catalog", server["Catalog"])
    return 0
