"""`imagestore serve`: every option is a flag and an IMAGESTORE_* variable."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from imagestore.api.server import ServerConfig, default_root, run
from imagestore.registry.options import DOCKER_CERTS_DIR, RegistryOptions
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
    _add_registry_options(parser)
    parser.add_argument(
        "--log-level",
        default=_env("log-level", "info"),
        choices=["debug", "info", "warning", "error"],
    )
    parser.set_defaults(run=_run)


def _list(name: str) -> list[str]:
    """A repeatable flag's default from IMAGESTORE_<NAME>, comma-separated."""
    return [item.strip() for item in str(_env(name, "")).split(",") if item.strip()]


def _add_registry_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("registries (pull and push)")
    group.add_argument(
        "--registry-config",
        default=_env("registry-config"),
        help="server-side registry credentials, Docker config.json format (off by default)",
    )
    group.add_argument(
        "--insecure-registry",
        action="append",
        default=_list("insecure-registry"),
        metavar="HOST[:PORT]|CIDR",
        help="allow plain HTTP or unverified TLS to this registry (repeatable;"
        " loopback registries may always use HTTP)",
    )
    group.add_argument(
        "--registry-ca",
        action="append",
        default=_list("registry-ca"),
        metavar="PEM",
        help="extra CA bundle trusted for registries (repeatable)",
    )
    group.add_argument(
        "--registry-certs-dir",
        default=_env("registry-certs-dir", str(DOCKER_CERTS_DIR)),
        help="Docker-style <dir>/<host:port>/{ca.crt,client.cert,client.key}"
        f" (default {DOCKER_CERTS_DIR})",
    )
    group.add_argument(
        "--registry-mirror",
        action="append",
        default=_list("registry-mirror"),
        metavar="URL",
        help="mirror tried first for docker.io pulls (repeatable)",
    )
    defaults = RegistryOptions()
    numbers: list[tuple[str, type, Any, str]] = [
        ("max-concurrent-downloads", int, defaults.max_concurrent_downloads, "layers"),
        ("max-concurrent-uploads", int, defaults.max_concurrent_uploads, "blobs"),
        ("registry-attempts", int, defaults.attempts, "tries per request, the first included"),
        ("registry-backoff", float, defaults.backoff, "seconds before the first retry; doubles"),
        ("registry-connect-timeout", float, defaults.connect_timeout, "seconds"),
        ("registry-idle-timeout", float, defaults.idle_timeout, "seconds of silence allowed"),
    ]
    for name, kind, default, meaning in numbers:
        group.add_argument(
            f"--{name}",
            type=kind,
            default=kind(_env(name, default)),
            help=f"{meaning} (default {default})",
        )


def _registry_options(args: argparse.Namespace) -> RegistryOptions:
    return RegistryOptions(
        insecure_registries=tuple(args.insecure_registry),
        ca_files=tuple(Path(p) for p in args.registry_ca),
        certs_dir=_path(args.registry_certs_dir),
        mirrors=tuple(args.registry_mirror),
        config_file=_path(args.registry_config),
        max_concurrent_downloads=args.max_concurrent_downloads,
        max_concurrent_uploads=args.max_concurrent_uploads,
        attempts=args.registry_attempts,
        backoff=args.registry_backoff,
        connect_timeout=args.registry_connect_timeout,
        idle_timeout=args.registry_idle_timeout,
    )


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
        registry=_registry_options(args),
    )
    return run(config)
