"""Check does not block the server, and runs one at a time.

Check hashes blob files with no lock held. To hold one in progress for as long
as a test needs, a test puts a FIFO in the blob directory under a digest-like
name: Check reads it like any blob file (in digest order, so ``000…0`` is read
first and ``fff…f`` last) and blocks in it until the test writes to it and
closes it. Opening the FIFO's other end is the event that says Check is there.

Bounds enforced while a Check is held in progress:

- health and an Inspect of the seeded image answer within 2 s each (the
  watchdog), and so do ListImages, Tag, Remove and Prune;
- a second Check is refused at once with ABORTED, ErrorInfo reason CHECK_RUNNING
  and a google.rpc.RetryInfo of ``CHECK_RETRY_DELAY`` (5 s);
- the server's RSS grows by at most 64 MiB, by at most 8 threads and 16 fds;
- the held Check then reports exactly what was there: the FIFO's bytes as a
  corrupt blob; no blob that a Remove deleted meanwhile; a corrupt blob that was
  replaced while it was being hashed only if the replacement is corrupt too (a
  blob is confirmed corrupt as soon as it is hashed, so that is when it counts).

Afterwards the FIFOs are gone and the store is exactly as before (only the
seed, nothing in ingest, a Check finds nothing).
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from imagestore.store.check import CHECK_RETRY_DELAY
from imagestore.v1 import imagestore_pb2 as pb
from tests.archives import ImageSpec, docker_archive, tar_of
from tests.hostile.conftest import SEED, Target, load_archive, retry_delay, rpc_error

MiB = 1 << 20
FIRST = "0" * 64  # read first: Check blocks before it has hashed anything else
LAST = "f" * 64  # read last: Check blocks after it has hashed everything else
#: what the tests write into a FIFO: not what its name says
GARBAGE = b"not the content its name promises\n" * 1000
#: how long a test waits for Check to reach a FIFO (it is there in well under a second)
REACH_TIMEOUT = 60.0


def blob_dir(target: Target) -> Path:
    return target.server.root / "blobs" / "sha256"


def blob_count(target: Target) -> int:
    return sum(1 for _ in blob_dir(target).iterdir())


class Fifo:
    """A FIFO in the blob directory, named like a blob, that holds Check."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: int | None = None

    def reached(self) -> None:
        """Return once a reader (Check) has opened the FIFO; fail after a while."""
        opened: list[int] = []
        thread = threading.Thread(target=lambda: opened.append(os.open(self.path, os.O_WRONLY)))
        thread.start()
        thread.join(REACH_TIMEOUT)
        if not opened:  # release our own thread before failing
            reader = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            thread.join()
            os.close(opened[0])
            os.close(reader)
            pytest.fail(f"Check never opened {self.path.name} in {REACH_TIMEOUT:.0f} s")
        self._writer = opened[0]

    def release(self, data: bytes = GARBAGE) -> None:
        """Write ``data``, then close: the reader sees it and the end of the file."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(writer, view) :]
        finally:
            os.close(writer)


@contextmanager
def fifo_blob(target: Target, name: str) -> Iterator[Fifo]:
    """A FIFO blob for the block. Whoever still waits in it (a failed test) is
    released, and it is removed at the end, so the store is left as it was."""
    fifo = Fifo(blob_dir(target) / name)
    os.mkfifo(fifo.path, 0o600)
    try:
        yield fifo
    finally:
        fifo.release(b"")
        try:  # a Check waiting in open() gets an end of file at once
            os.close(os.open(fifo.path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as exc:
            if exc.errno not in (errno.ENXIO, errno.ENOENT):
                raise
        fifo.path.unlink(missing_ok=True)


def problems(report: list[pb.CheckResponse]) -> list[tuple[str, str]]:
    """The problems of a whole Check stream."""
    return [(r.problem.kind, r.problem.subject) for r in report if r.HasField("problem")]


def summary(report: list[pb.CheckResponse]) -> pb.CheckSummary:
    """The summary a whole Check stream ends with."""
    assert report[-1].WhichOneof("response") == "summary"
    return report[-1].summary


def seed_layer(target: Target) -> str:
    details = target.stub.Inspect(pb.InspectRequest(image=SEED), timeout=30)
    (layer,) = details.layers
    return str(layer.digest)


def test_the_server_answers_while_check_runs_and_a_second_check_is_aborted(
    target: Target,
) -> None:
    stub = target.stub
    files = blob_count(target)
    with target.watch() as seen, fifo_blob(target, FIRST) as fifo:
        first = stub.Check(pb.CheckRequest(), timeout=120)  # a stream: sent at once
        fifo.reached()  # Check holds no lock now: it is reading a blob

        with pytest.raises(grpc.RpcError) as refused:
            list(stub.Check(pb.CheckRequest(), timeout=10))
        code, reason, _ = rpc_error(refused.value)
        assert (code, reason) == (grpc.StatusCode.ABORTED, "CHECK_RUNNING")
        assert "a check is already running" in str(refused.value.details())
        assert retry_delay(refused.value) == CHECK_RETRY_DELAY

        listed = stub.ListImages(pb.ListImagesRequest(all=True), timeout=10).images
        assert [image.id for image in listed] == [target.seed_id]
        stub.Tag(pb.TagRequest(source=SEED, target="example/other:1"), timeout=10)
        stub.Remove(pb.RemoveRequest(images=["example/other:1"]), timeout=10)
        assert not stub.Prune(pb.PruneRequest(), timeout=10).deleted_image_ids
        assert not first.done()  # still held in the FIFO: the calls above did not wait

        fifo.release(GARBAGE)
        report = list(first)
    seen.assert_within(rss=64 * MiB, threads=8, fds=16)
    assert problems(report) == [("corrupt-blob", "sha256:" + FIRST)]
    assert summary(report).blobs_checked == files + 1
    assert summary(report).images_checked == 1
    target.assert_clean()  # the FIFO is gone: the store is as before, and Check may run again


def test_blobs_removed_while_check_runs_are_not_reported_missing(target: Target) -> None:
    stub = target.stub
    victim = ImageSpec(tags=["example/victim:1"], layers=[tar_of({"victim": b"v" * 4096})])
    load_archive(stub, docker_archive(victim))
    before = set(os.listdir(blob_dir(target)))
    with target.watch() as seen, fifo_blob(target, FIRST) as fifo:
        first = stub.Check(pb.CheckRequest(), timeout=120)
        fifo.reached()  # the snapshot is taken: it lists the victim's blobs

        removed = stub.Remove(pb.RemoveRequest(images=["example/victim:1"]), timeout=10)
        assert list(removed.results[0].deleted_image_ids) == [victim.image_id]
        gone = before - set(os.listdir(blob_dir(target)))
        assert len(gone) == 3  # its layer, config and manifest, before Check reads them

        fifo.release(GARBAGE)
        report = list(first)
    seen.assert_within(rss=64 * MiB, threads=8, fds=16)
    assert summary(report).images_checked == 2  # the victim was in the snapshot
    assert summary(report).blobs_checked == len(before) + 1
    assert problems(report) == [("corrupt-blob", "sha256:" + FIRST)]
    target.assert_clean()


@pytest.mark.parametrize("repaired", [True, False], ids=["repaired", "still-corrupt"])
def test_a_blob_found_corrupt_is_reported_only_if_it_still_is(
    target: Target, repaired: bool
) -> None:
    stub = target.stub
    layer = seed_layer(target)
    path = blob_dir(target) / layer.removeprefix("sha256:")
    good = path.read_bytes()
    aside = path.with_name("good.tmp")  # not named like a blob: Check skips it
    path.rename(aside)
    os.mkfifo(path, 0o600)  # the layer itself holds Check while it is hashed
    fifo = Fifo(path)
    try:
        with target.watch() as seen:
            first = stub.Check(pb.CheckRequest(), timeout=120)
            fifo.reached()  # Check is hashing the layer
            # as an ingest does: a new file renamed over the one being hashed
            if repaired:
                aside.replace(path)
            else:
                fresh = path.with_name("fresh.tmp")
                fresh.write_bytes(b"bit rot" + good[7:])
                fresh.replace(path)
            fifo.release(GARBAGE)  # what was hashed does not match: it was replaced
            report = list(first)
        seen.assert_within(rss=64 * MiB, threads=8, fds=16)
        found = problems(report)
        if repaired:
            assert found == []
        else:
            assert found == [("corrupt-blob", layer)]
    finally:
        fifo.release(b"")
        if aside.exists():
            aside.replace(path)
        elif path.read_bytes() != good:
            path.unlink()
            path.write_bytes(good)
        path.chmod(0o444)
    target.assert_clean()
