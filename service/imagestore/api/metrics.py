"""Prometheus metrics, served on ``--metrics-listen`` when it is given."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Metrics:
    """RPC counts and latencies by method and code, bytes in/out, store size."""

    def __init__(self, store_bytes: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.rpcs = Counter(
            "imagestore_rpcs", "RPCs handled", ["method", "code"], registry=self.registry
        )
        self.latency = Histogram(
            "imagestore_rpc_duration_seconds",
            "RPC duration",
            ["method", "code"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600),
        )
        self.bytes = Counter(
            "imagestore_rpc_message_bytes",
            "Protobuf message bytes",
            ["method", "direction"],
            registry=self.registry,
        )
        size = Gauge("imagestore_store_bytes", "Bytes of blobs on disk", registry=self.registry)
        size.set_function(store_bytes)

    def observe(self, method: str, code: str, seconds: float, received: int, sent: int) -> None:
        self.rpcs.labels(method, code).inc()
        self.latency.labels(method, code).observe(seconds)
        self.bytes.labels(method, "in").inc(received)
        self.bytes.labels(method, "out").inc(sent)

    def serve(self, host: str, port: int) -> None:
        """Expose /metrics over HTTP (a daemon thread)."""
        start_http_server(port, addr=host, registry=self.registry)
