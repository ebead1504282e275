"""Server bootstrap: the store, the gRPC server with its interceptors, health,
reflection, TLS or token auth, metrics, and a graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from imagestore import errors
from imagestore.addresses import is_loopback
from imagestore.api import reflection
from imagestore.api.interceptors import AccessLog, ErrorMapping, TokenAuth
from imagestore.api.metrics import Metrics
from imagestore.api.servicer import ImageStoreServicer
from imagestore.registry.client import RegistryClient
from imagestore.registry.options import RegistryOptions
from imagestore.store.store import DEFAULT_MAX_LAYER_SIZE, Store
from imagestore.v1 import imagestore_pb2, imagestore_pb2_grpc

log = logging.getLogger("imagestore.server")

SERVICE_NAME = imagestore_pb2.DESCRIPTOR.services_by_name["ImageStoreService"].full_name
MAX_MESSAGE = 8 << 20  # room for 1 MiB chunks and include_raw Inspects


def default_root() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "imagestore"


@dataclass(frozen=True)
class ServerConfig:
    """Everything `imagestore serve` can be told (flags or IMAGESTORE_* variables)."""

    listen: str = "127.0.0.1:50051"
    root: Path = field(default_factory=default_root)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    auth_token_file: Path | None = None
    insecure: bool = False
    metrics_listen: str | None = None
    grace_period: float = 10.0
    max_layer_size: int = DEFAULT_MAX_LAYER_SIZE
    registry: RegistryOptions = field(default_factory=RegistryOptions)


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise errors.InvalidArgument(f"listen address {address!r} needs host:port")
    return host.strip("[]"), int(port)


def check_exposure(config: ServerConfig) -> None:
    """A listener other machines can reach needs TLS, unless --insecure says so."""
    tls = config.tls_cert is not None
    for name, address in (("--listen", config.listen), ("--metrics-listen", config.metrics_listen)):
        if address is None or address.startswith("unix:"):
            continue
        host, _ = split_host_port(address)
        if not is_loopback(host) and not tls and not config.insecure:
            raise errors.FailedPrecondition(
                f"refusing to listen on {address} ({name}) without TLS: it is reachable from"
                " other machines; give --tls-cert/--tls-key, or --insecure to accept that"
            )


def _read(path: Path | None) -> bytes | None:
    return None if path is None else path.read_bytes()


def _credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    if config.tls_cert is None and config.tls_key is None:
        if config.tls_client_ca is not None:
            raise errors.InvalidArgument("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if config.tls_cert is None or config.tls_key is None:
        raise errors.InvalidArgument("--tls-cert and --tls-key go together")
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
        raise errors.InvalidArgument(f"{path} holds no token")
    return tokens


def _store_bytes(store: Store) -> float:
    with store.catalog.reading() as db:
        total = db.execute("SELECT COALESCE(SUM(size), 0) FROM blobs").fetchone()[0]
    return float(total)


async def serve(config: ServerConfig, *, ready: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT; then stop taking calls, let streams finish
    within the grace period, and close the store."""
    check_exposure(config)
    stop = _stop_on_signals()  # before announcing readiness: a quick SIGTERM is handled too
    credentials = _credentials(config)
    tokens = _tokens(config.auth_token_file)
    store = Store.open(config.root, max_layer_size=config.max_layer_size)
    registry = RegistryClient(config.registry)
    try:
        metrics = Metrics(lambda: _store_bytes(store)) if config.metrics_listen else None
        interceptors: list[grpc.aio.ServerInterceptor] = [AccessLog(metrics)]
        if tokens:
            interceptors.append(TokenAuth(tokens))
        interceptors.append(ErrorMapping())
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE),
                ("grpc.max_receive_message_length", MAX_MESSAGE),
            ],
        )
        imagestore_pb2_grpc.add_ImageStoreServiceServicer_to_server(  # type: ignore[no-untyped-call]
            ImageStoreServicer(store, registry, secure_transport=credentials is not None), server
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable(server, [SERVICE_NAME, health.SERVICE_NAME])
        address = _bind(server, config.listen, credentials)
        if metrics is not None and config.metrics_listen is not None:
            host, port = split_host_port(config.metrics_listen)
            metrics.serve(host, port)
        await server.start()
        if config.listen.startswith("unix:"):
            os.chmod(config.listen.removeprefix("unix:").removeprefix("//"), 0o600)
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("imagestore serving on %s (root %s)", address, config.root)
        print(f"listening on {address}", flush=True)
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("shutting down: letting calls finish for up to %.0f s", config.grace_period)
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.stop(config.grace_period)
    finally:
        await registry.close()
        store.close()


def _bind(server: grpc.aio.Server, listen: str, credentials: grpc.ServerCredentials | None) -> str:
    if listen.startswith("unix:"):
        path = listen.removeprefix("unix:").removeprefix("//")
        Path(path).unlink(missing_ok=True)
        previous = os.umask(0o177)  # the socket is born 0600
        try:
            _add_port(server, f"unix:{path}", credentials)
        finally:
            os.umask(previous)
        return f"unix://{path}"
    host, _ = split_host_port(listen)
    port = _add_port(server, listen, credentials)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _add_port(
    server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None
) -> int:
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise errors.Unavailable(f"cannot listen on {address}: {exc}") from None


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
