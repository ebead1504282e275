"""Manifests, indexes and configs read back from the blob files, parsed once.

A blob's bytes never change under its digest, so a parsed document stays right
for as long as its blob is stored; whether it still is, the catalog says, and
callers read the catalog first. Each document is hashed when it enters the
cache (what leaves the store is verified; a file that fails is reported as
corrupt and not kept), and the cache is bounded by the documents' sizes,
the least recently used leaving first.

The parsed objects are shared between threads: frozen dataclasses, whose
``raw`` JSON mappings nobody may change.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from imagestore import hashing
from imagestore.oci.manifests import ImageConfig, Index, Manifest, parse_config, parse_document
from imagestore.store.blobs import BlobStore

#: bytes of documents kept: thousands of typical manifests and configs (a few KiB each)
DEFAULT_CACHE_BYTES = 32 << 20

Parsed = TypeVar("Parsed")


class Documents:
    """The store's small JSON blobs by digest: raw bytes and parsed form.

    ``found_corrupt(digest)`` makes the exception raised for a file whose bytes
    do not hash to its name (it also marks the blob damaged)."""

    def __init__(
        self,
        blobs: BlobStore,
        found_corrupt: Callable[[str], Exception],
        max_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self._blobs = blobs
        self._found_corrupt = found_corrupt
        self._max_bytes = max_bytes
        self._bytes = 0
        self._entries: OrderedDict[tuple[str, str], tuple[bytes, object]] = OrderedDict()
        self._lock = threading.Lock()

    def manifest(self, digest: str, media_type: str | None) -> tuple[bytes, Manifest | Index]:
        """A manifest or index: its bytes as stored and parsed as ``media_type``."""
        return self._get(
            (digest, media_type or ""), lambda raw: parse_document(raw, media_type or None)
        )

    def config(self, digest: str) -> tuple[bytes, ImageConfig]:
        """An image config: its bytes as stored and parsed."""
        return self._get((digest, "config"), parse_config)

    def _get(self, key: tuple[str, str], parse: Callable[[bytes], Parsed]) -> tuple[bytes, Parsed]:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry  # type: ignore[return-value]
        digest = key[0]
        raw = self._blobs.read_bytes(digest)
        if hashing.sha256_digest(raw) != digest:
            raise self._found_corrupt(digest)
        parsed = parse(raw)  # a document that does not parse is not kept
        with self._lock:
            if key not in self._entries and len(raw) <= self._max_bytes:
                self._entries[key] = (raw, parsed)
                self._bytes += len(raw)
                while self._bytes > self._max_bytes:
                    _, (dropped, _) = self._entries.popitem(last=False)
                    self._bytes -= len(dropped)
        return raw, parsed
