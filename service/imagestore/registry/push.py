"""Push: exactly the manifest (or index) a name points at, digests preserved.

Blobs go first, each skipped when the registry has it, mounted when another
repository of the same registry holds it, uploaded otherwise (re-hashed on the
way out); the manifests are PUT last, children before their index.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from yarl import URL

from imagestore import errors, hashing
from imagestore.dockerconfig import Credentials
from imagestore.oci import mediatypes as mt
from imagestore.oci.manifests import Descriptor, Index, Manifest, parse_document
from imagestore.oci.platforms import best_match, parse_platform
from imagestore.oci.references import Reference, parse_reference
from imagestore.registry.blocking import in_thread, run_all
from imagestore.registry.client import RegistryClient, Repository
from imagestore.registry.content import (
    blob_exists,
    mount_blob,
    put_manifest,
    start_upload,
    upload_blob,
)
from imagestore.registry.progress import (
    ByteProgress,
    Emit,
    ProgressEvent,
    layer_id,
    retry_reporter,
)
from imagestore.store.leases import Lease
from imagestore.store.store import Store


@dataclass(frozen=True, slots=True)
class PushResult:
    tag: str  # the tag pushed ("" when pushed by digest)
    digest: str  # of the manifest or index the registry now has
    size: int  # its size in bytes


@dataclass(frozen=True, slots=True)
class _Document:
    descriptor: Descriptor
    data: bytes
    parsed: Manifest | Index


class Pusher:
    """Pushes for one store."""

    def __init__(self, store: Store, client: RegistryClient) -> None:
        self.store = store
        self.client = client

    async def push(
        self, image: str, credentials: Credentials | None, platform: str, emit: Emit
    ) -> PushResult:
        reference = parse_reference(image)
        lease = self.store.leases.new()
        try:
            target = await in_thread(self._target, reference, lease)
            emit(ProgressEvent("", f"The push refers to repository [{reference.name}]"))
            documents = await in_thread(self._documents, target, platform, lease)
            endpoint = self.client.endpoints(reference.domain, for_push=True)[0]
            repo = await self.client.repository(reference, endpoint, credentials, push=True)
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
        finally:
            await in_thread(self.store.end_lease, lease)
        size = len(pushed.data)
        emit(ProgressEvent("", f"{tag or digest}: digest: {digest} size: {size}"))
        return PushResult(tag or "", digest, size)

    def _target(self, reference: Reference, lease: Lease) -> Descriptor:
        try:
            resolved = self.store.resolve(str(reference))
        except errors.NotFound:
            resolved = None
        if resolved is None or resolved.target is None:
            raise errors.NotFound(
                f"An image does not exist locally with the tag: {reference.familiar_name}",
                metadata={"image": reference.familiar()},
            )
        lease.add(resolved.target)
        with self.store.catalog.reading() as db:
            row = self.store.catalog.target(db, resolved.target)
        if row is None:
            raise errors.NotFound(f"No such image: {reference.familiar()}")
        size = self.store.blobs.size(row.digest) or 0
        return Descriptor(row.media_type, row.digest, size)

    def _documents(self, target: Descriptor, platform: str, lease: Lease) -> list[_Document]:
        """What to PUT, in order: the manifest; or the children, then the index;
        or, with ``platform``, the one child that matches."""
        top = self._read(target)
        if isinstance(top.parsed, Manifest):
            self._lease_manifest(top.parsed, lease)
            return [top]
        present = [d for d in top.parsed.manifests if self.store.blobs.exists(d.digest)]
        if platform:
            wanted = parse_platform(platform)
            choice = best_match(
                wanted, [(d.platform, d) for d in present if d.media_type in mt.MANIFESTS]
            )
            if choice is None:
                raise errors.NotFound(
                    f"no manifest for platform {wanted} is stored in this index",
                    metadata={"platform": str(wanted)},
                )
            child = self._read(choice)
            assert isinstance(child.parsed, Manifest)
            self._lease_manifest(child.parsed, lease)
            return [child]
        absent = [d for d in top.parsed.manifests if d not in present]
        if absent:
            names = ", ".join(str(d.platform or d.digest) for d in absent)
            raise errors.FailedPrecondition(
                f"cannot push the whole index {target.digest}: these platforms are not stored:"
                f" {names}; pull them, or push one platform",
                metadata={"missing": names},
            )
        children = []
        for descriptor in top.parsed.manifests:
            child = self._read(descriptor)
            if isinstance(child.parsed, Manifest):
                self._lease_manifest(child.parsed, lease)
            children.append(child)
        return [*children, top]

    def _read(self, descriptor: Descriptor) -> _Document:
        data = self.store.blobs.read_bytes(descriptor.digest)
        if hashing.sha256_digest(data) != descriptor.digest:
            raise errors.DataLoss(f"stored blob {descriptor.digest} is corrupt; run check")
        parsed = parse_document(data, descriptor.media_type)
        return _Document(
            Descriptor(parsed.media_type, descriptor.digest, len(data), descriptor.platform),
            data,
            parsed,
        )

    @staticmethod
    def _lease_manifest(manifest: Manifest, lease: Lease) -> None:
        lease.add(manifest.config.digest, *(layer.digest for layer in manifest.layers))

    async def _blobs(
        self, repo: Repository, reference: Reference, documents: list[_Document], emit: Emit
    ) -> None:
        blobs: dict[str, tuple[Descriptor, bool]] = {}
        for document in documents:
            if isinstance(document.parsed, Manifest):
                for layer in document.parsed.layers:
                    blobs.setdefault(layer.digest, (layer, True))
                blobs.setdefault(document.parsed.config.digest, (document.parsed.config, False))
        for descriptor, shown in blobs.values():
            if shown:
                emit(ProgressEvent(layer_id(descriptor.digest), "Preparing"))
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
        def say(status: str) -> None:
            if shown:
                emit(ProgressEvent(layer_id(descriptor.digest), status))

        # a push runs at most max_concurrent_uploads of these at once (run_all), and
        # the registry's upload slots bound the transfers across pushes
        if await blob_exists(repo, descriptor.digest):
            say("Layer already exists")
            return
        location: URL | None = None
        source = await in_thread(self._mount_source, reference, descriptor.digest)
        if source is not None:
            location = await mount_blob(repo, descriptor.digest, source)
            if location is None:
                say(f"Mounted from {source}")
                return
            # else the registry opened a plain upload session instead: use it
        slots = self.client.uploads

        async def attempt() -> None:
            nonlocal location
            if slots.busy(repo.origin):
                say("Waiting")
            async with slots.hold(repo.origin):  # a slot per try: none held while waiting
                session = location or await start_upload(repo)
                location = None  # a failed session is not reused
                await self._upload(repo, session, descriptor, emit if shown else None)

        await self.client.with_retries(attempt, retry_reporter(emit, layer_id(descriptor.digest)))
        say("Pushed")

    def _mount_source(self, reference: Reference, digest: str) -> str | None:
        """Another repository of the same registry whose images hold the blob."""
        prefix = reference.domain + "/"
        return next(
            (
                name.removeprefix(prefix)
                for name in self.store.repositories_holding(digest)
                if name.startswith(prefix) and name != reference.name
            ),
            None,
        )

    async def _upload(
        self, repo: Repository, location: URL, descriptor: Descriptor, emit: Emit | None
    ) -> None:
        digest = descriptor.digest
        checked: list[str] = []
        progress = ByteProgress(emit, digest, "Pushing", descriptor.size) if emit else None

        async def body() -> AsyncIterator[bytes]:
            chunks = self.store.blobs.read(digest)
            sent = 0
            with hashing.Sha256() as hasher:

                def read_and_hash() -> bytes | None:
                    chunk = next(chunks, None)
                    if chunk is not None:
                        hasher.update(chunk)
                    return chunk

                while (chunk := await in_thread(read_and_hash)) is not None:
                    sent += len(chunk)
                    if sent >= descriptor.size and not checked:  # settle before the last
                        checked.append(hasher.finish()[0])  # chunk: the answer may come first
                    if progress is not None:
                        progress.advance(len(chunk))
                    yield chunk

        await upload_blob(
            repo, location, digest, descriptor.size, body, verify=lambda: _verified(checked, digest)
        )


def _verified(checked: list[str], digest: str) -> None:
    if checked != [digest]:
        raise errors.DataLoss(
            f"stored blob {digest} is corrupt; run check", metadata={"digest": digest}
        )
