"""The store's results in the reshaped API's terms: names in both forms, the
children of named indexes, DiskUsage pages, and Check as a stream that can
be stopped."""

from __future__ import annotations

import os
import threading

import pytest

from imagestore import errors
from imagestore.oci import mediatypes as mt
from imagestore.oci.platforms import Platform
from imagestore.store.models import (
    CheckProgress,
    CheckSummary,
    IndexMember,
    Name,
    Problem,
    UnrecordedBlob,
)
from imagestore.store.store import Store
from tests.store.builders import build_image, build_index, layer_tar
from tests.tools import feed_until_closed

ABSENT = "sha256:" + "e" * 64


def test_a_listed_image_carries_the_named_index_with_every_child(store: Store) -> None:
    amd = build_image(store, [layer_tar({"a": b"amd"})], architecture="amd64")
    arm = build_image(store, [layer_tar({"a": b"arm"})], architecture="arm", variant="v7")
    index = build_index(
        store,
        [(amd, "linux/amd64"), (arm, "linux/arm/v7")],
        names=["multi:1"],
        absent=[(ABSENT, "linux/s390x")],
    )
    plain = build_image(store, [layer_tar({"a": b"plain"})], names=["plain:1"])
    rows = {row.id: row for row in store.list_images().images}
    assert rows[plain.image_id].indexes == ()
    (named,) = rows[amd.image_id].indexes
    assert rows[arm.image_id].indexes == (named,)
    assert named.name == Name("multi:1", "docker.io/library/multi:1")
    assert named.index.digest == index.target_digest
    assert named.index.media_type == mt.OCI_INDEX
    assert named.index.size == store.blob_size(index.target_digest)
    assert [(c.platform, c.manifest.digest, c.image_id) for c in named.children] == [
        (Platform("linux", "amd64"), amd.manifest.digest, amd.image_id),
        (Platform("linux", "arm", "v7"), arm.manifest.digest, arm.image_id),
        (Platform("linux", "s390x"), ABSENT, None),
    ]
    assert named.children[2] == IndexMember(
        Platform("linux", "s390x"), named.children[2].manifest, None
    )
    assert store.inspect("multi:1", platform="linux/arm/v7").summary.indexes == (named,)


def test_names_come_back_in_both_forms(store: Store) -> None:
    built = build_image(store, [layer_tar({"a": b"x"})], names=["example/app:1"])
    result = store.tag("example/app:1", "registry.example.com/app:2")
    assert result.target == Name("registry.example.com/app:2", "registry.example.com/app:2")
    (row,) = store.list_images().images
    assert row.repo_tags == (
        Name("example/app:1", "docker.io/example/app:1"),
        Name("registry.example.com/app:2", "registry.example.com/app:2"),
    )
    usage = store.disk_usage()
    assert usage.images[0].repo_tags == row.repo_tags
    (removed,) = store.remove(["example/app:1"])
    assert removed.untagged == (Name("example/app:1", "docker.io/example/app:1"),)
    pruned = store.prune(all_images=True)
    assert pruned.deleted_images == (built.image_id,)
    assert pruned.untagged == (Name("registry.example.com/app:2", "registry.example.com/app:2"),)


def test_disk_usage_pages_over_the_images_with_the_totals_on_every_page(store: Store) -> None:
    built = []
    for n in range(5):
        created = f"2024-01-01T00:00:0{n}Z"
        layers = [layer_tar({"a": bytes([n])})]
        built.append(build_image(store, layers, names=[f"app:{n}"], created=created))
    whole = store.disk_usage()
    assert whole.next_page_token == ""
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = store.disk_usage(page_size=2, page_token=token)
        pages += 1
        assert (page.total_size, page.image_count, page.blob_count, page.reclaimable) == (
            whole.total_size, whole.image_count, whole.blob_count, whole.reclaimable,
        )  # fmt: skip
        seen += [image.id for image in page.images]
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == [image.id for image in whole.images]
    assert seen == [b.image_id for b in reversed(built)]  # newest first
    with pytest.raises(errors.PageTokenInvalid):
        store.disk_usage(page_token="bogus")
    listing_token = store.list_images(page_size=1).next_page_token
    with pytest.raises(errors.PageTokenInvalid):
        store.disk_usage(page_token=listing_token)  # another listing's token
    with pytest.raises(errors.PageSizeInvalid):
        store.disk_usage(page_size=-1)


def test_check_streams_progress_then_findings_then_its_summary(store: Store) -> None:
    built = build_image(store, [layer_tar({"a": b"a" * 5000})], names=["example/app:1"])
    layer = built.layers[0].digest
    path = store._parts.blobs.path(layer)
    os.chmod(path, 0o600)
    path.write_bytes(b"not the layer")
    stray = b"left by a crash"
    from hashlib import sha256

    unrecorded = "sha256:" + sha256(stray).hexdigest()
    store._parts.blobs.path(unrecorded).write_bytes(stray)
    events = list(store.check_stream())
    assert isinstance(events[0], CheckProgress)
    assert events[0].blobs_checked == 0
    assert events[0].blobs_total == 4  # config, manifest, layer, the stray file
    progress = [e for e in events if isinstance(e, CheckProgress)]
    assert progress[-1].blobs_checked == progress[-1].blobs_total == 4
    assert progress[-1].bytes_checked == progress[-1].bytes_total
    problems = [e for e in events if isinstance(e, Problem)]
    assert [(p.kind, p.subject) for p in problems] == [("corrupt-blob", layer)]
    # the corrupt blob is reported while hashing, before the last progress
    assert events.index(problems[0]) < events.index(progress[-1])
    assert [e for e in events if isinstance(e, UnrecordedBlob)] == [UnrecordedBlob(unrecorded)]
    assert events[-1] == CheckSummary(
        problems=1, blobs_checked=4, images_checked=1, unrecorded_blobs=1
    )
    assert not events[-1].ok
    assert store.damaged() == {layer: "corrupt-blob"}


def test_closing_a_check_stops_its_hashing_and_frees_the_next_one(store: Store) -> None:
    build_image(store, [layer_tar({"a": b"a"})], names=["example/app:1"])
    fifo = store._parts.blobs.path("sha256:" + "0" * 64)  # hashed first: digest order
    os.mkfifo(fifo)
    writer: list[int] = []
    opened = threading.Event()

    def open_writer() -> None:  # returns once the check opened the FIFO to hash it
        writer.append(os.open(fifo, os.O_WRONLY))
        opened.set()

    thread = threading.Thread(target=open_writer)
    thread.start()
    running = store.check_stream()
    assert isinstance(next(running), CheckProgress)
    assert opened.wait(30)
    thread.join()
    with pytest.raises(errors.CheckRunning):
        next(store.check_stream())  # a second check while one runs

    closing = threading.Thread(target=running.close)
    closing.start()
    stopped = feed_until_closed(writer[0])  # each write wakes the hashing
    closing.join()
    assert stopped  # the FIFO never ended: the hashing stopped mid-file
    os.unlink(fifo)
    report = store.check()  # the gate is free again, and this one runs to the end
    assert report.ok
    assert report.blobs_checked == 3
