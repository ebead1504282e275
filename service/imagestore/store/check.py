"""Check: re-verify every blob and the catalog's consistency, like ``git fsck``.

It reports what it finds and fixes nothing; each problem's detail says how to
recover. Blobs it finds damaged (corrupt, or of another size than recorded) are
marked in the catalog, so that the next pull or load that brings one writes it
again instead of saying it already exists. Blob files without a catalog record
(left by a crash between an ingest's rename and its record, or during a
prune's unlinks) are garbage, not damage: a pull or load writes them again, and
prune, or a start-up once they are old, removes them. They are listed apart.

Check never reads blob contents with a lock held, so every other call carries
on while it runs (Inspect, Tag, Remove, Prune, Load...). It goes in three steps:

1. *Snapshot*, under the GC lock and one catalog read: the blob files present,
   the blob rows, what the catalog references, the names, the images and
   their manifests' layer rows. Short: a directory listing and a few queries.
2. *Verify*, with no lock held, on a thread of its own at nice +10: hash every
   blob file (1 MiB reads; the native SHA-256 and the reads release the GIL)
   and parse every image config. The caller's stream gets progress as the
   reads go, and each corrupt blob as soon as it is confirmed: under the GC
   lock, briefly, it must still be the very file that was hashed (same device,
   inode, size, mtime and ctime); one deleted meanwhile is not a problem, and
   one replaced meanwhile is hashed again at the end and reported only if the
   replacement is corrupt too.
3. *Confirm* the rest, under the locks again, briefly: each finding must still
   hold (a blob a concurrent prune or remove deleted meanwhile is not missing).

Closing the stream stops the hashing between two reads and waits for the
thread, so a cancelled Check reads no further and frees its place.

Files are hashed in digest order. One Check runs at a time per store: a second
caller gets :class:`~imagestore.errors.CheckRunning` (ABORTED) with a retry delay
of :data:`CHECK_RETRY_DELAY` seconds (sent as a ``google.rpc.RetryInfo``); one
that comes while a cancelled Check is stopping waits for it instead.
"""

from __future__ import annotations

import contextlib
import os
import queue
import stat
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from imagestore import errors, hashing
from imagestore.oci import mediatypes as mt
from imagestore.oci.manifests import parse_config
from imagestore.store.blobs import READ_CHUNK
from imagestore.store.catalog import CatalogReader
from imagestore.store.content import now_ns
from imagestore.store.models import (
    CheckEvent,
    CheckProgress,
    CheckReport,
    CheckSummary,
    Problem,
    UnrecordedBlob,
)
from imagestore.store.parts import Parts
from imagestore.store.records import BlobRow, ManifestBlob

#: seconds a caller refused because a Check is running is told to wait before retrying
CHECK_RETRY_DELAY = 5.0
#: the nice value of the thread that hashes (Check is background work)
CHECK_NICENESS = 10

#: problems about a blob file's content: Check marks those blobs damaged
DAMAGE_KINDS = frozenset({"corrupt-blob", "size-mismatch"})
#: how to recover a blob that is damaged or missing
REPAIR_BLOB = (
    "to repair it, pull or load an image that contains it (it is written again),"
    " or remove the images that use it and prune"
)

_HEX = frozenset("0123456789abcdef")

#: what identifies one file's contents: device, inode, size, mtime, ctime
Identity = tuple[int, int, int, int, int]


@dataclass(frozen=True, slots=True)
class Hashed:
    """What one blob file held when it was read."""

    digest: str | None  #: what the bytes hash to (None: the file could not be read)
    size: int  #: bytes read
    identity: Identity | None  #: the file, as seen once read to the end
    error: str = ""  #: why it could not be read


@dataclass(frozen=True, slots=True)
class Layer:
    """A manifest's layer as the catalog records it (snapshot)."""

    digest: str
    media_type: str
    recorded: bool  #: the blob has a row
    diff_id: str | None  #: the row's diff_id


@dataclass(frozen=True, slots=True)
class Finding:
    """A problem found outside the locks, to confirm under them."""

    problem: Problem
    expected: str | None = None  #: the config's diff_id, for a diff-id-mismatch


@dataclass(slots=True)
class Snapshot:
    """What one Check verifies, read under the locks in one go."""

    files: list[str] = field(default_factory=list)
    file_bytes: int = 0  #: the files' sizes when listed
    sizes: dict[str, int] = field(default_factory=dict)  #: recorded blob sizes
    referenced: set[str] = field(default_factory=set)
    dangling_names: list[tuple[str, str]] = field(default_factory=list)  #: (name, target)
    images: int = 0
    without_manifest: list[str] = field(default_factory=list)
    #: image ID -> [(manifest digest, its layers)]
    manifests: dict[str, list[tuple[str, list[Layer]]]] = field(default_factory=dict)


def check(parts: Parts) -> CheckReport:
    """:func:`check_stream` run to its end, its findings collected."""
    problems: list[Problem] = []
    unrecorded: list[str] = []
    summary: CheckSummary | None = None
    for event in check_stream(parts):
        if isinstance(event, Problem):
            problems.append(event)
        elif isinstance(event, UnrecordedBlob):
            unrecorded.append(event.digest)
        elif isinstance(event, CheckSummary):
            summary = event
    assert summary is not None  # the stream always ends with its summary
    return CheckReport(
        tuple(problems),
        blobs_checked=summary.blobs_checked,
        images_checked=summary.images_checked,
        unrecorded_blobs=tuple(unrecorded),
    )


def check_stream(parts: Parts) -> Generator[CheckEvent, None, None]:
    """Verify the store without blocking it; one Check at a time.

    Yields progress (blobs and bytes hashed of the total) while it hashes,
    each corrupt blob as soon as it is confirmed, the other problems and the
    unrecorded blobs at the end, then a :class:`CheckSummary`. Closing the
    generator stops the hashing (between 1 MiB reads) and frees the check.
    Raises CheckRunning (with ``retry_after``) on its first step when another
    Check is running.
    """
    gate = parts.check_gate
    if not gate.enter(wait=CHECK_RETRY_DELAY):
        raise errors.CheckRunning(
            "a check is already running; retry when it has finished",
            retry_after=CHECK_RETRY_DELAY,
        )
    try:
        with parts.catalog.singleton("check") as held:  # on every replica of the catalog
            if not held:
                raise errors.CheckRunning(
                    "a check is already running on another replica; retry when it has finished",
                    retry_after=CHECK_RETRY_DELAY,
                )
            yield from _check(parts)
    finally:
        gate.leave()


def _check(parts: Parts) -> Generator[CheckEvent, None, None]:
    snapshot = _snapshot(parts)
    progress = CheckProgress(0, len(snapshot.files), 0, snapshot.file_bytes)
    hashed: dict[str, Hashed] = {}
    images: dict[str, list[Finding]] = {}
    content: list[Problem] = []
    replaced: list[str] = []
    with _Hasher(parts, snapshot) as hasher:
        yield progress
        for batch in hasher.batches():
            found: list[Problem] = []
            for item in batch:
                if isinstance(item, int):
                    progress = replace(progress, bytes_checked=progress.bytes_checked + item)
                elif isinstance(item, _HashedBlob):
                    progress = replace(progress, blobs_checked=progress.blobs_checked + 1)
                    hashed[item.digest] = item.seen
                    if _corrupt_now(parts, item.digest, item.seen, replaced):
                        found.append(_corrupt(item.digest, item.seen))
                else:
                    images = item
            yield from found
            content += found
            yield progress
    others, sized = _confirm(parts, snapshot, hashed, images)
    for problem in sized:
        yield problem
    for digest in replaced:  # replaced while Check ran: verify the new file once
        again = hash_file(parts.blobs.path(digest))
        if again.identity is not None and again.digest != digest:
            problem = _corrupt(digest, again)
            sized.append(problem)
            yield problem
    damaged = {p.subject: p.kind for p in content + sized if p.kind in DAMAGE_KINDS}
    _record_verdict(parts, damaged, checked=snapshot.files)
    problems = len(content) + len(sized)
    for problem in others:
        yield problem
    problems += len(others)
    for path in parts.blobs.stale_ingests(parts.live_replicas()):
        detail = "an ingest nobody owns; prune or the next start removes it"
        yield Problem("stale-ingest", path.name, detail)
        problems += 1
    unrecorded = _unrecorded(parts, snapshot)
    for digest in unrecorded:
        yield UnrecordedBlob(digest)
    yield CheckSummary(
        problems=problems,
        blobs_checked=len(snapshot.files),
        images_checked=snapshot.images,
        unrecorded_blobs=len(unrecorded),
    )


@dataclass(frozen=True, slots=True)
class _HashedBlob:
    digest: str
    seen: Hashed


#: what the hashing thread hands over: bytes read, a blob hashed, the image
#: findings (last)
_Item = int | _HashedBlob | dict[str, list[Finding]]
#: items handed over at most, unread: bounds what a Check nobody reads holds
_QUEUE_ITEMS = 64
#: items taken in one go when the reader lags behind
_BATCH_ITEMS = 256


class _End:
    """The hashing thread has ended (``failure``: why, when it failed)."""

    def __init__(self, failure: BaseException | None) -> None:
        self.failure = failure


class _Hasher:
    """Hashes the snapshot's files, then parses the image configs, on a thread
    of its own at a lower CPU priority, handing each result over as it comes.

    Hashing a store keeps a core busy for a while; at ``CHECK_NICENESS`` the
    calls that answer users (on the event loop and the worker threads) come
    first. Linux's nice is per thread; where it is not, Check runs as is. On
    leaving the block the thread is told to stop (it does between 1 MiB reads)
    and waited for, so a cancelled Check reads no further.
    """

    def __init__(self, parts: Parts, snapshot: Snapshot) -> None:
        self._parts = parts
        self._snapshot = snapshot
        self._items: queue.Queue[_Item | _End] = queue.Queue(_QUEUE_ITEMS)
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="imagestore-check", daemon=True)

    def __enter__(self) -> _Hasher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._ended:
            self._parts.check_gate.stopping()
            self._stop.set()
            while not isinstance(self._items.get(), _End):
                pass  # let it hand over what it holds, then end
            self._ended = True
        self._thread.join()

    def batches(self) -> Iterator[list[_Item]]:
        """What the thread hands over, a batch at a time (all that is waiting);
        raises what the thread raised."""
        while not self._ended:
            batch: list[_Item] = []
            item = self._items.get()
            while True:
                if isinstance(item, _End):
                    self._ended = True
                    if item.failure is not None:
                        raise item.failure
                    break
                batch.append(item)
                if len(batch) >= _BATCH_ITEMS:
                    break
                try:
                    item = self._items.get_nowait()
                except queue.Empty:
                    break
            if batch:
                yield batch

    def _run(self) -> None:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), CHECK_NICENESS)
        failure: BaseException | None = None
        try:
            for digest in self._snapshot.files:
                seen = hash_file(self._parts.blobs.path(digest), self._stop, self._items.put)
                if self._stop.is_set():
                    return
                self._items.put(_HashedBlob(digest, seen))
            self._items.put(
                {
                    image_id: _image_findings(self._parts, image_id, manifests)
                    for image_id, manifests in self._snapshot.manifests.items()
                }
            )
        except BaseException as exc:  # raised again on the reader's thread
            failure = exc
        finally:
            self._items.put(_End(failure))


def _corrupt_now(parts: Parts, digest: str, seen: Hashed, replaced: list[str]) -> bool:
    """A blob that did not hash to its name is corrupt if it is still the very
    file that was hashed (checked under the GC lock, briefly); one replaced
    meanwhile goes to ``replaced``, to hash again at the end; one deleted
    meanwhile (prune, remove) is no problem."""
    if seen.identity is None or seen.digest == digest:
        return False
    with parts.collector.lock:
        now = _identity_at(parts.blobs.path(digest))
    if now is None:
        return False
    if now == seen.identity or seen.error:
        return True
    replaced.append(digest)
    return False


# ---- 1. snapshot (under the locks) ------------------------------------------


def _snapshot(parts: Parts) -> Snapshot:
    found = Snapshot()
    with parts.collector.lock, parts.catalog.reading() as db:
        found.files = sorted(blob_files(parts.blobs.blob_dir))
        found.file_bytes = sum(_size_at(parts.blobs.path(digest)) for digest in found.files)
        rows = {row.digest: row for row in db.blobs()}
        found.sizes = {digest: row.size for digest, row in rows.items()}
        found.referenced = db.referenced_blobs()
        for name in db.names():
            if db.target(name.target) is None:
                found.dangling_names.append((name.name, name.target))
        images = list(db.images())
        found.images = len(images)
        for image in images:
            manifests = db.manifests_of_image(image.id)
            if not manifests:
                found.without_manifest.append(image.id)
                continue
            found.manifests[image.id] = [
                (manifest.digest, _layers(db.manifest_blobs(manifest.digest), rows))
                for manifest in manifests
            ]
    return found


def _layers(blobs: list[ManifestBlob], rows: dict[str, BlobRow]) -> list[Layer]:
    """A manifest's layers (position 0 is its config) with their rows' diff_ids."""
    layers = []
    for blob in blobs:
        if blob.position == 0:
            continue
        row = rows.get(blob.blob_digest)
        diff_id = None if row is None else row.diff_id
        layers.append(Layer(blob.blob_digest, blob.media_type, row is not None, diff_id))
    return layers


def blob_files(blob_dir: Path) -> Iterator[str]:
    """Digests of the entries of the blob directory.

    Every entry named like a digest that is not a directory counts, and is
    read as a blob: a blob is whatever its path yields.
    """
    for entry in os.scandir(blob_dir):
        if len(entry.name) == 64 and _HEX.issuperset(entry.name):
            try:
                if not entry.is_dir():
                    yield "sha256:" + entry.name
            except OSError:
                continue


# ---- 2. verify (no lock held) -----------------------------------------------


def hash_file(
    path: Path,
    stop: threading.Event | None = None,
    on_read: Callable[[int], object] | None = None,
) -> Hashed:
    """Hash one blob file in 1 MiB reads; a file that vanished has no identity.
    ``on_read`` is told each read's byte count; once ``stop`` is set, reading
    ends (the result is then incomplete: ignore it)."""
    try:
        handle = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return Hashed(None, 0, None)
    except OSError as exc:
        return Hashed(None, 0, _identity_at(path), exc.strerror or str(exc))
    buffer = bytearray(READ_CHUNK)
    view = memoryview(buffer)
    size = 0
    with handle, hashing.Sha256() as hasher:
        try:
            while count := handle.readinto(buffer):
                hasher.update(view[:count])
                size += count
                if on_read is not None:
                    on_read(count)
                if stop is not None and stop.is_set():
                    break
            identity = _identity(os.fstat(handle.fileno()))
        except OSError as exc:
            return Hashed(None, size, _identity_at(path), exc.strerror or str(exc))
        return Hashed(hasher.finish()[0], size, identity)


def _identity(status: os.stat_result) -> Identity:
    return (
        status.st_dev,
        status.st_ino,
        status.st_size,
        status.st_mtime_ns,
        status.st_ctime_ns,
    )


def _size_at(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _identity_at(path: Path) -> Identity | None:
    """The identity of what is at ``path`` now (None: nothing, or a directory)."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return None if stat.S_ISDIR(status.st_mode) else _identity(status)


def _image_findings(
    parts: Parts, image_id: str, manifests: list[tuple[str, list[Layer]]]
) -> list[Finding]:
    """An image's config must parse, and each manifest's layers must unpack to
    its diff_ids (as the snapshot recorded them; confirmed later)."""
    try:
        config = parse_config(parts.blobs.read_bytes(image_id))
    except errors.NotFound:
        detail = f"image config not on disk; {REPAIR_BLOB}"
        return [Finding(Problem("missing-blob", image_id, detail))]
    except errors.ImageStoreError as exc:
        return [Finding(Problem("bad-config", image_id, exc.message))]
    except OSError as exc:
        detail = f"cannot be read: {exc.strerror or exc}"
        return [Finding(Problem("bad-config", image_id, detail))]
    findings = []
    for manifest, layers in manifests:
        if len(layers) != len(config.diff_ids):
            problem = Problem("layer-count", manifest, "layers differ from diff_ids")
            findings.append(Finding(problem))
            continue
        for layer, diff_id in zip(layers, config.diff_ids, strict=True):
            if layer.media_type in mt.ZSTD_LAYERS or not layer.recorded:
                continue
            if layer.diff_id != diff_id:
                problem = Problem("diff-id-mismatch", layer.digest, f"unpacks to {layer.diff_id}")
                findings.append(Finding(problem, diff_id))
    return findings


def _corrupt(digest: str, seen: Hashed) -> Problem:
    if seen.error:
        return Problem("corrupt-blob", digest, f"cannot be read: {seen.error}; {REPAIR_BLOB}")
    return Problem("corrupt-blob", digest, f"content does not hash to its name; {REPAIR_BLOB}")


# ---- 3. confirm (under the locks, briefly) ----------------------------------


def _confirm(
    parts: Parts,
    snapshot: Snapshot,
    hashed: dict[str, Hashed],
    images: dict[str, list[Finding]],
) -> tuple[list[Problem], list[Problem]]:
    """The findings other than corrupt blobs that still hold: about the
    rest, and size mismatches (content)."""
    content: list[Problem] = []
    others: list[Problem] = []

    def present(digest: str) -> Identity | None:
        return _identity_at(parts.blobs.path(digest))

    with parts.collector.lock, parts.catalog.reading() as db:
        sized = {
            digest: seen.size
            for digest, seen in hashed.items()
            if seen.digest == digest and snapshot.sizes.get(digest, seen.size) != seen.size
        }
        for digest, size in db.blob_sizes(sized).items():
            if size != sized[digest] and present(digest) == hashed[digest].identity:
                detail = f"catalog says {size} bytes; a pull or load of it corrects the record"
                content.append(Problem("size-mismatch", digest, detail))

        files = set(snapshot.files)
        vanished = {d for d, seen in hashed.items() if seen.identity is None and not seen.error}
        candidates = ((snapshot.referenced | set(snapshot.sizes)) - files) | vanished
        absent = {digest for digest in candidates if present(digest) is None}
        referenced = db.referenced_among(absent)
        recorded = db.blob_sizes(absent - referenced)
        for digest in sorted(referenced):
            detail = f"referenced but not on disk; {REPAIR_BLOB}"
            others.append(Problem("missing-blob", digest, detail))
        for digest in sorted(recorded):
            detail = "recorded but not on disk (nothing uses it); prune removes the record"
            others.append(Problem("missing-blob", digest, detail))

        for name, target in snapshot.dangling_names:
            row = db.name(name)
            if row is not None and row.target == target and db.target(target) is None:
                others.append(Problem("dangling-name", name, f"target {target} unknown"))
        for image_id in snapshot.without_manifest:
            if db.image(image_id) and not db.manifests_of_image(image_id):
                others.append(Problem("image-without-manifest", image_id, "no manifest"))
        for image_id, findings in images.items():
            if findings and db.image(image_id) is not None:
                others += _still_true(db, image_id, findings, present)
    return others, content


def _still_true(
    db: CatalogReader,
    image_id: str,
    findings: list[Finding],
    present: Callable[[str], Identity | None],
) -> list[Problem]:
    """An image's findings that hold now (the image still exists)."""
    manifests = {manifest.digest for manifest in db.manifests_of_image(image_id)}
    confirmed = []
    for finding in findings:
        problem = finding.problem
        if problem.kind == "missing-blob":
            holds = present(image_id) is None
        elif problem.kind == "layer-count":
            holds = problem.subject in manifests
        elif problem.kind == "diff-id-mismatch":  # a row's diff_id may have been filled in
            row = db.blob(problem.subject)
            holds = row is not None and row.diff_id != finding.expected
            if holds and row is not None:
                problem = Problem(problem.kind, problem.subject, f"unpacks to {row.diff_id}")
        else:  # bad-config: the config is content-addressed, still what was parsed
            holds = True
        if holds:
            confirmed.append(problem)
    return confirmed


def _unrecorded(parts: Parts, snapshot: Snapshot) -> tuple[str, ...]:
    """Blob files of the snapshot that still have no record and no lease (an
    ingest being committed is leased from before its rename to after its record)."""
    candidates = set(snapshot.files) - set(snapshot.sizes)
    if not candidates:
        return ()
    with parts.collector.lock, parts.catalog.reading() as db:
        recorded = set(db.blob_sizes(candidates))
        leased = db.leased(parts.replica.live(db)) | parts.leases.protected()
        return tuple(
            sorted(
                digest
                for digest in candidates - recorded - leased
                if _identity_at(parts.blobs.path(digest)) is not None
            )
        )


def _record_verdict(parts: Parts, damaged: dict[str, str], checked: list[str]) -> None:
    """Mark ``damaged`` (digest -> problem kind) so that the next pull or load
    writes those blobs again; unmark the other ``checked`` blobs, and the marks
    of blobs that are neither on disk nor recorded."""
    verified = set(checked)
    with parts.catalog.transaction() as db:  # marks are few: look at those only
        cleared = [
            digest
            for digest in db.damaged()
            if digest not in damaged
            and (digest in verified or (db.blob(digest) is None and not parts.blobs.exists(digest)))
        ]
        db.clear_damaged(cleared)
        db.mark_damaged(damaged, now_ns())
