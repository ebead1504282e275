"""info: what the server is and how it is set up, like ``docker info``.

Plain ``Key: value`` lines (a section's lines indented by one space, as docker
prints them); ``--format json`` prints one JSON object with the exact values
(bytes as numbers, durations in seconds), ``--format TEMPLATE`` renders a Go
template over that object. Every value comes from the server and is escaped
like any other untrusted text.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from imagestore.cli import humanize
from imagestore.cli.durations import format_duration
from imagestore.cli.output import say, write_objects
from imagestore.cli.template import Struct
from imagestore.client import ImageStoreClient, ServerInfo

_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def bytes_size(value: float) -> str:
    """go-units ``BytesSize``, as ``docker info`` prints sizes: "3.5MiB", "64GiB"."""
    unit = 0
    while value >= 1024 and unit < len(_BINARY) - 1:
        value /= 1024
        unit += 1
    return f"{value:.4g}{_BINARY[unit]}"


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the output: its label, its JSON key, the exact value, the text."""

    label: str
    key: str
    value: Any
    shown: str


@dataclass(frozen=True, slots=True)
class Section:
    """Lines under a heading ("" for the top level), a nested object in JSON."""

    label: str
    key: str
    rows: Sequence[Row]


def _text(label: str, key: str, value: str) -> Row:
    return Row(label, key, value, value)


def _flag(label: str, key: str, value: bool) -> Row:
    return Row(label, key, value, str(value).lower())


def _count(label: str, key: str, value: int) -> Row:
    return Row(label, key, value, str(value))


def _bytes(label: str, key: str, value: int, *, zero: str = "0B") -> Row:
    return Row(label, key, value, bytes_size(value) if value else zero)


def _seconds(label: str, key: str, value: timedelta, *, zero: str = "0s") -> Row:
    """A duration as its flag takes it (``2h``, ``1m30s``, ``0.01s``)."""
    seconds = value.total_seconds()
    return Row(label, key, seconds, format_duration(seconds) if seconds else zero)


def sections(info: ServerInfo) -> list[Section]:
    """What ``imagestore info`` shows, in order."""
    limits, load, registry = info.limits, info.load_limits, info.registry_limits
    min_speed = bytes_size(registry.min_speed) + "/s" if registry.min_speed else "none"
    return [
        Section(
            "",
            "",
            [
                _text("Server Version", "ServerVersion", info.server_version),
                _text("API Version", "APIVersion", info.api_version),
                _text("Gzip Backend", "GzipBackend", info.gzip_backend),
                _text("Catalog", "Catalog", info.catalog),
                _text("Root Dir", "RootDir", info.root),
                _flag("TLS", "TLS", info.tls),
                _flag("Mutual TLS", "MutualTLS", info.mutual_tls),
                _text("Auth", "Auth", info.auth_mode or "unknown"),
                _count("Images", "Images", info.image_count),
                _count("Blobs", "Blobs", info.blob_count),
                Row(
                    "Stored Size",
                    "StoredSize",
                    info.stored_bytes,
                    humanize.size(info.stored_bytes),
                ),
            ],
        ),
        Section(
            "Limits",
            "Limits",
            [
                _count("Max Concurrent RPCs", "MaxConcurrentRPCs", limits.max_concurrent_rpcs),
                _count(
                    "Max Concurrent Streams", "MaxConcurrentStreams", limits.max_concurrent_streams
                ),
                _count(
                    "Max Concurrent Watches", "MaxConcurrentWatches", limits.max_concurrent_watches
                ),
                _bytes("Max Response Size", "MaxResponseBytes", limits.max_response_bytes),
                _bytes("Max Layer Size", "MaxLayerSize", limits.max_layer_size),
                _bytes("Max Document Size", "MaxDocumentBytes", limits.max_document_bytes),
            ],
        ),
        Section(
            "Load Limits",
            "LoadLimits",
            [
                _bytes("Max Header Size", "MaxHeaderBytes", load.max_header_bytes),
                _bytes("Max Name Size", "MaxNameBytes", load.max_name_bytes),
                _count("Max Members", "MaxMembers", load.max_members),
                _bytes("Max Kept Size", "MaxKeptBytes", load.max_kept_bytes),
                _bytes("Max Expanded Size", "MaxExpandedBytes", load.max_expanded_bytes),
            ],
        ),
        Section(
            "Registry",
            "Registry",
            [
                _count(
                    "Max Concurrent Downloads",
                    "MaxConcurrentDownloads",
                    registry.max_concurrent_downloads,
                ),
                _count(
                    "Max Concurrent Small Downloads",
                    "MaxConcurrentSmallDownloads",
                    registry.max_concurrent_small_downloads,
                ),
                _count(
                    "Max Concurrent Uploads",
                    "MaxConcurrentUploads",
                    registry.max_concurrent_uploads,
                ),
                _count("Attempts", "Attempts", registry.attempts),
                _seconds("Backoff", "BackoffSeconds", registry.backoff),
                _seconds("Connect Timeout", "ConnectTimeoutSeconds", registry.connect_timeout),
                _seconds("Idle Timeout", "IdleTimeoutSeconds", registry.idle_timeout),
                Row("Min Speed", "MinSpeedBytesPerSecond", registry.min_speed, min_speed),
                _seconds("Speed Window", "SpeedWindowSeconds", registry.speed_window),
                _seconds("Blob Timeout", "BlobTimeoutSeconds", registry.blob_timeout, zero="none"),
                _count("Max Index Children", "MaxIndexChildren", registry.max_index_children),
                _bytes(
                    "Max Manifest Size Per Pull",
                    "MaxManifestBytesPerPull",
                    registry.max_manifest_bytes_per_pull,
                ),
                _count("Max Layers Per Pull", "MaxLayersPerPull", registry.max_layers_per_pull),
            ],
        ),
    ]


def info_object(info: ServerInfo) -> Struct:
    """The JSON object of ``--format``: the top-level rows, then one object per section."""
    top = Struct()
    for section in sections(info):
        fields = Struct({row.key: row.value for row in section.rows})
        if section.key:
            top[section.key] = fields
        else:
            top.update(fields)
    return top


def show_info(client: ImageStoreClient, args: argparse.Namespace) -> int:
    info = client.server_info()
    if args.format:
        write_objects(sys.stdout, [info_object(info)], args.format)
        return 0
    for section in sections(info):
        indent = ""
        if section.label:
            say(f"{section.label}:")
            indent = " "
        for row in section.rows:
            say(f"{indent}{row.label}: {row.shown}")
    return 0
