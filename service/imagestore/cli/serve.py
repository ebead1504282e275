"""`imagestore serve`: every option is a flag, an IMAGESTORE_* variable and a key
of the configuration file (:mod:`imagestore.cli.config_file`).

Only `serve` reads them: for any other command the CLI registers :func:`add_stub`
(the help line), so it neither imports the server nor reads a server variable or
file (a malformed ``IMAGESTORE_GRACE_PERIOD`` cannot break ``imagestore images``).
The server's modules are imported when `serve` itself runs or shows its help.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagestore.cli import config_file
from imagestore.cli.config_file import OptionType
from imagestore.cli.durations import format_duration, parse_duration

if TYPE_CHECKING:
    from imagestore.archive.load import LoadLimits
    from imagestore.distribution.limits import EndpointLimits
    from imagestore.distribution.pullthrough import PullThroughOptions
    from imagestore.registry.options import RegistryOptions

HELP = "run the gRPC server"
DESCRIPTION = "Serve the image store over gRPC (reflection and health always on)."
#: the options naming a file the server reads at start (checked first: one clear line)
_FILES = ("tls_cert", "tls_key", "tls_client_ca", "auth_token_file", "registry_config")
#: how much of a --tls-* file is read to see that it is PEM (a header may follow comments)
_PEM_PEEK = 64 << 10
#: serve's options that are not settings: they say which file to read, or what to do
_NOT_SETTINGS = frozenset({"config_file", "print_config"})


def _shown_duration(seconds: float) -> str | float:
    """A duration as the configuration shows it: ``"1m30s"``, or plain seconds
    when no such form reads back as the same number."""
    text = format_duration(seconds)
    try:
        return text if parse_duration(text) == seconds else seconds
    except ValueError:
        return seconds


_int = OptionType(int, "integer", expected="an integer", toml=(int,))


def _parse_socket_mode(text: str) -> int:
    """``0660``-style permissions of the unix socket: the owner must keep read
    and write (the server's own clients), nothing beyond rwx bits."""
    try:
        mode = int(text.strip().removeprefix("0o"), 8)
    except ValueError:
        raise ValueError(
            f"invalid socket mode {text[:20]!r}: octal permissions such as 0660"
        ) from None
    if mode > 0o777 or mode & 0o600 != 0o600:
        raise ValueError(
            f"invalid socket mode {text[:20]!r}: octal permissions such as 0660, with"
            " read and write for the owner"
        )
    return mode


_socket_mode = OptionType(
    _parse_socket_mode,
    "socket mode",
    expected='octal permissions as a string, such as "0660"',
    toml=(str,),
    explains=True,
    show=lambda mode: f"{mode:04o}",
)
_duration = OptionType(
    parse_duration,
    "duration",
    expected='a duration (seconds, or a string such as "1m30s")',
    toml=(int, float, str),
    explains=True,
    show=_shown_duration,
)


def _path(value: str | None) -> Path | None:
    return None if value in (None, "") else Path(str(value))


def add_stub(commands: Any) -> None:
    """`serve` in the command list, without its options (nor the server's imports)."""
    commands.add_parser("serve", help=HELP, description=DESCRIPTION)


def add_parser(commands: Any) -> None:
    """`serve` with every option (this imports the server's modules for their defaults)."""
    from imagestore.api.admission import Limits
    from imagestore.api.server import default_root
    from imagestore.logs import FORMATS, LEVELS, LIBRARIES_DEFAULT
    from imagestore.store.events import DEFAULT_EVENTS_MAX_AGE, DEFAULT_EVENTS_MAX_COUNT
    from imagestore.store.store import (
        DEFAULT_HEARTBEAT_INTERVAL,
        DEFAULT_MAX_LAYER_SIZE,
        DEFAULT_REPLICA_TIMEOUT,
        ORPHAN_GRACE_PERIOD,
    )

    parser: argparse.ArgumentParser = commands.add_parser(
        "serve",
        help=HELP,
        description=DESCRIPTION + " Durations are seconds, or Go / systemd durations such as"
        " 500ms, 10s, 1m30s, 2h or 7d. Each option can also be set by its IMAGESTORE_*"
        " variable (--grace-period: IMAGESTORE_GRACE_PERIOD) or by the key of its name in"
        ' the configuration file (grace-period = "10s"); a flag wins over a variable,'
        " a variable over the file.",
    )
    parser.add_argument(
        "--config",
        dest="config_file",
        metavar="PATH",
        help=f"configuration file, TOML (IMAGESTORE_CONFIG; default {config_file.DEFAULT_PATH}"
        " when present; an empty PATH reads none)",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective configuration as TOML, each value's origin after it, and exit",
    )
    parser.add_argument(
        "--listen",
        default="127.0.0.1:50051",
        help="host:port or unix:///path (default 127.0.0.1:50051)",
    )
    parser.add_argument(
        "--root",
        default=str(default_root()),
        help="store directory (default $XDG_DATA_HOME/imagestore)",
    )
    parser.add_argument(
        "--catalog",
        metavar="URL",
        help="the catalog's database: a PostgreSQL URL (postgresql://user@host/db; give"
        " the password through ~/.pgpass or PGPASSWORD, not the URL); default the SQLite"
        " file catalog.db in --root",
    )
    parser.add_argument(
        "--blob-dir",
        metavar="DIR",
        help="the blob files' directory (default blobs in --root); with a PostgreSQL"
        " --catalog, several replicas may share one (NFS, CephFS, EFS)",
    )
    parser.add_argument("--tls-cert", help="server certificate (PEM)")
    parser.add_argument("--tls-key", help="server key (PEM)")
    parser.add_argument(
        "--tls-client-ca",
        help="require client certificates signed by this CA (mutual TLS)",
    )
    parser.add_argument(
        "--auth-token-file",
        help="file of accepted bearer tokens, one per line",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback listener without TLS",
    )
    parser.add_argument(
        "--socket-mode",
        type=_socket_mode,
        default=0o600,
        help="permissions of a unix:// listener's socket: 0660 lets the server's group"
        " connect (run the server with that group); access for others needs --insecure"
        " (default 0600)",
    )
    parser.add_argument(
        "--metrics-listen",
        help="host:port for Prometheus metrics (off by default)",
    )
    parser.add_argument(
        "--grace-period",
        type=_duration,
        default=10.0,
        help="how long in-flight calls may run on at shutdown (default 10s)",
    )
    parser.add_argument(
        "--max-layer-size",
        type=_int,
        default=DEFAULT_MAX_LAYER_SIZE,
        help="largest uncompressed layer accepted, in bytes (default 64 GiB)",
    )
    parser.add_argument(
        "--events-max-count",
        type=_int,
        default=DEFAULT_EVENTS_MAX_COUNT,
        help="events the journal keeps for WatchEvents: a watcher whose cursor is older"
        f" gets CURSOR_EXPIRED (default {DEFAULT_EVENTS_MAX_COUNT:,})",
    )
    parser.add_argument(
        "--events-max-age",
        type=_duration,
        default=DEFAULT_EVENTS_MAX_AGE,
        help="how long the journal keeps an event, a duration such as 24h, 7d or 1h30m"
        f" (default {format_duration(DEFAULT_EVENTS_MAX_AGE)})",
    )
    limits = Limits()
    _add_numbers(
        parser,
        [
            (
                "orphan-grace-period",
                _duration,
                ORPHAN_GRACE_PERIOD,
                "age after which a blob file without a catalog record is removed at"
                " start (younger ones may be another process's commit in flight)",
            ),
            (
                "replica-timeout",
                _duration,
                DEFAULT_REPLICA_TIMEOUT,
                "how long a replica sharing the catalog may go without a heartbeat before"
                " it counts as dead: its leases expire, its ingest files are swept",
            ),
            (
                "heartbeat-interval",
                _duration,
                DEFAULT_HEARTBEAT_INTERVAL,
                "time between two heartbeats of this replica on a PostgreSQL catalog"
                " (it also beats at once when another replica collects garbage)",
            ),
            (
                "max-connection-age",
                _duration,
                0.0,
                "close a client's connection (gracefully: its calls finish) once it is"
                " this old, so that clients spread over replicas added since; 0s never",
            ),
            (
                "max-concurrent-rpcs",
                _int,
                limits.max_concurrent_rpcs,
                "calls of the image service in flight at once; more are refused with"
                " RESOURCE_EXHAUSTED and a retry delay (health and reflection never are)",
            ),
            (
                "max-concurrent-streams",
                _int,
                limits.max_concurrent_streams,
                "Load, Save and ReadBlob streams at once (each Load holds a thread, each"
                " stream a few MiB of buffers); more are refused like extra calls",
            ),
            (
                "max-concurrent-watches",
                _int,
                limits.max_concurrent_watches,
                "WatchEvents calls open at once, counted apart from other calls (a watch"
                " lasts; each reads the events journal once per change); more are refused",
            ),
            (
                "max-response-bytes",
                _int,
                limits.max_response_bytes,
                "largest ListImages page or Inspect answer: a page ends before it, labels"
                " that would not fit are left out and flagged; keep it under the 4 MiB"
                " gRPC clients accept by default (3.5 MiB)",
            ),
        ],
    )
    _add_load_options(parser)
    _add_registry_options(parser)
    _add_endpoint_options(parser)
    parser.add_argument(
        "--log-level",
        default="info",
        choices=LEVELS,
        help="least severe log records written (default info)",
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=FORMATS,
        help="log lines as text, or as one JSON object each (default text)",
    )
    parser.add_argument(
        "--log-libraries",
        default=LIBRARIES_DEFAULT,
        choices=LEVELS,
        help="least severe records of the libraries' loggers (grpc, asyncio, aiohttp),"
        f" apart from --log-level since at debug they log their internals (default"
        f" {LIBRARIES_DEFAULT})",
    )
    settings = config_file.Settings(parser, exclude=_NOT_SETTINGS)
    parser.set_defaults(run=functools.partial(_run, settings=settings))


def _add_load_options(parser: argparse.ArgumentParser) -> None:
    from imagestore.archive.load import LoadLimits

    group = parser.add_argument_group("archives (Load)")
    defaults = LoadLimits()
    refused = "; beyond it a Load is refused with RESOURCE_EXHAUSTED"
    numbers: list[tuple[str, Callable[[str], Any], Any, str]] = [
        (
            "load-max-header-bytes",
            _int,
            defaults.tar.max_header_bytes,
            "data of one PAX or GNU long-name tar header (xattrs ride in these)" + refused,
        ),
        (
            "load-max-name-bytes",
            _int,
            defaults.tar.max_name_bytes,
            "a member's path or link target" + refused,
        ),
        ("load-max-members", _int, defaults.tar.max_members, "members of one archive" + refused),
        (
            "load-max-kept-bytes",
            _int,
            defaults.max_kept_bytes,
            "JSON documents and paths one Load holds in memory until its manifests are read"
            + refused,
        ),
        (
            "load-max-expanded-bytes",
            _int,
            defaults.max_expanded_bytes,
            "what a gzip, bzip2 or xz archive may expand to (an uncompressed one is not"
            " capped: its sender pays for every byte)" + refused,
        ),
    ]
    _add_numbers(group, numbers)


def _load_limits(args: argparse.Namespace) -> LoadLimits:
    from imagestore.archive.load import LoadLimits
    from imagestore.archive.tar import TarLimits

    return LoadLimits(
        tar=TarLimits(
            max_header_bytes=args.load_max_header_bytes,
            max_name_bytes=args.load_max_name_bytes,
            max_members=args.load_max_members,
        ),
        max_kept_bytes=args.load_max_kept_bytes,
        max_expanded_bytes=args.load_max_expanded_bytes,
    )


def _add_registry_options(parser: argparse.ArgumentParser) -> None:
    from imagestore.registry.options import DOCKER_CERTS_DIR, RegistryOptions

    group = parser.add_argument_group("registries (pull and push)")
    group.add_argument(
        "--registry-config",
        help="server-side registry credentials, Docker config.json format (off by default)",
    )
    group.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]|CIDR",
        help="allow plain HTTP or unverified TLS to this registry (repeatable;"
        " loopback registries may always use HTTP)",
    )
    group.add_argument(
        "--registry-ca",
        action="append",
        default=[],
        metavar="PEM",
        help="extra CA bundle trusted for registries (repeatable)",
    )
    group.add_argument(
        "--registry-certs-dir",
        default=str(DOCKER_CERTS_DIR),
        help="Docker-style <dir>/<host:port>/{ca.crt,client.cert,client.key}"
        f" (default {DOCKER_CERTS_DIR})",
    )
    group.add_argument(
        "--registry-mirror",
        action="append",
        default=[],
        metavar="URL",
        help="mirror tried first for docker.io pulls (repeatable); it gets the"
        " --registry-config credentials of its own host, never a request's",
    )
    group.add_argument(
        "--registry-allow-internal",
        action="append",
        default=[],
        metavar="CIDR",
        help="network whose addresses count as public for the URLs registries hand back"
        " (redirects, upload sessions, token realms), e.g. a LAN registry redirecting to"
        " LAN storage; otherwise a registry may not send us to an address more internal"
        " than its own (public < private/ULA/CGNAT < link-local/metadata < loopback):"
        " refused with PERMISSION_DENIED, reason ADDRESS_REFUSED (repeatable; default"
        " none)",
    )
    # test only: fake name resolution, and connections to loopback only (registry/guard.py)
    group.add_argument(
        "--registry-test-resolve",
        action="append",
        default=[],
        help=argparse.SUPPRESS,
    )
    defaults = RegistryOptions()
    numbers: list[tuple[str, Callable[[str], Any], Any, str]] = [
        (
            "max-concurrent-downloads",
            _int,
            defaults.max_concurrent_downloads,
            "layers downloading at once from one registry (each registry has its own)",
        ),
        (
            "max-concurrent-small-downloads",
            _int,
            defaults.max_concurrent_small_downloads,
            "layers of at most 1 MiB downloading at once from one registry, besides"
            " --max-concurrent-downloads (each read whole: at most this many MiB held)",
        ),
        (
            "max-concurrent-uploads",
            _int,
            defaults.max_concurrent_uploads,
            "blobs uploading at once to one registry (each registry has its own)",
        ),
        ("registry-attempts", _int, defaults.attempts, "tries per request, the first included"),
        ("registry-backoff", _duration, defaults.backoff, "delay before the first retry; doubles"),
        (
            "registry-connect-timeout",
            _duration,
            defaults.connect_timeout,
            "longest wait for a connection",
        ),
        (
            "registry-idle-timeout",
            _duration,
            defaults.idle_timeout,
            "longest silence allowed while reading an answer",
        ),
        (
            "registry-min-speed",
            _int,
            defaults.min_speed,
            "slowest download accepted, bytes/s averaged over --registry-speed-window;"
            " a slower try fails and is retried like a stall (0: no floor)",
        ),
        (
            "registry-speed-window",
            _duration,
            defaults.speed_window,
            "how long the minimum speed is averaged over",
        ),
        (
            "registry-blob-timeout",
            _duration,
            defaults.blob_timeout,
            "how long one blob or manifest download may take, retries included (0: none;"
            " 2 h moves a 10 GiB layer at 12 Mbit/s)",
        ),
        (
            "max-index-children",
            _int,
            defaults.max_index_children,
            "entries a pulled index may list; refused before any is fetched",
        ),
        (
            "max-manifest-bytes-per-pull",
            _int,
            defaults.max_manifest_bytes_per_pull,
            "bytes of manifests, indexes, configs and (with all_tags) tag lists one pull may"
            " fetch (64 MiB)",
        ),
        (
            "max-layers-per-pull",
            _int,
            defaults.max_layers_per_pull,
            "distinct layers one pull may bring in",
        ),
    ]
    _add_numbers(group, numbers)


def _add_endpoint_options(parser: argparse.ArgumentParser) -> None:
    from imagestore.distribution.limits import EndpointLimits
    from imagestore.distribution.pullthrough import DEFAULT_TTL

    group = parser.add_argument_group("registry endpoint (OCI Distribution)")
    group.add_argument(
        "--registry-listen",
        metavar="HOST:PORT",
        help="serve the store over the OCI Distribution API (pull) on this address, for"
        " containerd, Docker, skopeo; TLS and tokens as for gRPC (--tls-*,"
        " --auth-token-file); a non-loopback address without TLS needs --insecure"
        " (off by default)",
    )
    group.add_argument(
        "--registry-allow-push",
        action="store_true",
        help="take pushes on the registry endpoint: blob uploads (every byte verified"
        " against its digest) and manifests, which become images under the pushed names"
        " (off by default: 405)",
    )
    group.add_argument(
        "--registry-allow-delete",
        action="store_true",
        help="take DELETE of manifests and tags on the registry endpoint: the store's"
        " remove, with Docker's rules (off by default: 405)",
    )
    group.add_argument(
        "--registry-pull-through",
        action="store_true",
        help="the registry endpoint pulls a manifest the store lacks from its registry when"
        " that registry is a --registry-upstream, then serves it (off by default)",
    )
    group.add_argument(
        "--registry-upstream",
        action="append",
        default=[],
        metavar="REGISTRY|docker.io=URL",
        help="a registry pull-through may pull from (repeatable): a host such as ghcr.io"
        " or 127.0.0.1:5000, or docker.io=URL for Docker Hub's names (plain docker.io:"
        " https://registry-1.docker.io); plain HTTP as --insecure-registry allows",
    )
    defaults = EndpointLimits()
    numbers: list[tuple[str, Callable[[str], Any], Any, str]] = [
        (
            "registry-max-concurrent-requests",
            _int,
            defaults.max_concurrent_requests,
            "requests the registry endpoint serves at once; more are refused with 429"
            " and Retry-After",
        ),
        (
            "registry-max-header-bytes",
            _int,
            defaults.max_header_bytes,
            "longest request line (path and query) or header field; longer is refused (400)",
        ),
        (
            "registry-max-headers",
            _int,
            defaults.max_headers,
            "header fields one request may carry; more is refused (400)",
        ),
        (
            "registry-keepalive-timeout",
            _duration,
            defaults.keepalive_timeout,
            "how long an idle connection to the registry endpoint stays open",
        ),
        (
            "registry-send-timeout",
            _duration,
            defaults.send_timeout,
            "longest one write of a response may wait for the client to read; then the"
            " connection is cut (a client that stops reading holds nothing for long)",
        ),
        (
            "registry-max-page-size",
            _int,
            defaults.max_page_size,
            "most tags or repositories one tags/list or _catalog page lists (a larger n is capped)",
        ),
        (
            "registry-max-upload-sessions",
            _int,
            defaults.max_upload_sessions,
            "blob uploads open at once on the registry endpoint; more are refused with 429",
        ),
        (
            "registry-upload-timeout",
            _duration,
            defaults.upload_timeout,
            "an upload left idle this long is cancelled, and an uploaded blob that no pushed"
            " manifest uses is no longer kept after it",
        ),
        (
            "registry-pull-through-ttl",
            _duration,
            DEFAULT_TTL,
            "a pulled-through tag is checked upstream (HEAD) once its last check is older"
            " than this, and upstream's tag list of a repository asked again (0: on every"
            " request); served stale, with a Warning, when upstream does not answer",
        ),
        (
            "registry-pull-through-max-bytes",
            _int,
            0,
            "once the store's blobs exceed this many bytes after a pull-through, images the"
            " endpoint pulled through are removed, least recently served first (0: no cap)",
        ),
    ]
    _add_numbers(group, numbers)


def _endpoint_limits(args: argparse.Namespace) -> EndpointLimits:
    from imagestore.distribution.limits import EndpointLimits

    return EndpointLimits(
        max_concurrent_requests=args.registry_max_concurrent_requests,
        max_header_bytes=args.registry_max_header_bytes,
        max_headers=args.registry_max_headers,
        keepalive_timeout=float(args.registry_keepalive_timeout),
        send_timeout=float(args.registry_send_timeout),
        max_page_size=args.registry_max_page_size,
        max_upload_sessions=args.registry_max_upload_sessions,
        upload_timeout=float(args.registry_upload_timeout),
    )


def _pull_through_options(args: argparse.Namespace) -> PullThroughOptions:
    from imagestore.distribution.pullthrough import PullThroughOptions

    return PullThroughOptions(
        enabled=args.registry_pull_through,
        upstreams=tuple(args.registry_upstream),
        ttl=float(args.registry_pull_through_ttl),
        max_bytes=args.registry_pull_through_max_bytes,
    )


def _add_numbers(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    numbers: list[tuple[str, Callable[[str], Any], Any, str]],
) -> None:
    """Numeric options: ``--name``, with its default and meaning in the help."""
    for name, kind, default, meaning in numbers:
        shown = format_duration(default) if kind is _duration else default
        parser.add_argument(
            f"--{name}",
            type=kind,
            default=default,
            help=f"{meaning} (default {shown})",
        )


def _registry_options(args: argparse.Namespace) -> RegistryOptions:
    from imagestore.registry.options import RegistryOptions

    return RegistryOptions(
        insecure_registries=tuple(args.insecure_registry),
        ca_files=tuple(Path(p) for p in args.registry_ca),
        certs_dir=_path(args.registry_certs_dir),
        mirrors=tuple(args.registry_mirror),
        config_file=_path(args.registry_config),
        allow_internal=tuple(args.registry_allow_internal),
        test_resolve=tuple(args.registry_test_resolve),
        max_concurrent_downloads=args.max_concurrent_downloads,
        max_concurrent_small_downloads=args.max_concurrent_small_downloads,
        max_concurrent_uploads=args.max_concurrent_uploads,
        attempts=args.registry_attempts,
        backoff=args.registry_backoff,
        connect_timeout=args.registry_connect_timeout,
        idle_timeout=args.registry_idle_timeout,
        min_speed=args.registry_min_speed,
        speed_window=args.registry_speed_window,
        blob_timeout=args.registry_blob_timeout,
        max_index_children=args.max_index_children,
        max_manifest_bytes_per_pull=args.max_manifest_bytes_per_pull,
        max_layers_per_pull=args.max_layers_per_pull,
    )


def _run(args: argparse.Namespace, *, settings: config_file.Settings) -> int:
    """Start the server (or print its configuration); a start-up failure is one
    line on stderr and exit 1."""
    try:
        source = config_file.locate(args.config_file, os.environ)
        from_file = config_file.read(source, settings) if source else {}
        resolved = settings.resolve(args, os.environ, from_file, source)
        if args.print_config:
            sys.stdout.write(config_file.dump(resolved, source))
            return 0
    except config_file.ConfigError as exc:
        return _fail(str(exc))
    from imagestore.logs import configure_logging

    configure_logging(args.log_level, args.log_format, args.log_libraries)
    unreadable = _unreadable_file(args)
    if unreadable:
        return _fail(unreadable)
    from imagestore.api.admission import Limits
    from imagestore.api.server import ServerConfig, run

    config = ServerConfig(
        listen=args.listen,
        root=Path(args.root),
        catalog=args.catalog or None,
        blob_dir=_path(args.blob_dir),
        tls_cert=_path(args.tls_cert),
        tls_key=_path(args.tls_key),
        tls_client_ca=_path(args.tls_client_ca),
        auth_token_file=_path(args.auth_token_file),
        insecure=args.insecure,
        socket_mode=args.socket_mode,
        metrics_listen=args.metrics_listen or None,
        registry_listen=args.registry_listen or None,
        registry_allow_push=args.registry_allow_push,
        registry_allow_delete=args.registry_allow_delete,
        pull_through=_pull_through_options(args),
        grace_period=args.grace_period,
        max_layer_size=args.max_layer_size,
        orphan_grace_period=args.orphan_grace_period,
        replica_timeout=float(args.replica_timeout),
        heartbeat_interval=float(args.heartbeat_interval),
        max_connection_age=float(args.max_connection_age),
        events_max_count=args.events_max_count,
        events_max_age=float(args.events_max_age),
        limits=Limits(
            max_concurrent_rpcs=args.max_concurrent_rpcs,
            max_concurrent_streams=args.max_concurrent_streams,
            max_concurrent_watches=args.max_concurrent_watches,
            max_response_bytes=args.max_response_bytes,
        ),
        registry_limits=_endpoint_limits(args),
        load=_load_limits(args),
        registry=_registry_options(args),
    )
    try:
        return run(config)
    except OSError as exc:  # the store's root, mostly: a path the server cannot use
        return _fail(_os_error(exc, Path(args.root)))


def _unreadable_file(args: argparse.Namespace) -> str:
    """The first file option naming a file that cannot be read, said in one line."""
    named = [(dest, getattr(args, dest)) for dest in _FILES]
    named += [("registry_ca", path) for path in args.registry_ca]
    for dest, value in named:
        if not value:
            continue
        option = "--" + dest.replace("_", "-")
        try:
            with open(value, "rb") as file:
                head = file.read(_PEM_PEEK)
        except OSError as exc:
            return f"{option} {value}: {(exc.strerror or str(exc)).lower()}"
        if dest.startswith("tls_") and b"-----BEGIN " not in head:
            return f"{option} {value}: not a PEM file"
    return ""


def _os_error(exc: OSError, root: Path) -> str:
    """``exc`` in one line, naming --root when the path is the store's."""
    where, text = str(exc.filename or ""), (exc.strerror or str(exc)).lower()
    if where == str(root):
        return f"--root {root}: {text}"
    if where.startswith(str(root).rstrip("/") + "/"):
        return f"--root {root}: {where}: {text}"
    return f"{where}: {text}" if where else text


def _fail(message: str) -> int:
    print(f"imagestore serve: {message}", file=sys.stderr)
    return 1
