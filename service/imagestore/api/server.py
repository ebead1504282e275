"""Server bootstrap: the store, the gRPC server with its interceptors, health,
reflection, TLS or token auth, metrics, the registry endpoint (OCI Distribution
over HTTP, ``imagestore/distribution``), and a graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from imagestore import errors
from imagestore.addresses import is_loopback
from imagestore.api import reflection
from imagestore.api.admission import Admission, Limits
from imagestore.api.interceptors import AccessLog, ErrorMapping, TokenAuth
from imagestore.api.metrics import Metrics, MetricsListener, count_pull
from imagestore.api.notify import Notifier
from imagestore.api.pools import Pools
from imagestore.api.servicer import ImageStoreServicer
from imagestore.archive.load import LoadLimits
from imagestore.distribution.app import RegistryEndpoint, build_app, tls_context
from imagestore.distribution.limits import EndpointLimits
from imagestore.distribution.pullthrough import PullThrough, PullThroughOptions, Upstream
from imagestore.registry.client import RegistryClient
from imagestore.registry.options import RegistryOptions
from imagestore.store.events import DEFAULT_EVENTS_MAX_AGE, DEFAULT_EVENTS_MAX_COUNT
from imagestore.store.store import (
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MAX_LAYER_SIZE,
    DEFAULT_REPLICA_TIMEOUT,
    ORPHAN_GRACE_PERIOD,
    Store,
    catalog_factory,
)
from imagestore.telemetry import Telemetry
from imagestore.v1 import imagestore_pb2, imagestore_pb2_grpc

log = logging.getLogger("imagestore.server")

SERVICE_NAME = imagestore_pb2.DESCRIPTOR.services_by_name["ImageStoreService"].full_name
MAX_MESSAGE = 8 << 20  # room for 1 MiB chunks and include_raw Inspects
# HTTP/2 streams one connection may hold open beyond the service's own cap, for
# health checks, reflection and calls being refused.
CONNECTION_STREAM_HEADROOM = 64


def default_root() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "imagestore"


@dataclass(frozen=True)
class ServerConfig:
    """Everything `imagestore serve` can be told (flags or IMAGESTORE_* variables)."""

    listen: str = "127.0.0.1:50051"
    root: Path = field(default_factory=default_root)
    #: the catalog's location: None for SQLite in the root, or a PostgreSQL URL
    catalog: str | None = None
    #: the blob files' directory: None for ``<root>/blobs``; may be shared (PostgreSQL)
    blob_dir: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    auth_token_file: Path | None = None
    insecure: bool = False
    #: a unix socket's mode once it listens (0660 lets the server's group connect)
    socket_mode: int = 0o600
    metrics_listen: str | None = None
    #: host:port of the registry endpoint (OCI Distribution): None is off
    registry_listen: str | None = None
    #: the endpoint takes blob uploads and manifests (push), and DELETE of manifests
    registry_allow_push: bool = False
    registry_allow_delete: bool = False
    #: the endpoint pulls what the store lacks from allowlisted upstreams
    pull_through: PullThroughOptions = field(default_factory=PullThroughOptions)
    grace_period: float = 10.0
    max_layer_size: int = DEFAULT_MAX_LAYER_SIZE
    orphan_grace_period: float = ORPHAN_GRACE_PERIOD
    #: seconds between heartbeats, and without one before a replica counts as dead
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    replica_timeout: float = DEFAULT_REPLICA_TIMEOUT
    #: seconds after which a client connection is sent GOAWAY (0: never)
    max_connection_age: float = 0.0
    #: the events journal's retention: at most this many events, this many seconds
    events_max_count: int = DEFAULT_EVENTS_MAX_COUNT
    events_max_age: float = DEFAULT_EVENTS_MAX_AGE
    limits: Limits = field(default_factory=Limits)
    registry_limits: EndpointLimits = field(default_factory=EndpointLimits)
    load: LoadLimits = field(default_factory=LoadLimits)
    registry: RegistryOptions = field(default_factory=RegistryOptions)


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); the port is 0..65535
    (0 lets the system pick one)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise errors.OptionInvalid(f"listen address {address!r} needs host:port")
    if int(port) > 65535:
        raise errors.OptionInvalid(
            f"listen address {address!r}: port {port} is out of range"
            " (0 to 65535; 0 picks a free port)"
        )
    return host.strip("[]"), int(port)


def _listeners(config: ServerConfig) -> list[tuple[str, str]]:
    listeners = [("--listen", config.listen)]
    if config.metrics_listen is not None:
        listeners.append(("--metrics-listen", config.metrics_listen))
    if config.registry_listen is not None:  # TLS as gRPC's: the same rule
        listeners.append(("--registry-listen", config.registry_listen))
    return listeners


def check_addresses(config: ServerConfig) -> None:
    """Every listen address parses, with a port in range (InvalidArgument naming the flag)."""
    for name, address in _listeners(config):
        if name == "--listen" and address.startswith("unix:"):
            continue
        try:
            split_host_port(address)
        except errors.InvalidArgument as exc:
            raise errors.OptionInvalid(
                f"{name}: {exc.message}", metadata={"option": name.removeprefix("--")}
            ) from None


def check_exposure(config: ServerConfig) -> None:
    """A listener other machines can reach needs TLS, unless --insecure says so."""
    tls = config.tls_cert is not None
    for name, address in _listeners(config):
        if address.startswith("unix:"):
            if config.socket_mode & 0o007 and not config.insecure:
                raise errors.ListenerInsecure(
                    f"refusing a socket mode of {config.socket_mode:04o} for {address}: every"
                    " local user could call the server; give a group (0660), or --insecure"
                    " to accept that",
                    metadata={"option": "socket-mode"},
                )
            continue
        host, _ = split_host_port(address)
        if is_loopback(host) or config.insecure:
            continue
        if name == "--metrics-listen":  # plain HTTP whatever --tls-cert says
            raise errors.ListenerInsecure(
                f"refusing to serve metrics on {address}: plain HTTP reachable from other"
                " machines; keep --metrics-listen on loopback (a proxy can add TLS), or"
                " give --insecure to accept that",
                metadata={"option": "metrics-listen"},
            )
        if not tls:
            raise errors.ListenerInsecure(
                f"refusing to listen on {address} ({name}) without TLS: it is reachable from"
                " other machines; give --tls-cert/--tls-key, or --insecure to accept that",
                metadata={"option": name.removeprefix("--")},
            )


def _read(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes()


def _credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    if config.tls_cert is None and config.tls_key is None:
        if config.tls_client_ca is not None:
            raise errors.OptionInvalid(
                "--tls-client-ca needs --tls-cert and --tls-key",
                metadata={"option": "tls-client-ca"},
            )
        return None
    if config.tls_cert is None or config.tls_key is None:
        raise errors.OptionInvalid(
            "--tls-cert and --tls-key go together", metadata={"option": "tls-cert"}
        )
    client_ca = _read(config.tls_client_ca)
    return grpc.ssl_server_credentials(
        [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def _tokens(path: Path | None) -> set[str]:
    if path is None:
        return set()
    tokens = {line.strip() for line in path.read_text().splitlines() if line.strip()}
    if not tokens:
        raise errors.OptionInvalid(f"{path} holds no token", metadata={"option": "auth-token-file"})
    return tokens


async def serve(config: ServerConfig, *, ready: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT; then stop taking calls, let streams finish
    within the grace period, and close the store."""
    check_addresses(config)
    check_exposure(config)
    config.limits.validate(MAX_MESSAGE)
    config.registry_limits.validate()
    logging.getLogger("grpc._cython.cygrpc").addFilter(_SendToAGoneClient())
    stop = _stop_on_signals()  # before announcing readiness: a quick SIGTERM is handled too
    notifier = Notifier.from_environment()
    credentials = _credentials(config)
    tokens = _tokens(config.auth_token_file)
    store = Store.open(
        config.root,
        catalog=catalog_factory(config.catalog),
        blob_dir=config.blob_dir,
        max_layer_size=config.max_layer_size,
        orphan_grace_period=config.orphan_grace_period,
        heartbeat_interval=config.heartbeat_interval,
        replica_timeout=config.replica_timeout,
        upload_timeout=config.registry_limits.upload_timeout,
        events_max_count=config.events_max_count,
        events_max_age=config.events_max_age,
    )
    telemetry = Telemetry()
    registry = RegistryClient(config.registry, telemetry=telemetry)
    listener: MetricsListener | None = None
    endpoint: RegistryEndpoint | None = None
    try:
        upstreams = config.pull_through.validate(config.registry_listen is not None, registry.trust)
        metrics = Metrics(telemetry, store) if config.metrics_listen else None
        interceptors: list[grpc.aio.ServerInterceptor] = [AccessLog(metrics)]
        if tokens:
            interceptors.append(TokenAuth(tokens))
        interceptors.append(ErrorMapping())
        interceptors.append(Admission(config.limits))  # inside ErrorMapping: refusals mapped
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE),
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                # A second server on the same port must fail, not share it.
                ("grpc.so_reuseport", 0),
                (
                    "grpc.max_concurrent_streams",
                    config.limits.max_concurrent_rpcs + CONNECTION_STREAM_HEADROOM,
                ),
                # gRPC adds ±10 % jitter; calls in flight finish (no grace limit).
                *(
                    [("grpc.max_connection_age_ms", int(config.max_connection_age * 1000))]
                    if config.max_connection_age
                    else []
                ),
            ],
        )
        # One Load thread per admitted stream: no admitted Load waits for a thread.
        pools = Pools(load_workers=config.limits.max_concurrent_streams)
        servicer = ImageStoreServicer(
            store,
            registry,
            pools=pools,
            secure_transport=credentials is not None,
            load_limits=config.load,
            limits=config.limits,
            mutual_tls=config.tls_client_ca is not None,
            token_auth=bool(tokens),
            telemetry=telemetry,
        )
        add_servicer = imagestore_pb2_grpc.add_ImageStoreServiceServicer_to_server
        add_servicer(servicer, server)  # type: ignore[no-untyped-call]
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable(server, [SERVICE_NAME, health.SERVICE_NAME])
        address = _bind(server, config.listen, credentials)
        if metrics is not None and config.metrics_listen is not None:
            listener = _serve_metrics(metrics, config.metrics_listen)
        registry_address: str | None = None
        if config.registry_listen is not None:
            through = None
            if config.pull_through.enabled:
                through = _pull_through(config, store, pools, registry, upstreams, telemetry)
            endpoint = _registry_endpoint(config, store, pools, tokens, through, telemetry)
            registry_address = await endpoint.start(*split_host_port(config.registry_listen))
            categories = ["pull"] + ["push"] * config.registry_allow_push
            categories += ["delete"] * config.registry_allow_delete
            categories += ["pull-through"] * config.pull_through.enabled
            log.info(
                "registry endpoint (OCI Distribution: %s) on %s",
                ", ".join(categories),
                registry_address,
            )
        await server.start()
        if config.listen.startswith("unix:"):
            os.chmod(config.listen.removeprefix("unix:").removeprefix("//"), config.socket_mode)
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        if metrics is not None:
            metrics.ready.set()
        log.info("imagestore serving on %s (root %s)", address, config.root)
        notifier.ready(address, registry=registry_address)
        if ready is not None:
            ready.set()
        await stop.wait()
        if metrics is not None:
            metrics.ready.clear()  # /readyz: 503 from now on
        notifier.stopping()
        log.info("shutting down: letting calls finish for up to %.0f s", config.grace_period)
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        servicer.events.close()  # a watch would otherwise last the whole grace period
        # Both stop taking requests at once; those in flight share the grace period.
        await asyncio.gather(
            server.stop(config.grace_period), *([endpoint.stop()] if endpoint else [])
        )
        endpoint = None
        await pools.shutdown()  # the jobs of cancelled calls end before the store closes
        await _calls_wound_down(config.grace_period)
    finally:
        if endpoint is not None:  # a failed start: stop listening before the store closes
            await endpoint.stop()
        if listener is not None:
            listener.close()  # before the store closes: no scrape reads a closed catalog
        await registry.close()
        store.close()


def _pull_through(
    config: ServerConfig,
    store: Store,
    pools: Pools,
    registry: RegistryClient,
    upstreams: dict[str, Upstream],
    telemetry: Telemetry,
) -> PullThrough:
    """The endpoint's pull-through, on the server's registry client; its layers
    are counted as gRPC pulls' are."""
    log.info(
        "registry endpoint pull-through from %s",
        ", ".join(
            u.domain + (f" ({u.endpoint})" if u.endpoint else "") for u in upstreams.values()
        ),
    )
    return PullThrough(
        store,
        registry,
        upstreams,
        unary=pools.unary,
        ttl=config.pull_through.ttl,
        max_bytes=config.pull_through.max_bytes,
        telemetry=telemetry,
        on_progress=lambda event: count_pull(telemetry, event),
    )


def _registry_endpoint(
    config: ServerConfig,
    store: Store,
    pools: Pools,
    tokens: set[str],
    through: PullThrough | None,
    telemetry: Telemetry,
) -> RegistryEndpoint:
    """The registry endpoint on the gRPC server's store, pools, TLS files and tokens."""
    ssl_context = None
    if config.tls_cert is not None and config.tls_key is not None:
        ssl_context = tls_context(config.tls_cert, config.tls_key, config.tls_client_ca)
    app = build_app(
        store,
        unary=pools.unary,
        streams=pools.streams,
        limits=config.registry_limits,
        tokens=tokens,
        allow_push=config.registry_allow_push,
        allow_delete=config.registry_allow_delete,
        through=through,
        telemetry=telemetry,
    )
    return RegistryEndpoint(
        app,
        config.registry_limits,
        ssl_context=ssl_context,
        grace_period=config.grace_period,
        telemetry=telemetry,
    )


def _bind(server: grpc.aio.Server, listen: str, credentials: grpc.ServerCredentials | None) -> str:
    if listen.startswith("unix:"):
        path = listen.removeprefix("unix:").removeprefix("//")
        _remove_stale_socket(path)
        previous = os.umask(0o177)  # the socket is born 0600
        try:
            _add_port(server, f"unix:{path}", credentials)
        finally:
            os.umask(previous)
        return f"unix://{path}"
    host, wanted = split_host_port(listen)
    port = _add_port(server, listen, credentials)
    if port <= 0:  # some grpc versions report a failed bind as port 0, not an exception
        raise _cannot_listen(listen, host, wanted, "gRPC could not bind it")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _add_port(
    server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None
) -> int:
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        if address.startswith("unix:"):
            raise errors.ListenFailed(f"cannot listen on {address}: {exc}") from None
        host, port = split_host_port(address)
        raise _cannot_listen(address, host, port, str(exc)) from None


def _cannot_listen(address: str, host: str, port: int, fallback: str) -> errors.Unavailable:
    """Why a TCP bind failed, in the system's words ("address already in use").

    gRPC only says that it failed, so a plain socket tries the same bind to
    learn the reason; ``fallback`` is used when that bind succeeds (a race)."""
    reason = fallback
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        infos, reason = [], exc.strerror or str(exc)
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                break
    return errors.ListenFailed(f"cannot listen on {address}: {reason.lower()}")


def _serve_metrics(metrics: Metrics, address: str) -> MetricsListener:
    host, port = split_host_port(address)
    try:
        listener = metrics.serve(host, port)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise errors.ListenFailed(
            f"cannot listen on {address} (--metrics-listen): {reason.lower()}",
            metadata={"option": "metrics-listen"},
        ) from None
    shown = f"[{host}]" if ":" in host else host
    log.info("metrics, /healthz and /readyz on http://%s:%d", shown, listener.port)
    return listener


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file left by a server that is gone; refuse to steal a live one."""
    if not os.path.exists(path):
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            pass  # nobody listens: a leftover
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTSOCK):
                raise errors.ListenFailed(f"cannot listen on unix://{path}: {exc}") from None
        else:
            raise errors.ListenFailed(
                f"cannot listen on unix://{path}: address already in use"
                " (another server answers there)"
            )
    Path(path).unlink(missing_ok=True)


class _SendToAGoneClient(logging.Filter):
    """One line instead of a traceback for a send that failed under grpc.aio.

    When a client cancels while a response is being sent, the failed send and
    the news of the cancellation race inside grpc.aio; when the send loses,
    grpc logs an ExecuteBatchError with a traceback although the call was
    merely cancelled (the handler's clean-up runs either way)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("ExecuteBatchError raised in core by servicer method"):
            method = message.rpartition(" ")[2]
            record.msg, record.args = "send failed in %s: the client went away", (method,)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


async def _calls_wound_down(timeout: float) -> None:
    """Wait for the tasks still running: grpc's own tasks of cancelled calls,
    whose handlers end once their jobs have. Left to asyncio.run, they would be
    cancelled, and grpc logs each cancellation with a traceback."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=timeout)


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (instead of dying at once)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stop.set)
    return stop


def tune_allocator() -> None:
    """Keep a long-running server's memory flat and its buffers cheap.

    glibc raises its mmap threshold each time a large block is freed, after
    which big buffers come from per-thread arenas that keep freed memory. A
    fixed threshold stops that drift; at 4 MiB the 256 KiB network reads and
    1 MiB chunks of a transfer are reused from the heap instead of being
    mapped and faulted in afresh each time (that cost a pull as much system
    time as its decompression). Two arenas bound what the heap can keep.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    m_mmap_threshold, m_arena_max = -3, -8
    libc.mallopt(m_mmap_threshold, 4 << 20)
    libc.mallopt(m_arena_max, 2)


def run(config: ServerConfig) -> int:
    """Blocking entry point for the CLI: 0 on a clean stop, 1 with one clear line otherwise."""
    tune_allocator()
    try:
        asyncio.run(serve(config))
    except errors.ImageStoreError as exc:
        print(f"imagestore serve: {exc.message}", file=sys.stderr)
        return 1
    return 0
