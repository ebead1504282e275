"""Push: exactly the manifest (or index) a name points at, digests preserved.

Blobs go first, each skipped when the registry has it, mounted when another
repository of the same registry is known to hold it, uploaded otherwise: a
POST for the session, then one PUT with the whole blob, sent by the kernel
from the blob's file (sendfile) while a thread hashes the same file: its last
bytes wait for the hash (a damaged blob stops short and is never committed);
the manifests are PUT last, children before their index.

Mount sources are not guessed from local names (a local tag may never have
been pushed): the store records where each blob was pulled from or pushed to
(``Store.record_blob_sources``), and a push tries those repositories of the
target registry, most recent first. A registry that cannot mount from one
answers 202 with an upload session: that session is cancelled (DELETE) and
the next source tried; after the last, its session takes the upload. A
successful push records the target repository for every blob it pushed,
mounted or found there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from yarl import URL

from imagestore import errors, hashing
from imagestore.dockerconfig import Credentials
from imagestore.oci.manifests import Descriptor, Manifest
from imagestore.oci.references import Reference, parse_reference
from imagestore.registry.blocking import in_thread, run_all
from imagestore.registry.client import RegistryClient
from imagestore.registry.content import (
    blob_exists,
    cancel_upload,
    mount_blob,
    put_manifest,
    start_upload,
    upload_blob,
)
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
from imagestore.registry.transport import FileBody
from imagestore.store.blobs import READ_CHUNK
from imagestore.store.leases import Lease
from imagestore.store.selection import StoredDocument, select_documents
from imagestore.store.store import Store

log = logging.getLogger("imagestore.registry")


#: emits a line about the blob at hand (a layer's; a config's are not shown)
_Say = Callable[[Phase, str], None]


@dataclass(frozen=True, slots=True)
class PushResult:
    """What a push sent: ``name`` is canonical, as pushed ("…/app:1", "…/app@sha256:…")."""

    name: str
    digest: str  # of the manifest or index the registry now has
    size: int  # its size in bytes


class Pusher:
    """Pushes for one store."""

    def __init__(self, store: Store, client: RegistryClient) -> None:
        self.store = store
        self.client = client

    async def push(
        self, image: str, credentials: Credentials | None, platform: str, emit: Emit
    ) -> PushResult:
        """Push ``image``; ``platform`` ("os/arch[/variant]", "" for the whole index)
        picks one child of an index with absent children."""
        reference = parse_reference(image)
        lease = self.store.open_lease(reading=True)
        try:
            target = await in_thread(self._target, reference, lease)
            emit(
                ProgressEvent(Phase.RESOLVING, f"The push refers to repository [{reference.name}]")
            )
            documents = await in_thread(
                select_documents, self.store, target, platform, lease, "push", reference.familiar()
            )
            endpoint = self.client.endpoints(reference.domain, for_push=True)[0]
            repo = await self.client.repository(
                reference, endpoint, credentials, push=True, on_retry=retry_reporter(emit)
            )
            await self._blobs(repo, reference, documents, emit)
            pushed = documents[-1]
            for document in documents[:-1]:  # an index's children, by digest
                await put_manifest(
                    repo, document.descriptor.digest, document.data, document.descriptor.media_type
                )
            tag = reference.tag if reference.digest is None else None
            digest = await put_manifest(
                repo, tag or pushed.descriptor.digest, pushed.data, pushed.descriptor.media_type
            )
            await in_thread(
                self.store.commit_target,
                lease,
                pushed.descriptor,
                [reference.repository().with_digest(digest)],
            )
            # the registry now holds all of these there: later pushes may mount them;
            # and the journal gets the push's event, in the same transaction
            await in_thread(
                self.store.record_push,
                _digests(documents),
                reference.domain,
                reference.path,
                str(reference),
                pushed.descriptor.digest,
            )
        finally:
            await in_thread(self.store.end_lease, lease)
        size = len(pushed.data)
        emit(ProgressEvent(Phase.SUMMARY, f"{tag or digest}: digest: {digest} size: {size}"))
        return PushResult(str(reference), digest, size)

    def _target(self, reference: Reference, lease: Lease) -> Descriptor:
        try:
            resolved = self.store.resolve(str(reference))
        except errors.NotFound:
            resolved = None
        if resolved is None or resolved.target is None:
            raise errors.ImageNotFound(
                f"An image does not exist locally with the tag: {reference.familiar_name}",
                metadata={"image": reference.familiar()},
            )
        lease.add(resolved.target)
        target = self.store.target_descriptor(resolved.target)
        if target is None:
            raise errors.ImageNotFound(
                f"No such image: {reference.familiar()}", metadata={"image": reference.familiar()}
            )
        return target

    async def _blobs(
        self, repo: Repository, reference: Reference, documents: list[StoredDocument], emit: Emit
    ) -> None:
        blobs: dict[str, tuple[Descriptor, bool]] = {}
        for document in documents:
            if isinstance(document.parsed, Manifest):
                for layer in document.parsed.layers:
                    blobs.setdefault(layer.digest, (layer, True))
                blobs.setdefault(document.parsed.config.digest, (document.parsed.config, False))
        for descriptor, shown in blobs.values():
            if shown:
                emit(layer_event(Phase.PREPARING, "Preparing", descriptor))
        await run_all(
            (
                self._blob(repo, reference, descriptor, shown, emit)
                for descriptor, shown in blobs.values()
            ),
            self.client.options.max_concurrent_uploads,
        )

    async def _blob(
        self,
        repo: Repository,
        reference: Reference,
        descriptor: Descriptor,
        shown: bool,
        emit: Emit,
    ) -> None:
        def say(phase: Phase, text: str) -> None:
            if shown:
                emit(layer_event(phase, text, descriptor))

        # a push runs at most max_concurrent_uploads of these at once (run_all), and
        # the registry's upload slots bound the transfers across pushes
        with errors.concerning(descriptor.digest, "layer" if shown else "config"):
            if await blob_exists(repo, descriptor.digest):
                say(Phase.EXISTS_REMOTELY, "Layer already exists")
                return
            mounted, location = await self._mount(repo, reference, descriptor.digest, say)
            if not mounted:
                await self._send(repo, descriptor, location, say, emit, shown)

    async def _mount(
        self, repo: Repository, reference: Reference, digest: str, say: _Say
    ) -> tuple[bool, URL | None]:
        """Mount from each recorded source in turn: (True, None) once mounted; else
        (False, the upload session the last source opened instead, if any). A
        source the registry will not mount from (no access, gone) is passed over:
        the blob is uploaded at worst."""
        sources = await in_thread(self.store.blob_sources, digest, reference.domain)
        location: URL | None = None
        for source in (s for s in sources if s != reference.path):
            if location is not None:  # the previous source could not: drop its session
                await cancel_upload(repo, location)
                location = None
            try:
                location = await mount_blob(repo, digest, source)
            except (errors.PermissionDenied, errors.NotFound, errors.FailedPrecondition) as exc:
                log.info("not mounting %s from %s: %s", digest, source, exc.message)
                continue
            if location is None:
                say(Phase.MOUNTED, f"Mounted from {source}")
                return True, None
        return False, location

    async def _send(
        self,
        repo: Repository,
        descriptor: Descriptor,
        location: URL | None,
        say: _Say,
        emit: Emit,
        shown: bool,
    ) -> None:
        """Upload a blob (into ``location`` when a session is open already)."""
        slots = self.client.uploads

        async def attempt() -> None:
            nonlocal location
            if slots.busy(repo.origin):
                say(Phase.WAITING, "Waiting")
            async with slots.hold(repo.origin):  # a slot per try: none held while waiting
                session = location or await start_upload(repo)
                location = None  # a failed session is not reused
                await self._upload(repo, session, descriptor, emit if shown else None)

        on_retry = retry_reporter(emit, descriptor, layer_id(descriptor.digest))
        await repo.transport.with_retries(attempt, on_retry)
        say(Phase.PUSHED, "Pushed")

    async def _upload(
        self, repo: Repository, location: URL, descriptor: Descriptor, emit: Emit | None
    ) -> None:
        digest, size = descriptor.digest, descriptor.size
        progress = ByteProgress(emit, descriptor, Phase.PUSHING, "Pushing") if emit else None
        check = _SendCheck(digest)
        file = await in_thread(self._open, digest, size)
        # the kernel sends the file; this pass hashes the same open file (the same
        # bytes: a blob file is never written in place, a repair is a new file)
        stop = threading.Event()
        hashed = asyncio.ensure_future(in_thread(_hash_file, file, size, stop))
        try:

            def body() -> FileBody:
                verdict = check.begin()  # each try (a redirect, a 401) sends afresh

                async def before_last() -> None:
                    if await hashed != digest:  # the body stops short: no commit
                        verdict.failure = await in_thread(self.store.found_corrupt, digest)
                        raise verdict.failure
                    verdict.passed = True

                advance = progress.advance if progress is not None else _unseen
                return FileBody(file, size, before_last, advance)

            await upload_blob(repo, location, digest, size, body, verify=check.verify)
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await hashed  # the thread is done with the file
            await in_thread(file.close)

    def _open(self, digest: str, size: int) -> BinaryIO:
        """The blob's file; DataLoss (the blob marked damaged) when it is not its size."""
        file = self.store.open_blob(digest)
        if os.fstat(file.fileno()).st_size != size:
            file.close()
            raise self.store.found_corrupt(digest)
        return file


@dataclass(slots=True)
class _Verdict:
    """One try's body: it read the whole blob and it hashed right (``passed``), or
    the store's DataLoss (the blob is marked damaged already)."""

    passed: bool = False
    failure: errors.DataLoss | None = None


class _SendCheck:
    """What the last try's upload body found of the blob it read."""

    def __init__(self, digest: str) -> None:
        self.digest = digest
        self._current = _Verdict()

    def begin(self) -> _Verdict:
        self._current = _Verdict()
        return self._current

    def verify(self, taken: bool) -> None:
        """Raise the store's DataLoss when the blob failed its hash. A registry
        that took (``taken``) a body not all read and checked is not believed:
        it cannot have verified a blob it did not get whole."""
        verdict = self._current
        if verdict.failure is not None:
            raise verdict.failure
        if taken and not verdict.passed:
            raise errors.RegistryResponseInvalid(
                f"the registry answered the upload of {self.digest} before the whole blob was sent",
                metadata={"digest": self.digest},
            )


def _digests(documents: list[StoredDocument]) -> list[str]:
    """Every blob a push put in the repository: manifests, configs, layers."""
    found: dict[str, None] = {}
    for document in documents:
        found[document.descriptor.digest] = None
        if isinstance(document.parsed, Manifest):
            found[document.parsed.config.digest] = None
            found.update((layer.digest, None) for layer in document.parsed.layers)
    return list(found)


def _unseen(count: int) -> None:
    """A config's bytes are not shown."""


def _hash_file(file: BinaryIO, size: int, stop: threading.Event) -> str:
    """The digest of the first ``size`` bytes of ``file``, read by offset (the
    sender's position is its own); "" when stopped or the file is shorter."""
    buffer = memoryview(bytearray(READ_CHUNK))
    offset = 0
    with hashing.Sha256() as hasher:
        while offset < size and not stop.is_set():
            count = os.preadv(file.fileno(), [buffer[: min(READ_CHUNK, size - offset)]], offset)
            if count <= 0:
                return ""
            hasher.update(buffer[:count])
            offset += count
        return hasher.finish()[0] if offset == size else ""
