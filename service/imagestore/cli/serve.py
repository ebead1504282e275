"""`imagestore serve`: every option is a flag and an IMAGESTORE_* variable."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from imagestore.api.server import ServerConfig, default_root, run
from imagestore.store.store import DEFAULT_MAX_LAYER_SIZE


def _env(name: str, default: Any = None) -> Any:
    return os.environ.get("IMAGESTORE_" + name.upper().replace("-", "_"), default)


def _path(value: str | None) -> Path | None:
    return None if value in (None, "") else Path(str(value))


def add_parser(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "serve",
        help="run the gRPC server",
        description="Serve the image store over gRPC (reflection and health always on).",
    )
    parser.add_argument(
        "--listen",
        default=_env("listen", "127.0.0.1:50051"),
        help="host:port or unix:///path (default 127.0.0.1:50051)",
    )
    parser.add_argument(
        "--root",
        default=_env("root", str(default_root())),
        help="store directory (default $XDG_DATA_HOME/imagestore)",
    )
    parser.add_argument("--tls-cert", default=_env("tls-cert"), help="server certificate (PEM)")
    parser.add_argument("--tls-key", default=_env("tls-key"), help="server key (PEM)")
    parser.add_argument(
        "--tls-client-ca",
        default=_env("tls-client-ca"),
        help="require client certificates signed by this CA (mutual TLS)",
    )
    parser.add_argument(
        "--auth-token-file",
        default=_env("auth-token-file"),
        help="file of accepted bearer tokens, one per line",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=_env("insecure", "") in ("1", "true", "yes"),
        help="allow a non-loopback listener without TLS",
    )
    parser.add_argument(
        "--metrics-listen",
        default=_env("metrics-listen"),
        help="host:port for Prometheus metrics (off by default)",
    )
    parser.add_argument(
        "--grace-period",
        type=float,
        default=float(_env("grace-period", 10)),
        help="seconds in-flight calls get at shutdown (default 10)",
    )
    parser.add_argument(
        "--max-layer-size",
        type=int,
        default=int(_env("max-layer-size", DEFAULT_MAX_LAYER_SIZE)),
        help="largest uncompressed layer accepted, in bytes (default 64 GiB)",
    )
    parser.add_argument(
        "--log-level",
        default=_env("log-level", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    config = ServerConfig(
        listen=args.listen,
        root=Path(args.root),
        tls_cert=_path(args.tls_cert),
        tls_key=_path(args.tls_key),
        tls_client_ca=_path(args.tls_client_ca),
        auth_token_file=_path(args.auth_token_file),
        insecure=args.insecure,
        metrics_listen=args.metrics_listen or None,
        grace_period=args.grace_period,
        max_layer_size=args.max_layer_size,
    )
    return run(config)
