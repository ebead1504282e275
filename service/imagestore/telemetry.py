"""The server's metric objects, on a Prometheus registry of their own.

Every layer that counts something (the registry transport, the API) is handed
one :class:`Telemetry`, so nothing lands in prometheus_client's global default
registry and several servers in one process keep their counts apart. Serving
them is the API's business (``api/metrics.py``).
"""

from __future__ import annotations

from http import HTTPStatus

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

# Each counter would also export a `_created` timestamp series per label set,
# doubling what a scrape carries for nothing a dashboard uses.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: registry hosts given a label of their own; requests to any further host are
#: counted under OTHER_HOST, so callers naming registries cannot grow the series
MAX_REGISTRY_HOSTS = 64
OTHER_HOST = "other"
#: a registry request's label when no answer came (refused, reset, timed out)
NO_ANSWER = "error"

#: seconds until a registry's answer begins: a ping on a LAN to a slow token service
REGISTRY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

PULL_OUTCOMES = ("downloaded", "present")
PUSH_OUTCOMES = ("uploaded", "mounted", "present")
LOAD_OUTCOMES = ("stored", "present")
OPERATIONS = ("pull", "push", "load")
#: the registry endpoint's requests: methods labelled as themselves (any other: "other")
ENDPOINT_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
#: what an endpoint request asked for (distribution/access.py ``route_kind``)
ENDPOINT_ROUTES = (
    "base", "catalog", "tags", "manifest", "blob", "upload", "referrers", "other"
)  # fmt: skip
#: what became of a manifest request with pull-through on (distribution/pullthrough.py)
PULL_THROUGH_OUTCOMES = ("hit", "miss-pulled", "miss-joined", "refused", "stale", "failed")
_NAMED_STATUSES = frozenset(HTTPStatus)


class LayerCounts:
    """Layers of one kind of transfer, and their bytes, by what became of each."""

    def __init__(
        self,
        registry: CollectorRegistry,
        operation: str,
        outcomes: tuple[str, ...],
        bytes_help: str,
    ) -> None:
        self.layers = Counter(
            f"imagestore_{operation}_layers",
            f"Layers handled by {operation}s, by outcome",
            ["outcome"],
            registry=registry,
        )
        self.bytes = Counter(
            f"imagestore_{operation}_bytes", bytes_help, ["outcome"], registry=registry
        )
        for outcome in outcomes:  # present from the start, at 0
            self.layers.labels(outcome)
            self.bytes.labels(outcome)

    def count(self, outcome: str, size: int) -> None:
        self.layers.labels(outcome).inc()
        self.bytes.labels(outcome).inc(size)


class Telemetry:
    """Transfers by outcome, transfers running, registry requests and retries,
    and the registry endpoint's requests, bytes and pull-through outcomes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.pull = LayerCounts(
            registry,
            "pull",
            PULL_OUTCOMES,
            "Compressed bytes of the layers pulls downloaded or found present, by outcome",
        )
        self.push = LayerCounts(
            registry,
            "push",
            PUSH_OUTCOMES,
            "Bytes of the layers pushes uploaded, mounted or found at the registry, by outcome",
        )
        self.load = LayerCounts(
            registry,
            "load",
            LOAD_OUTCOMES,
            "Bytes of the archive members loads read as layers, by outcome",
        )
        self.in_progress = Gauge(
            "imagestore_transfers_in_progress",
            "Pulls, pushes and loads running",
            ["operation"],
            registry=registry,
        )
        for operation in OPERATIONS:
            self.in_progress.labels(operation)
        self.registry_requests = Counter(
            "imagestore_registry_requests",
            f"Requests sent to registries (and their token services and storage),"
            f" by host and HTTP status ({NO_ANSWER!r}: no answer; a status HTTP does not"
            " name: its class, such as 5xx)",
            ["host", "status"],
            registry=registry,
        )
        self.registry_latency = Histogram(
            "imagestore_registry_request_duration_seconds",
            "Time from sending a registry request to its answer's headers (or its failure)",
            ["host"],
            buckets=REGISTRY_BUCKETS,
            registry=registry,
        )
        self.registry_retries = Counter(
            "imagestore_registry_retries",
            "Registry requests and downloads tried again, by the host the failed try went to",
            ["host"],
            registry=registry,
        )
        self.endpoint_requests = Counter(
            "imagestore_endpoint_requests",
            "Requests the registry endpoint (OCI Distribution) answered, by method, route"
            " kind and status class (2xx, 4xx, ...)",
            ["method", "route", "status"],
            registry=registry,
        )
        self.endpoint_bytes = Counter(
            "imagestore_endpoint_bytes_served",
            "Response body bytes the registry endpoint sent, by route kind",
            ["route"],
            registry=registry,
        )
        self.endpoint_in_flight = Gauge(
            "imagestore_endpoint_requests_in_flight",
            "Requests the registry endpoint is answering now (a pull-through's included)",
            registry=registry,
        )
        for route in ENDPOINT_ROUTES:  # present from the start, at 0
            self.endpoint_bytes.labels(route)
        self.pull_through = Counter(
            "imagestore_pull_through",
            "Manifest requests on the registry endpoint with pull-through on, by outcome:"
            " hit (served from the store), miss-pulled (pulled from upstream first),"
            " miss-joined (waited for a pull another request started),"
            " refused (a registry not allowlisted), stale (upstream unreachable: served"
            " with a Warning), failed (the pull failed)",
            ["outcome"],
            registry=registry,
        )
        for outcome in PULL_THROUGH_OUTCOMES:
            self.pull_through.labels(outcome)
        self._hosts: set[str] = set()

    def registry_host(self, host: str) -> str:
        """The label for ``host``: itself while few hosts are known, else OTHER_HOST."""
        if host in self._hosts:
            return host
        if len(self._hosts) >= MAX_REGISTRY_HOSTS:
            return OTHER_HOST
        self._hosts.add(host)
        return host

    def registry_request(self, host: str, status: str, seconds: float) -> None:
        """One request to ``host`` (a label from :meth:`registry_host`) ended."""
        self.registry_requests.labels(host, status_label(status)).inc()
        self.registry_latency.labels(host).observe(seconds)


def status_label(status: str) -> str:
    """An HTTP status as a label: itself when HTTP names it, else its class
    (``599`` → ``5xx``), since a registry may answer with any number from 100
    to 999 and each would be a series of its own."""
    if not status.isdigit() or len(status) != 3:
        return status  # NO_ANSWER
    return status if int(status) in _NAMED_STATUSES else status[0] + "xx"
