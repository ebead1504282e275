"""Pull: a reference at a registry → verified blobs and names in the store.

The manifest (or index, then the chosen platforms' manifests) and configs are
fetched whole (≤ 4 MiB) and verified; each missing layer streams from HTTP
through the native decoder into an ingest (one of at most SMALL_LAYER bytes is
read whole first, then written in one step), which checks the compressed
digest, the size and the config's diff_id before anything is committed. Everything
the pull touches is leased; the names move in one catalog transaction at the
end. A failed or cancelled pull leaves nothing new behind.

What one pull may cost is bounded (RegistryOptions): entries per index (checked
before any child is fetched), bytes of manifests and configs, distinct layers.
Children are fetched one at a time and each digest once, so a pull holds one
child's bytes at a time; layers download through a few workers, each taking a
slot of the registry's own (none is held while waiting to retry).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiohttp

from imagestore import errors
from imagestore.dockerconfig import Credentials
from imagestore.oci import mediatypes as mt
from imagestore.oci.manifests import (
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    parse_config,
    parse_document,
)
from imagestore.oci.platforms import (
    Platform,
    best_match,
    host_platform,
    parse_platform,
    platform_mismatch,
)
from imagestore.oci.references import Reference, parse_reference
from imagestore.registry.blocking import entered_in_thread, in_thread, run_all
from imagestore.registry.client import RegistryClient
from imagestore.registry.content import (
    RemoteDocument,
    get_manifest,
    get_small_blob,
    list_tags,
    open_blob,
)
from imagestore.registry.downloads import Download, OnDownload
from imagestore.registry.lru import LRU
from imagestore.registry.options import RegistryOptions
from imagestore.registry.progress import (
    ByteProgress,
    Emit,
    Phase,
    ProgressEvent,
    layer_event,
    layer_id,
    retry_reporter,
)
from imagestore.registry.repository import Repository
from imagestore.registry.retry import connection_failure
from imagestore.registry.socketbody import SocketBody
from imagestore.store.blobs import Encoding, Ingest
from imagestore.store.leases import Lease
from imagestore.store.models import EventKind
from imagestore.store.store import Store

#: bytes handed to the decoder at once: fewer thread hops, still bounded memory
WRITE_CHUNK = 1 << 20
#: a layer this small is read whole, then stored in one thread hop (no more memory
#: than the streaming path's two batches): an image of hundreds of tiny layers
#: pays one hop per layer instead of four
SMALL_LAYER = 1 << 20
#: layer downloads remembered as ended (see Puller._ended)
ENDED_KEPT = 4096
#: what a body read by aiohttp raises when the connection breaks or goes silent
_BROKEN = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError)

#: told once a pull's manifests and configs are stored and verified, before its
#: layers: the pull's target and each manifest's media type by digest
OnDocuments = Callable[[Descriptor, dict[str, str]], None]


@dataclass(frozen=True, slots=True)
class PulledTag:
    """One tag of a pull of all tags."""

    name: str  # canonical: "docker.io/library/redis:7"
    digest: str  # the manifest or index it points at
    image_ids: tuple[str, ...]
    updated: bool  # content or the name changed


@dataclass(frozen=True, slots=True)
class PullResult:
    """What a pull stored: ``name`` is canonical (the repository for all tags,
    where ``digest`` is "" and ``tags`` has one entry per tag)."""

    name: str
    digest: str  # the manifest or index pulled
    image_ids: tuple[str, ...]
    updated: bool  # content or a name changed ("Downloaded newer image")
    status: str  # Docker's last line
    tags: tuple[PulledTag, ...] = ()


@dataclass(frozen=True, slots=True)
class _Layer:
    descriptor: Descriptor
    diff_id: str


@contextmanager
def _from_registry() -> Iterator[None]:
    """Registry content that does not parse means the registry lied: DATA_LOSS."""
    try:
        yield
    except errors.MalformedContent as exc:
        raise errors.RegistryResponseInvalid(exc.message, metadata=exc.metadata) from None


def _remote(data: bytes, media_type: str) -> Manifest | Index:
    with _from_registry():
        return parse_document(data, media_type or None)


class _Budget:
    """What one pull may still fetch and keep (the RegistryOptions limits)."""

    def __init__(self, options: RegistryOptions) -> None:
        self.options = options
        self.bytes_left = options.max_manifest_bytes_per_pull

    def spend(self, size: int, what: str) -> None:
        """Count ``size`` bytes of manifests or configs, before fetching them."""
        if size > self.bytes_left:
            limit = self.options.max_manifest_bytes_per_pull
            raise errors.SizeLimitExceeded(
                f"{what} would take this pull past {limit} bytes of manifests and configs"
                " (--max-manifest-bytes-per-pull)",
                metadata={"limit": str(limit)},
            )
        self.bytes_left -= size

    def check_index(self, index: Index) -> None:
        limit = self.options.max_index_children
        if len(index.manifests) > limit:
            raise errors.SizeLimitExceeded(
                f"the index lists {len(index.manifests)} manifests; the limit is {limit}"
                " (--max-index-children)",
                metadata={"children": str(len(index.manifests)), "limit": str(limit)},
            )

    def check_layers(self, count: int) -> None:
        limit = self.options.max_layers_per_pull
        if count > limit:
            raise errors.SizeLimitExceeded(
                f"the image has more than {limit} distinct layers (--max-layers-per-pull)",
                metadata={"limit": str(limit)},
            )


class Puller:
    """Pulls for one store; concurrent pulls share in-flight layer downloads."""

    def __init__(
        self, store: Store, client: RegistryClient, *, on_download: OnDownload | None = None
    ) -> None:
        self.store = store
        self.client = client
        #: told of each layer download as it starts (to read it while it lands)
        self.on_download = on_download
        #: by (registry origin, digest): a pull waits only for a download from its own
        #: registry, so a slow registry serving a popular layer holds up no other
        self._in_flight: dict[tuple[str, str], asyncio.Future[None]] = {}
        #: digests of layer downloads that ended here lately, from any registry: a
        #: pull that looked before one of them ended, and came to that layer after,
        #: looks again rather than download it a second time
        self._ended: LRU[str, bool] = LRU(ENDED_KEPT)

    async def pull(
        self,
        image: str,
        platforms: Sequence[str],
        credentials: Credentials | None,
        emit: Emit,
        *,
        all_platforms: bool = False,
        all_tags: bool = False,
        on_documents: OnDocuments | None = None,
    ) -> PullResult:
        """Pull ``image`` for ``platforms`` ("os/arch[/variant]"; none: the server's
        own; ``all_platforms``: every one an index lists). With ``all_tags``,
        ``image`` is a repository and each of its tags is pulled in turn."""
        wanted = _platforms(platforms, all_platforms)
        asked_for = wanted if platforms else None  # not the server's own by default
        if all_tags:
            return await self._pull_all_tags(image, wanted, asked_for, credentials, emit)
        return await self._pull_one(
            parse_reference(image), wanted, asked_for, credentials, emit, on_documents
        )

    async def _pull_all_tags(
        self,
        image: str,
        wanted: list[Platform] | None,
        asked_for: list[Platform] | None,
        credentials: Credentials | None,
        emit: Emit,
    ) -> PullResult:
        """``docker pull --all-tags``: each tag the registry lists, in its order."""
        reference = parse_reference(image, default_tag=False)
        if reference.tag is not None or reference.digest is not None:
            raise errors.ReferenceInvalid(
                "tag can't be used with --all-tags/-a",
                metadata={"reference": image[:300]},
                field="image",
            )
        pulled: list[PulledTag] = []
        for tag in await self._tags(reference, credentials, emit):
            result = await self._pull_one(
                reference.with_tag(tag), wanted, asked_for, credentials, emit
            )
            pulled.append(PulledTag(result.name, result.digest, result.image_ids, result.updated))
        updated = any(tag.updated for tag in pulled)
        image_ids = tuple(dict.fromkeys(i for tag in pulled for i in tag.image_ids))
        status = _status(reference.familiar_name, updated)
        return PullResult(str(reference), "", image_ids, updated, status, tuple(pulled))

    async def _tags(
        self, reference: Reference, credentials: Credentials | None, emit: Emit
    ) -> list[str]:
        """The repository's tags from the first endpoint that answers (mirrors, then
        the registry); their lists may take --max-manifest-bytes-per-pull bytes."""
        endpoints = self.client.endpoints(reference.domain, for_push=False)
        limit = self.client.options.max_manifest_bytes_per_pull
        for position, endpoint in enumerate(endpoints):
            try:
                repo = await self.client.repository(
                    reference, endpoint, credentials, on_retry=retry_reporter(emit)
                )
                return await list_tags(repo, limit=limit, on_retry=retry_reporter(emit))
            except errors.SizeLimitExceeded as exc:
                raise errors.SizeLimitExceeded(
                    f"{exc.message} (--max-manifest-bytes-per-pull)",
                    metadata={"limit": str(limit)},
                ) from None
            except (errors.NotFound, errors.Unavailable, errors.PermissionDenied):
                if position == len(endpoints) - 1:
                    raise
        raise AssertionError("unreachable")

    async def _pull_one(
        self,
        reference: Reference,
        wanted: list[Platform] | None,
        asked_for: list[Platform] | None,
        credentials: Credentials | None,
        emit: Emit,
        on_documents: OnDocuments | None = None,
    ) -> PullResult:
        """Pull one name; ``asked_for``: the platforms the request named (None: it
        named none), of which an image of one platform that is none is pulled with
        a warning, as docker does."""
        budget = _Budget(self.client.options)
        repo, document = await self._resolve(reference, credentials, emit, budget.bytes_left)
        # once the registry answered, as docker says it (a registry that cannot be
        # reached, or has no such image, fails with no "Pulling from" line before)
        emit(
            ProgressEvent(
                Phase.RESOLVING,
                f"Pulling from {reference.path}",
                subject=reference.digest or reference.tag or "",
            )
        )
        budget.spend(len(document.data), f"manifest {document.digest}")
        with errors.concerning(document.digest, "manifest"):
            parsed = _remote(document.data, document.media_type)
        lease = self.store.open_lease()
        try:
            return await self._pull_into(
                lease,
                reference,
                repo,
                document,
                parsed,
                wanted,
                asked_for,
                budget,
                emit,
                on_documents,
            )
        finally:
            await in_thread(self.store.end_lease, lease)

    async def _resolve(
        self, reference: Reference, credentials: Credentials | None, emit: Emit, limit: int
    ) -> tuple[Repository, RemoteDocument]:
        """The manifest at the first endpoint that has it (mirrors, then the registry),
        refused beyond ``limit`` bytes."""
        endpoints = self.client.endpoints(reference.domain, for_push=False)
        tag_or_digest = reference.digest or reference.tag or "latest"
        for position, endpoint in enumerate(endpoints):
            try:
                repo = await self.client.repository(
                    reference, endpoint, credentials, on_retry=retry_reporter(emit)
                )
                document = await get_manifest(
                    repo, tag_or_digest, retry_reporter(emit), limit=limit
                )
                return repo, document
            except (errors.NotFound, errors.Unavailable, errors.PermissionDenied):
                if position == len(endpoints) - 1:
                    raise
        raise AssertionError("unreachable")

    async def _pull_into(
        self,
        lease: Lease,
        reference: Reference,
        repo: Repository,
        document: RemoteDocument,
        parsed: Manifest | Index,
        wanted: list[Platform] | None,
        asked_for: list[Platform] | None,
        budget: _Budget,
        emit: Emit,
        on_documents: OnDocuments | None,
    ) -> PullResult:
        store = self.store
        target = Descriptor(parsed.media_type, document.digest, len(document.data))
        layers: dict[str, _Layer] = {}
        #: manifests and configs this pull stored (the layers are in ``layers``)
        documents = [document.digest]
        manifest_types = {document.digest: parsed.media_type}
        if isinstance(parsed, Index):
            budget.check_index(parsed)
            children = _select(parsed, wanted)
            budget.spend(sum(c.size for c in children), f"the {len(children)} manifests chosen")
            await in_thread(
                store.put_blob, lease, document.data, parsed.media_type, document.digest
            )
            for child in children:  # one at a time: a pull holds one child's bytes
                with errors.concerning(child.digest, "manifest"):
                    child_document = await self._child_manifest(lease, repo, child, emit)
                    child_parsed = _remote(child_document.data, child.media_type)
                    if not isinstance(child_parsed, Manifest):
                        raise errors.UnsupportedContent(
                            f"{child.digest} is a nested index; not supported",
                            metadata={"digest": child.digest},
                        )
                await self._manifest(
                    lease, repo, child_document, child_parsed, layers, budget, emit
                )
                documents += [child.digest, child_parsed.config.digest]
                manifest_types[child.digest] = child_parsed.media_type
                del child_document, child_parsed
        else:
            config = await self._manifest(lease, repo, document, parsed, layers, budget, emit)
            if asked_for:  # docker pulls an image of another platform, with a warning
                mismatch = platform_mismatch(reference.familiar(), config, asked_for)
                if mismatch:
                    emit(ProgressEvent(Phase.SUMMARY, f"WARNING: {mismatch}"))
            documents.append(parsed.config.digest)
        if on_documents is not None:
            on_documents(target, manifest_types)

        for layer in layers.values():
            emit(layer_event(Phase.WAITING, "Pulling fs layer", layer.descriptor))
        lease.add(*layers)  # before looking: GC either sees the lease or is done
        present = await in_thread(self._layers_present, list(layers))

        def jobs(small: bool) -> Iterator[Coroutine[Any, Any, bool]]:
            for layer in layers.values():
                if _is_small(layer.descriptor) == small:
                    yield self._layer(lease, repo, layer, emit, layer.descriptor.digest in present)

        # Small and large layers in lanes of their own, as their slots are (see _slot):
        # a layer waiting for one kind of slot never holds up the other kind.
        options = self.client.options
        lanes = [
            run_all(jobs(small=True), options.max_concurrent_small_downloads),
            run_all(jobs(small=False), options.max_concurrent_downloads),
        ]
        downloaded = any(any(fetched) for fetched in await run_all(lanes, len(lanes)))

        names = [reference]
        if reference.digest is None:
            names.append(reference.repository().with_digest(document.digest))
        result = await in_thread(
            partial(store.commit_target, event=EventKind.PULL), lease, target, names
        )
        # that repository holds all of these: a push to its registry may mount them
        await in_thread(
            store.record_blob_sources, [*documents, *layers], reference.domain, reference.path
        )
        emit(ProgressEvent(Phase.SUMMARY, f"Digest: {document.digest}"))
        changed = downloaded or bool(result.new_names) or bool(result.new_images)
        return PullResult(
            str(reference),
            document.digest,
            result.image_ids,
            changed,
            _status(reference.familiar(), changed),
        )

    async def _manifest(
        self,
        lease: Lease,
        repo: Repository,
        document: RemoteDocument,
        manifest: Manifest,
        layers: dict[str, _Layer],
        budget: _Budget,
        emit: Emit,
    ) -> ImageConfig:
        """Store a manifest and its config; add its layers to ``layers``; the config."""
        await in_thread(
            self.store.put_blob, lease, document.data, manifest.media_type, document.digest
        )
        config, config_layers = await self._config(lease, repo, manifest, budget, emit)
        for layer in config_layers:
            known = layers.setdefault(layer.descriptor.digest, layer)
            if known.diff_id != layer.diff_id:
                raise errors.DiffIdMismatch(
                    f"layer {layer.descriptor.digest} is given two different diff_ids",
                    metadata={"digest": layer.descriptor.digest},
                )
        budget.check_layers(len(layers))
        return config

    async def _config(
        self, lease: Lease, repo: Repository, manifest: Manifest, budget: _Budget, emit: Emit
    ) -> tuple[ImageConfig, list[_Layer]]:
        """A config, read from the store when it holds it (an up-to-date pull asks
        the registry for no blob), else fetched, verified and stored; and the
        layers, paired with its diff_ids."""
        descriptor = manifest.config
        budget.spend(descriptor.size, f"config {descriptor.digest}")
        lease.add(descriptor.digest)  # before looking: GC either sees the lease or is done
        with errors.concerning(descriptor.digest, "config"):
            data = await in_thread(self._stored_document, descriptor.digest, descriptor.size)
            if data is None:
                data = await get_small_blob(
                    repo, descriptor.digest, descriptor.size, retry_reporter(emit, descriptor)
                )
                await in_thread(
                    self.store.put_blob, lease, data, descriptor.media_type, descriptor.digest
                )
            with _from_registry():
                config = parse_config(data)
        if len(config.diff_ids) != len(manifest.layers):
            raise errors.RegistryResponseInvalid(
                f"image config {descriptor.digest} lists {len(config.diff_ids)} diff_ids for"
                f" {len(manifest.layers)} layers",
                metadata={"digest": descriptor.digest},
            )
        for layer in manifest.layers:
            if layer.media_type in mt.ZSTD_LAYERS:
                raise errors.UnsupportedMediaType(
                    f"layer {layer.digest} is zstd-compressed; only gzip and plain tar are"
                    " supported",
                    metadata={"digest": layer.digest, "mediaType": layer.media_type},
                )
        return config, [
            _Layer(layer, diff_id)
            for layer, diff_id in zip(manifest.layers, config.diff_ids, strict=True)
        ]

    def _stored_document(self, digest: str, size: int) -> bytes | None:
        """A manifest or config the store holds (leased by the caller), re-hashed
        as it is read; None when it is absent, is not the ``size`` its descriptor
        gives (the registry's answer decides: it is refused there), or fails its
        hash (then marked damaged, so storing the registry's copy repairs it)."""
        record = self.store.stored_record(digest)
        if record is None or record.size != size:
            return None
        try:
            return b"".join(self.store.read_verified(digest))
        except (errors.DataLoss, errors.NotFound):
            return None

    async def _child_manifest(
        self, lease: Lease, repo: Repository, child: Descriptor, emit: Emit
    ) -> RemoteDocument:
        """An index's child manifest, from the store when it holds it, else from
        the registry (``size`` checked there): with the config and layers stored
        too, an up-to-date pull of an index makes one manifest request."""
        lease.add(child.digest)  # before looking, as for configs and layers
        data = await in_thread(self._stored_document, child.digest, child.size)
        if data is not None:
            return RemoteDocument(data, child.media_type, child.digest)
        return await get_manifest(repo, child.digest, retry_reporter(emit, child), size=child.size)

    def _layers_present(self, digests: list[str]) -> set[str]:
        """The layers the store holds, looked up in one thread hop (an image of
        hundreds of layers, or an up-to-date pull, pays one, not one per layer)."""
        return {digest for digest in digests if self.store.layer_present(digest)}

    async def _layer(
        self, lease: Lease, repo: Repository, layer: _Layer, emit: Emit, present: bool
    ) -> bool:
        """Make one layer present; True when this pull downloaded it. Its errors
        name it."""
        with errors.concerning(layer.descriptor.digest, "layer"):
            return await self._present(lease, repo, layer, emit, present)

    async def _present(
        self, lease: Lease, repo: Repository, layer: _Layer, emit: Emit, present: bool
    ) -> bool:
        """``present``: whether the store held the layer when the pull looked
        (the pull leased every layer first); looked up again after waiting for
        another download, then the wait is checked again."""
        blob = layer.descriptor
        key = (repo.origin, blob.digest)
        while (other := self._in_flight.get(key)) is not None:
            emit(layer_event(Phase.WAITING, "Waiting", blob))
            await asyncio.wait({other})  # another pull is downloading it: wait, then look
            present = await in_thread(self.store.layer_present, blob.digest)
        if not present and self._ended.get(blob.digest):
            present = await in_thread(self.store.layer_present, blob.digest)
        if present:
            emit(layer_event(Phase.ALREADY_EXISTS, "Already exists", blob))
            return False
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = done
        try:
            downloaded = await self._download(lease, repo, layer, emit)
        finally:
            if self._in_flight.get(key) is done:
                del self._in_flight[key]
                self._ended.put(blob.digest, True)
            done.set_result(None)
        emit(layer_event(Phase.COMPLETE, "Pull complete", blob))
        return downloaded

    async def _download(self, lease: Lease, repo: Repository, layer: _Layer, emit: Emit) -> bool:
        """Stream a layer into a verified ingest, resuming with Range after a break."""
        descriptor = layer.descriptor
        if _is_small(descriptor):
            return await self._download_whole(lease, repo, layer, emit)
        ingest_context = self.store.ingest(
            lease,
            descriptor.digest,
            descriptor.size,
            encoding=Encoding.LAYER,
            expected_diff_id=layer.diff_id,
        )
        async with entered_in_thread(ingest_context) as ingest:
            if ingest.exists:  # stored meanwhile (a Load, say)
                emit(layer_event(Phase.ALREADY_EXISTS, "Already exists", descriptor))
                return False
            progress = ByteProgress(emit, descriptor, Phase.DOWNLOADING, "Downloading")
            what = f"blob {descriptor.digest}"
            watched = Download(descriptor.digest, descriptor.size, ingest.path)
            if self.on_download is not None:
                self.on_download(watched)
            idle_timeout = repo.transport.options.idle_timeout

            def written(count: int) -> None:
                progress.advance(count)
                watched.advance(ingest.written)

            async def attempt() -> None:
                async with self._slot(repo, descriptor, emit):
                    response = await open_blob(repo, descriptor.digest, ingest.written)
                    async with response, repo.transport.speed_floor.meter(what) as meter:
                        skip = ingest.written if response.status == 200 else 0
                        body = None if skip else SocketBody.take(response, idle_timeout)
                        if body is None:
                            await _read_streamed(
                                response.content, ingest, skip, meter.count, written, what
                            )
                        else:
                            await _read_taken(response, body, ingest, meter.count, written, what)
                if ingest.written < descriptor.size:
                    raise _ended_short(descriptor, ingest.written)

            try:
                async with repo.transport.deadline(what):
                    on_retry = retry_reporter(emit, descriptor, layer_id(descriptor.digest))
                    await repo.transport.with_retries(attempt, on_retry)
                emit(layer_event(Phase.VERIFYING, "Verifying Checksum", descriptor))
                await in_thread(self.store.commit, ingest, lease, descriptor.media_type)
            except BaseException as exc:
                watched.finish(exc)
                raise
            watched.finish()
            emit(layer_event(Phase.DOWNLOADED, "Download complete", descriptor))
            return True

    async def _download_whole(
        self, lease: Lease, repo: Repository, layer: _Layer, emit: Emit
    ) -> bool:
        """A small layer: read whole (again from its start after a break), then
        inflated, hashed, verified and committed in one thread hop. Its download
        is announced, but never streamed: a reader waits for it to be stored."""
        descriptor = layer.descriptor
        what = f"blob {descriptor.digest}"
        watched = Download(descriptor.digest, descriptor.size, None)
        if self.on_download is not None:
            self.on_download(watched)

        async def attempt() -> bytes:
            async with self._slot(repo, descriptor, emit):
                response = await open_blob(repo, descriptor.digest)
                async with response, repo.transport.speed_floor.meter(what) as meter:
                    try:
                        return await _read_whole(response.content, descriptor, meter.count)
                    except _BROKEN as exc:
                        raise connection_failure(exc, what) from None

        try:
            async with repo.transport.deadline(what):
                on_retry = retry_reporter(emit, descriptor, layer_id(descriptor.digest))
                data = await repo.transport.with_retries(attempt, on_retry)
            ByteProgress(emit, descriptor, Phase.DOWNLOADING, "Downloading").advance(len(data))
            emit(layer_event(Phase.VERIFYING, "Verifying Checksum", descriptor))
            stored = await in_thread(self._store_whole, lease, layer, data)
        except BaseException as exc:
            watched.finish(exc)
            raise
        watched.finish()
        if not stored:  # stored meanwhile (a Load, say)
            emit(layer_event(Phase.ALREADY_EXISTS, "Already exists", descriptor))
            return False
        emit(layer_event(Phase.DOWNLOADED, "Download complete", descriptor))
        return True

    @asynccontextmanager
    async def _slot(
        self, repo: Repository, descriptor: Descriptor, emit: Emit
    ) -> AsyncIterator[None]:
        """One of the registry's download slots for one try: released while
        waiting to retry (a Retry-After of a minute must not keep the registry's
        other layers waiting); "Waiting" is shown when none is free. A layer read
        whole (of at most SMALL_LAYER bytes) takes one of the small slots."""
        slots = self.client.small_downloads if _is_small(descriptor) else self.client.downloads
        if slots.busy(repo.origin):
            emit(layer_event(Phase.WAITING, "Waiting", descriptor))
        async with slots.hold(repo.origin):
            yield

    def _store_whole(self, lease: Lease, layer: _Layer, data: bytes) -> bool:
        """Store a layer read whole; False when the store held it already."""
        descriptor = layer.descriptor
        with self.store.ingest(
            lease,
            descriptor.digest,
            descriptor.size,
            encoding=Encoding.LAYER,
            expected_diff_id=layer.diff_id,
        ) as ingest:
            if ingest.exists:
                return False
            ingest.write(data)
            self.store.commit(ingest, lease, descriptor.media_type)
            return True


def _is_small(descriptor: Descriptor) -> bool:
    """A layer read whole, through the small slots and lane (SMALL_LAYER)."""
    return descriptor.size <= SMALL_LAYER


async def _read_whole(
    content: aiohttp.StreamReader, descriptor: Descriptor, count: Callable[[int], None]
) -> bytes:
    """A body of exactly ``descriptor.size`` bytes, refused as soon as it is longer
    and when it ends shorter (as the streaming path refuses them)."""
    pieces: list[bytes] = []
    held = 0
    async for piece in content.iter_any():
        held += len(piece)
        count(len(piece))
        if held > descriptor.size:
            raise errors.DigestMismatch(
                f"content is larger than the expected {descriptor.size} bytes",
                metadata={"digest": descriptor.digest, "size": str(descriptor.size)},
            )
        pieces.append(piece)
    if held < descriptor.size:
        raise _ended_short(descriptor, held)
    return b"".join(pieces)


def _ended_short(descriptor: Descriptor, got: int) -> errors.DigestMismatch:
    return errors.DigestMismatch(
        f"blob {descriptor.digest} ended after {got} of {descriptor.size} bytes",
        metadata={"digest": descriptor.digest, "size": str(got)},
    )


async def _batches(content: aiohttp.StreamReader) -> AsyncIterator[list[bytes]]:
    """The body as network reads, batched to about WRITE_CHUNK bytes per thread hop
    (not joined: a copy of every byte costs more than it saves)."""
    batch: list[bytes] = []
    held = 0
    async for piece in content.iter_any():
        batch.append(piece)
        held += len(piece)
        if held >= WRITE_CHUNK:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


async def _read_streamed(
    content: aiohttp.StreamReader,
    ingest: Ingest,
    skip: int,
    count: Callable[[int], None],
    written: Callable[[int], None],
    what: str,
) -> None:
    """A body read by aiohttp into ``ingest``, written behind (``skip``: leading
    bytes to drop, a registry having ignored our Range)."""
    writer = _WriteBehind(ingest, written)
    try:
        async for pieces in _batches(content):
            count(sum(map(len, pieces)))
            if skip:
                pieces, skip = _drop(pieces, skip)
            await writer.write(pieces)
        await writer.flush()
    except _BROKEN as exc:
        raise connection_failure(exc, what) from None
    finally:
        await writer.settle()


async def _read_taken(
    response: aiohttp.ClientResponse,
    body: SocketBody,
    ingest: Ingest,
    count: Callable[[int], None],
    written: Callable[[int], None],
    what: str,
) -> None:
    """A body taken from aiohttp (registry/socketbody.py) into ``ingest``: slices
    of steps read and write on a transfer thread; ``count`` and ``written`` are told
    of each step's bytes, on the event loop, after it. A cancelled slice (the try's
    deadline, its speed floor, the call) interrupts the read, and returns once the
    thread is done with the ingest. The connection is closed after: aiohttp's
    parser saw none of it."""
    loop = asyncio.get_running_loop()

    def landed(size: int) -> None:
        count(size)
        written(size)

    def report(size: int) -> None:  # on the thread: told on the loop, in order
        loop.call_soon_threadsafe(landed, size)

    try:
        if body.head:
            await in_thread(ingest.write, body.head)
            landed(len(body.head))
        while body.remaining:
            steps = asyncio.ensure_future(in_thread(body.fill_for, ingest.write, report))
            try:
                await asyncio.shield(steps)
            except asyncio.CancelledError:
                body.interrupt()
                await asyncio.wait({steps})
                if not steps.cancelled():
                    steps.exception()  # retrieved: the interrupted read's failure is no news
                raise
    except (OSError, TimeoutError) as exc:
        raise connection_failure(exc, what) from None
    finally:
        body.close()
        response.close()


def _drop(pieces: list[bytes], count: int) -> tuple[list[bytes], int]:
    """Skip ``count`` leading bytes (a registry that ignored our Range)."""
    kept: list[bytes] = []
    for piece in pieces:
        if count >= len(piece):
            count -= len(piece)
        else:
            kept.append(piece[count:])
            count = 0
    return kept, count


def _write_all(ingest: Ingest, pieces: list[bytes]) -> None:
    for piece in pieces:
        ingest.write(piece)


class _WriteBehind:
    """Batches written to an ingest on a transfer thread while the event loop
    reads the next one: a layer's network reads and its hashing and inflating
    overlap instead of taking turns (one batch in flight, one being read: about
    2 x WRITE_CHUNK of memory per layer). ``written(count)`` is told after each
    batch is in the file."""

    def __init__(self, ingest: Ingest, written: Callable[[int], None]) -> None:
        self._ingest = ingest
        self._written = written
        self._in_flight: asyncio.Future[None] | None = None

    async def write(self, pieces: list[bytes]) -> None:
        """Start writing ``pieces`` once the batch before is written (its failure raised)."""
        await self.flush()
        size = sum(map(len, pieces))
        in_flight = asyncio.ensure_future(in_thread(_write_all, self._ingest, pieces))

        def done(future: asyncio.Future[None]) -> None:
            if not future.cancelled() and future.exception() is None:
                self._written(size)  # as soon as it is in the file: readers wait for it

        in_flight.add_done_callback(done)
        self._in_flight = in_flight

    async def flush(self) -> None:
        """Wait for the batch in flight; raise its failure."""
        if self._in_flight is None:
            return
        in_flight, self._in_flight = self._in_flight, None
        await in_flight

    async def settle(self) -> None:
        """Wait for a batch still in flight (another failure is being raised, so
        its own is dropped): the ingest is never used by two threads at once."""
        if self._in_flight is None:
            return
        in_flight, self._in_flight = self._in_flight, None
        await asyncio.wait({in_flight})
        if not in_flight.cancelled():
            in_flight.exception()  # retrieved


def _status(shown: str, changed: bool) -> str:
    """Docker's last line of a pull of ``shown`` (a familiar name)."""
    return f"Downloaded newer image for {shown}" if changed else f"Image is up to date for {shown}"


def _platforms(requested: Sequence[str], all_platforms: bool) -> list[Platform] | None:
    """The platforms asked for ("os/arch[/variant]"; default: this server's); None
    means all of them."""
    if all_platforms:
        return None
    if not requested:
        return [host_platform()]
    return [parse_platform(p) for p in requested]


def _select(index: Index, wanted: list[Platform] | None) -> list[Descriptor]:
    """The index entries to pull: each wanted platform's best match, or all images;
    each digest once (an index may list one manifest many times)."""
    images = [d for d in index.manifests if d.media_type in mt.MANIFESTS]
    if wanted is None:
        if not images:
            raise errors.PlatformNotFound(
                "the index lists no image manifests", metadata={"platform": "", "offered": "none"}
            )
        first: dict[str, Descriptor] = {}
        for descriptor in images:
            first.setdefault(descriptor.digest, descriptor)
        return list(first.values())
    chosen: list[Descriptor] = []
    for platform in wanted:
        match = best_match(platform, [(d.platform, d) for d in images])
        if match is None:
            offered = ", ".join(str(d.platform) for d in images if d.platform) or "none"
            raise errors.PlatformNotFound(
                f"no matching manifest for {platform} in the manifest list entries"
                f" (offered: {offered})",
                metadata={"platform": str(platform), "offered": offered[:500]},
            )
        if all(match.digest != c.digest for c in chosen):
            chosen.append(match)
    return chosen
