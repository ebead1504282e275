"""Load: read a ``docker save`` archive (legacy or Docker 25+ OCI style) or an
OCI image-layout tar, as a stream, into the store.

Each tar member is handled as it arrives (``manifest.json`` usually comes last):
a gzip layer is stored as it is (digest and diff_id in one pass), a plain tar
layer is gzip-compressed by the native encoder on the way in (or, when the
store already holds a gzip blob of that diff_id, reused), and small JSON
documents are kept in memory until the archive's manifests say what they are.
A member named ``blobs/sha256/<hex>`` must hash to that name. Nothing is held
whole in memory or written twice. Paths that escape the archive, device
files, links that point out of the archive and oversized documents are refused.
Headers are parsed by the bounded reader of ``archive/tar.py``, never by the
interpreter's ``tarfile``; what a Load may keep or expand to is in
:class:`LoadLimits`.
"""

from __future__ import annotations

import io
import json
import posixpath
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from imagestore import errors, jsonparse
from imagestore.archive.decompress import Peekable, decompressed
from imagestore.archive.stream import ChunkReader
from imagestore.archive.tar import MemberKind, TarLimits, TarMember, TarReader
from imagestore.oci import mediatypes as mt
from imagestore.oci.digests import is_digest
from imagestore.oci.manifests import MAX_DOCUMENT_SIZE, Descriptor, Index, Manifest, parse_document
from imagestore.oci.references import Reference, parse_reference, parse_tag_target
from imagestore.store.blobs import BlobInfo, Encoding, Ingest
from imagestore.store.leases import Lease
from imagestore.store.models import EventKind
from imagestore.store.store import Store

READ_SIZE = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
OCI_REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
LAYER_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst")


@dataclass(frozen=True, slots=True)
class LoadLimits:
    """What one Load may cost the server (docs/design.md §10; `imagestore serve` flags)."""

    tar: TarLimits = field(default_factory=TarLimits)
    #: JSON documents, paths and links held in memory until the archive's manifests are read
    max_kept_bytes: int = 64 << 20
    #: what a compressed (gzip, bzip2, xz) archive may expand to
    max_expanded_bytes: int = 64 << 30


@dataclass(frozen=True, slots=True)
class LoadProgress:
    """A member handled: ``action`` is "stored", "reused" (already in the store),
    "kept" (read later) or "ignored"; ``bytes_read`` counts the archive so far,
    ``size`` the member's own bytes."""

    path: str
    action: str
    bytes_read: int
    size: int = 0


@dataclass(frozen=True, slots=True)
class LoadedImage:
    image_id: str
    names: tuple[str, ...]  # canonical names now pointing at it
    moved: tuple[str, ...]  # of those, names that used to point elsewhere (canonical)
    moved_from: tuple[str, ...] = ()  # beside each moved name, its image before ("": none)


@dataclass
class _Members:
    documents: dict[str, bytes] = field(default_factory=dict)  # small JSON, by path
    blobs: dict[str, BlobInfo] = field(default_factory=dict)  # stored layers, by path
    links: dict[str, str] = field(default_factory=dict)  # link path -> target path

    def resolve(self, path: str) -> str:
        """Follow links (a few hops at most: a loop is refused)."""
        path = posixpath.normpath(path)
        for _ in range(8):
            if path not in self.links:
                return path
            path = self.links[path]
        raise _invalid(f"links loop at {path!r}", path)


def _invalid(message: str, member: str = "") -> errors.MalformedContent:
    return errors.MalformedContent(f"invalid archive: {message}", metadata={"member": member[:200]})


def _inside(name: str) -> str:
    """A path normalised inside the archive; refuses one that could escape it."""
    path = posixpath.normpath(name)
    if name.startswith("/") or path == ".." or path.startswith("../") or "\x00" in name:
        raise _invalid(f"path {name!r} escapes the archive", name)
    return path


def _link_target(member: TarMember) -> str:
    """Where a link inside the archive points (skopeo links ``<id>/layer.tar``
    to ``<digest>.tar``); a link out of the archive is refused."""
    if member.linkname.startswith("/"):
        raise _invalid(f"link {member.path!r} points outside the archive", member.path)
    base = posixpath.dirname(member.path) if member.kind == MemberKind.SYMLINK else ""
    try:
        return _inside(posixpath.join(base, member.linkname))
    except errors.MalformedContent:
        raise _invalid(f"link {member.path!r} points outside the archive", member.path) from None


def _digest_from_path(path: str) -> str | None:
    """``blobs/sha256/<hex>`` → ``sha256:<hex>``: a promise the content must keep."""
    parts = path.split("/")
    if len(parts) == 3 and parts[:2] == ["blobs", "sha256"]:
        digest = "sha256:" + parts[2]
        if not is_digest(digest):
            raise _invalid(f"blob path {path!r} is not a sha256 digest", path)
        return digest
    return None


def _blob_path(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


class Loader:
    """One Load: members in, images out. Blocking: run it in a worker thread."""

    def __init__(
        self,
        store: Store,
        lease: Lease,
        progress: Callable[[LoadProgress], None] | None = None,
        limits: LoadLimits | None = None,
    ) -> None:
        self.store = store
        self.lease = lease
        self.progress = progress or (lambda event: None)
        self.limits = limits or LoadLimits()
        self.members = _Members()
        self.bytes_read = 0
        self.kept_bytes = 0

    # ---- members -------------------------------------------------------------

    def read_archive(self, stream: Peekable) -> None:
        """Take every member as it arrives, through the bounded reader."""
        limits = self.limits
        expanded = decompressed(stream, limits.max_expanded_bytes)
        try:
            self._read_members(TarReader(expanded, limits.tar))
        finally:
            if expanded is not stream:
                expanded.close()  # the decompressor's buffers go now, not at the next GC

    def _read_members(self, reader: TarReader) -> None:
        for member in reader:
            if member.kind in (MemberKind.SYMLINK, MemberKind.HARDLINK):
                path = _inside(member.path)
                self._keep(len(path) + len(member.linkname), path)
                self.members.links[path] = _link_target(member)
            elif member.kind == MemberKind.FILE:
                self._take(_inside(member.path), member.size, reader)
            elif member.kind == MemberKind.DEVICE:
                raise _invalid(f"{member.path!r} is not a regular file", member.path)

    def _keep(self, size: int, path: str) -> None:
        """Count bytes held in memory until the end of the Load against its budget."""
        self.kept_bytes += size
        if self.kept_bytes > self.limits.max_kept_bytes:
            raise errors.SizeLimitExceeded(
                f"the archive's JSON documents and names exceed {self.limits.max_kept_bytes} bytes",
                metadata={"member": path[:200], "limit": str(self.limits.max_kept_bytes)},
            )

    def _take(self, path: str, size: int, source: TarReader) -> None:
        head = source.read(min(READ_SIZE, size))
        expected = _digest_from_path(path)
        if head.lstrip()[:1] in (b"{", b"[") and size <= MAX_DOCUMENT_SIZE:
            self._keep(size + len(path), path)
            self.members.documents[path] = head + _read_rest(source)
            return self._count(path, "kept", size)
        if expected is None and not path.endswith(LAYER_SUFFIXES):
            if path in ("manifest.json", "index.json"):
                raise errors.SizeLimitExceeded(
                    f"{path} is {size} bytes; the limit is {MAX_DOCUMENT_SIZE}",
                    metadata={"member": path},
                )
            # VERSION files, legacy per-layer json, …: the reader skips what is unread
            return self._count(path, "ignored", size)
        self._keep(len(path), path)
        if head.startswith(ZSTD_MAGIC):  # stored and verified by its digest only
            info = self._ingest(path, head, source, Encoding.RAW, mt.OCI_LAYER_ZSTD, expected)
            info = replace(info, compression="zstd")
        elif head.startswith(GZIP_MAGIC):
            info = self._ingest(path, head, source, Encoding.LAYER, mt.OCI_LAYER_GZIP, expected)
        elif expected is not None and (reused := self._reuse(expected)) is not None:
            self.members.blobs[path] = reused
            return self._count(path, "reused", size)
        else:
            info = self._ingest(path, head, source, Encoding.COMPRESS, mt.OCI_LAYER_GZIP, None)
            if expected is not None and info.diff_id != expected:
                raise errors.DigestMismatch(
                    f"archive member {path} hashes to {info.diff_id}",
                    metadata={"expected": expected, "actual": str(info.diff_id)},
                )
        self.members.blobs[path] = info
        return self._count(path, "stored", size)

    def _ingest(
        self,
        path: str,
        head: bytes,
        source: TarReader,
        encoding: Encoding,
        media_type: str,
        expected: str | None,
    ) -> BlobInfo:
        with self.store.ingest(self.lease, expected, encoding=encoding) as ingest:
            known = self._known(expected) if ingest.exists and expected is not None else None
            if known is not None:
                return known
            _copy(head, source, ingest)
            return self.store.commit(ingest, self.lease, media_type)

    def _known(self, digest: str) -> BlobInfo | None:
        row = self.store.stored_record(digest)
        if row is None:
            return None
        compression = "zstd" if row.media_type in mt.ZSTD_LAYERS else "gzip"
        return BlobInfo(row.digest, row.size, row.diff_id, row.uncompressed_size, compression)

    def _reuse(self, diff_id: str) -> BlobInfo | None:
        """A gzip blob already stored for this uncompressed content."""
        row = self.store.compressed_layer(diff_id)
        if row is None or row.media_type in mt.ZSTD_LAYERS:
            return None
        self.lease.add(row.digest)  # then check it is (still) there
        if self.store.blob_size(row.digest) is None:
            return None
        return BlobInfo(row.digest, row.size, row.diff_id, row.uncompressed_size, "gzip")

    def _count(self, path: str, action: str, size: int) -> None:
        self.bytes_read += size
        self.progress(LoadProgress(path, action, self.bytes_read, size))

    # ---- images ----------------------------------------------------------------

    def commit_images(self) -> list[LoadedImage]:
        documents = self.members.documents
        if "index.json" in documents and (
            "manifest.json" not in documents or _names_an_index(documents["index.json"])
        ):
            # an index can only be restored from the layout: manifest.json names images
            return self._oci_layout(documents["index.json"])
        if "manifest.json" in documents:
            return self._docker_archive(documents["manifest.json"])
        raise _invalid("neither manifest.json (docker save) nor index.json (OCI layout) found")

    def _document(self, path: str) -> bytes:
        path = self.members.resolve(path)
        if path not in self.members.documents:
            raise _invalid(f"{path!r} is referenced but not in the archive", path)
        return self.members.documents[path]

    def _layer(self, path: str) -> BlobInfo:
        path = self.members.resolve(path)
        if path not in self.members.blobs:
            raise _invalid(f"layer {path!r} is referenced but not in the archive", path)
        return self.members.blobs[path]

    def _docker_archive(self, raw: bytes) -> list[LoadedImage]:
        try:
            entries = jsonparse.loads(raw)
        except ValueError:
            raise _invalid("manifest.json is not JSON", "manifest.json") from None
        if not isinstance(entries, list) or not entries:
            raise _invalid("manifest.json lists no images", "manifest.json")
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("Layers"), list):
                raise _invalid("a manifest.json entry has no Config and Layers", "manifest.json")
        # every name is checked before anything is committed: a forged one loads nothing
        all_names = [_tags(entry.get("RepoTags") or []) for entry in entries]
        loaded = []
        for entry, names in zip(entries, all_names, strict=True):
            config_path = posixpath.normpath(str(entry.get("Config", "")))
            config = self.store.put_blob(
                self.lease,
                self._document(config_path),
                mt.DOCKER_CONFIG,
                _digest_from_path(config_path),
            )
            layers = [self._layer(str(path)) for path in entry["Layers"]]
            oci = any(layer.compression == "zstd" for layer in layers)  # zstd: OCI only
            layer_type = mt.OCI_LAYER_GZIP if oci else mt.DOCKER_LAYER_GZIP
            manifest = {
                "schemaVersion": 2,
                "mediaType": mt.OCI_MANIFEST if oci else mt.DOCKER_MANIFEST,
                "config": {
                    "mediaType": mt.OCI_CONFIG if oci else mt.DOCKER_CONFIG,
                    "digest": config.digest,
                    "size": config.size,
                },
                "layers": [
                    {
                        "mediaType": mt.OCI_LAYER_ZSTD
                        if layer.compression == "zstd"
                        else layer_type,
                        "digest": layer.digest,
                        "size": layer.size,
                    }
                    for layer in layers
                ],
            }
            body = json.dumps(manifest, indent=3).encode()
            loaded += self._commit(body, str(manifest["mediaType"]), names)
        return loaded

    def _oci_layout(self, raw: bytes) -> list[LoadedImage]:
        index = parse_document(raw, mt.OCI_INDEX)
        if not isinstance(index, Index):
            raise _invalid("index.json is not an image index", "index.json")
        all_names = [_layout_names(descriptor) for descriptor in index.manifests]
        loaded = []
        for descriptor, names in zip(index.manifests, all_names, strict=True):
            data = self._document(_blob_path(descriptor.digest))
            document = parse_document(data, descriptor.media_type)
            if isinstance(document, Index):
                loaded += self._commit_index(descriptor, data, document, names)
            else:
                loaded += self._commit(self._as_stored(data, document), document.media_type, names)
        return loaded

    def _commit_index(
        self, descriptor: Descriptor, data: bytes, index: Index, names: list[Reference]
    ) -> list[LoadedImage]:
        """A multi-platform index keeps its digest: its children must be stored as they are."""
        for child in index.manifests:
            path = _blob_path(child.digest)
            if path not in self.members.documents:
                continue  # a platform the archive does not carry
            body = self.members.documents[path]
            manifest = parse_document(body, child.media_type)
            if not isinstance(manifest, Manifest):
                continue
            if self._as_stored(body, manifest) != body:
                raise errors.UnsupportedContent(
                    "an index whose manifests use uncompressed layers cannot be loaded without"
                    " changing its digest",
                    metadata={"digest": descriptor.digest},
                )
            self._put_config(manifest)
            self.store.put_blob(self.lease, body, child.media_type, child.digest)
        return self._commit_target(data, descriptor.media_type, names, descriptor.digest)

    def _as_stored(self, data: bytes, manifest: Manifest) -> bytes:
        """The manifest as stored: layers that were plain tars now point at
        their gzip blobs (the config, hence the image ID, does not change)."""
        document = json.loads(data)
        changed = False
        for position, layer in enumerate(manifest.layers):
            info = self._layer(_blob_path(layer.digest))
            if info.digest != layer.digest:
                changed = True
                gzip_type = (
                    mt.DOCKER_LAYER_GZIP
                    if manifest.media_type == mt.DOCKER_MANIFEST
                    else mt.OCI_LAYER_GZIP
                )
                document["layers"][position].update(
                    {"mediaType": gzip_type, "digest": info.digest, "size": info.size}
                )
        return json.dumps(document, indent=3).encode() if changed else data

    def _put_config(self, manifest: Manifest) -> None:
        config = manifest.config
        self.store.put_blob(
            self.lease, self._document(_blob_path(config.digest)), config.media_type, config.digest
        )

    def _commit(self, body: bytes, media_type: str, names: list[Reference]) -> list[LoadedImage]:
        manifest = parse_document(body, media_type)
        if (
            isinstance(manifest, Manifest)
            and _blob_path(manifest.config.digest) in self.members.documents
        ):
            self._put_config(manifest)
        return self._commit_target(body, media_type, names, None)

    def _commit_target(
        self, body: bytes, media_type: str, names: list[Reference], digest: str | None
    ) -> list[LoadedImage]:
        info = self.store.put_blob(self.lease, body, media_type, digest)
        result = self.store.commit_target(
            self.lease, Descriptor(media_type, info.digest, info.size), names, event=EventKind.LOAD
        )
        canonical = {n.familiar(): str(n) for n in names}
        moved = tuple(canonical[name] for name in result.moved_names)
        # an index's names are reported once, with its first image, as docker prints them
        return [
            LoadedImage(image_id, tuple(canonical.values()), moved, result.moved_from)
            if position == 0
            else LoadedImage(image_id, (), ())
            for position, image_id in enumerate(result.image_ids)
        ]


def _copy(head: bytes, source: TarReader, ingest: Ingest) -> None:
    chunk = head
    while chunk:
        ingest.write(chunk)
        chunk = source.read(READ_SIZE)


def _read_rest(source: TarReader) -> bytes:
    pieces = []
    while chunk := source.read(READ_SIZE):
        pieces.append(chunk)
    return b"".join(pieces)


def _names_an_index(raw: bytes) -> bool:
    """Whether an OCI layout's index.json lists a (multi-platform) index."""
    try:
        entries = jsonparse.loads(raw).get("manifests", [])
    except (ValueError, AttributeError):
        return False
    return any(isinstance(e, dict) and e.get("mediaType") in mt.INDEXES for e in entries)


def _tags(texts: object) -> list[Reference]:
    """``RepoTags`` of a docker archive: each must be what Tag would accept."""
    if not isinstance(texts, list):
        raise _invalid("RepoTags is not a list", "manifest.json")
    return [_archive_name(str(text), None) for text in texts]


def _archive_name(text: str, digest: str | None) -> Reference:
    """A name from an archive, under Tag's rules; a digest name is accepted only
    for the very content it names (``digest``), so it cannot re-point a pinned name."""
    reference = parse_reference(text)
    if reference.digest is None or digest is None:
        return parse_tag_target(text)
    if reference.familiar_name == "sha256" or reference.digest != digest:
        raise errors.ReferenceInvalid(
            f"the archive names {digest} {text!r}, which names other content",
            metadata={"reference": text[:300], "digest": digest},
        )
    return reference


def _layout_names(descriptor: Descriptor) -> list[Reference]:
    """The name an OCI layout entry carries: containerd's full name, else a
    ``ref.name`` that is a whole reference (a bare tag names no repository)."""
    annotations = descriptor.annotations
    if CONTAINERD_NAME in annotations:
        return [_archive_name(annotations[CONTAINERD_NAME], descriptor.digest)]
    ref = annotations.get(OCI_REF_NAME, "")
    if "/" in ref or ":" in ref:
        return [_archive_name(ref, descriptor.digest)]
    return []


def load(
    store: Store,
    chunks: Iterable[bytes],
    *,
    declared_size: int | None = None,
    progress: Callable[[LoadProgress], None] | None = None,
    limits: LoadLimits | None = None,
) -> list[LoadedImage]:
    """Load one archive from a stream of chunks; returns the images and their names.

    A load bigger than the free disk is refused up front when its size is
    declared. A failed load leaves nothing new behind (its lease ends).
    """
    if declared_size is not None:
        free = shutil.disk_usage(store.root).free
        if declared_size > free:
            raise errors.DiskFull(
                f"the archive is {declared_size} bytes but only {free} are free",
                metadata={"declared": str(declared_size), "free": str(free)},
            )
    with store.lease() as lease:
        loader = Loader(store, lease, progress, limits)
        loader.read_archive(io.BufferedReader(ChunkReader(iter(chunks)), READ_SIZE))
        return loader.commit_images()
