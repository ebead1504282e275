"""Prometheus metrics and probes, served on ``--metrics-listen`` when it is given.

The listener is a small HTTP server on a thread of its own, so a slow scrape
never waits for the event loop nor holds it up: ``/metrics`` (the Prometheus
text, or OpenMetrics when asked for), ``/healthz`` (the process answers),
``/readyz`` (200 while the gRPC server serves; 503 before and once shutdown
begins), 404 elsewhere.

The metric objects are the server's :class:`~imagestore.telemetry.Telemetry`,
to which this adds the RPC metrics, the store's sizes (read from the catalog
at scrape time, again only after it changed) and the process, Python and GC
collectors. The ``count_*`` functions turn the progress of pulls, pushes and
loads into their layer counts.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import Counter, GCCollector, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from imagestore.archive.load import LoadProgress
from imagestore.registry.progress import Phase, ProgressEvent
from imagestore.store.store import Store, Totals
from imagestore.telemetry import Telemetry

log = logging.getLogger("imagestore.metrics")

#: a scraper that stops sending or reading for this long is dropped
CLIENT_TIMEOUT = 30.0
#: how quickly the listener notices it is told to stop
STOP_POLL_INTERVAL = 0.1
PLAIN_TEXT = "text/plain; charset=utf-8"

_PULL_OUTCOMES = {Phase.DOWNLOADED: "downloaded", Phase.ALREADY_EXISTS: "present"}
_PUSH_OUTCOMES = {
    Phase.PUSHED: "uploaded",
    Phase.MOUNTED: "mounted",
    Phase.EXISTS_REMOTELY: "present",
}
_LOAD_OUTCOMES = {"stored": "stored", "reused": "present"}


def count_pull(telemetry: Telemetry, event: ProgressEvent) -> None:
    """A pull's layer downloaded ("Download complete") or found present."""
    outcome = _PULL_OUTCOMES.get(event.phase)
    if outcome is not None and event.blob is not None:
        telemetry.pull.count(outcome, event.blob.size)


def count_push(telemetry: Telemetry, event: ProgressEvent) -> None:
    """A push's layer uploaded, mounted or already at the registry (configs are
    not reported as layers, so they are not counted)."""
    outcome = _PUSH_OUTCOMES.get(event.phase)
    if outcome is not None and event.blob is not None:
        telemetry.push.count(outcome, event.blob.size)


def count_load(telemetry: Telemetry, event: LoadProgress) -> None:
    """A load's layer member stored, or reused from the store."""
    outcome = _LOAD_OUTCOMES.get(event.action)
    if outcome is not None:
        telemetry.load.count(outcome, event.size)


class StoreCollector(Collector):
    """Images, blobs and their bytes, from the catalog's counts; read again only
    when the catalog's generation moved (a store without one is read each time)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._cached: tuple[int, Totals] | None = None

    def _totals(self) -> Totals:
        with self._lock:  # concurrent scrapes read the catalog once
            generation = self._store.generation  # before reading: a change during it shows
            cached = self._cached
            if generation is not None and cached is not None and cached[0] == generation:
                return cached[1]
            totals = self._store.totals()
            self._cached = None if generation is None else (generation, totals)
            return totals

    def collect(self) -> Iterator[Metric]:
        totals = self._totals()
        yield GaugeMetricFamily("imagestore_store_bytes", "Bytes of blobs", totals.stored_bytes)
        yield GaugeMetricFamily("imagestore_store_images", "Images in the store", totals.images)
        yield GaugeMetricFamily("imagestore_store_blobs", "Blobs in the store", totals.blobs)


class Metrics:
    """Everything ``/metrics`` shows, and whether ``/readyz`` says ready."""

    def __init__(self, telemetry: Telemetry, store: Store) -> None:
        self.registry = registry = telemetry.registry
        self.rpcs = Counter(
            "imagestore_rpcs", "RPCs handled", ["method", "code"], registry=registry
        )
        self.latency = Histogram(
            "imagestore_rpc_duration_seconds",
            "RPC duration",
            ["method", "code"],
            registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600),
        )
        self.bytes = Counter(
            "imagestore_rpc_message_bytes",
            "Protobuf message bytes",
            ["method", "direction"],
            registry=registry,
        )
        registry.register(StoreCollector(store))
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        #: set while the gRPC server serves (the store is open then)
        self.ready = threading.Event()

    def observe(self, method: str, code: str, seconds: float, received: int, sent: int) -> None:
        self.rpcs.labels(method, code).inc()
        self.latency.labels(method, code).observe(seconds)
        self.bytes.labels(method, "in").inc(received)
        self.bytes.labels(method, "out").inc(sent)

    def serve(self, host: str, port: int) -> MetricsListener:
        """Listen on ``host:port`` (port 0: any free one); OSError when it cannot."""
        listener = MetricsListener(self, host, port)
        thread = threading.Thread(
            target=listener.serve_forever,
            args=(STOP_POLL_INTERVAL,),
            name="imagestore-metrics",
            daemon=True,
        )
        thread.start()
        return listener


class MetricsListener(ThreadingHTTPServer):
    """The HTTP server of :class:`Metrics`; :meth:`close` stops it."""

    daemon_threads = True

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self.metrics = metrics
        #: the scrapers' connections being served, for close() to cut
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer's own would look up the host's full name (DNS) to no use here
        socketserver.TCPServer.server_bind(self)

    @property
    def port(self) -> int:
        """The port listened on (the one picked when 0 was asked for)."""
        return int(self.server_address[1])

    def close(self) -> None:
        self.shutdown()
        with self._connections_lock:
            # server_close() joins the handlers: one waiting on a scraper that
            # stalls would hold the server's exit for CLIENT_TIMEOUT
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        self.server_close()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:  # before it is closed: close() never sees a closed one
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver would print the traceback to stderr, between the log's lines
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            log.debug("metrics request from %s: %s", client_address[0], error)
        else:
            log.exception("metrics request from %s failed", client_address[0])


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so no kept-alive connection outlives close()
    server: MetricsListener
    timeout = CLIENT_TIMEOUT

    def do_GET(self) -> None:
        metrics = self.server.metrics
        try:
            path = urlsplit(self.path).path
        except ValueError:  # an absolute URL with an unparsable host: "http://[/"
            self._answer(400, b"bad request target\n")
            return
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            try:
                body = encoder(metrics.registry)
            except Exception:  # a collector failed (the store closing): say so, keep serving
                log.exception("metrics scrape failed")
                self._answer(500, b"scrape failed\n")
                return
            self._answer(200, body, content_type)
        elif path == "/healthz":
            self._answer(200, b"ok\n")
        elif path == "/readyz":
            if metrics.ready.is_set():
                self._answer(200, b"ready\n")
            else:
                self._answer(503, b"not ready\n")
        else:
            self._answer(404, b"not found\n")

    def _answer(self, status: int, body: bytes, content_type: str = PLAIN_TEXT) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("metrics request: " + format, *args)
