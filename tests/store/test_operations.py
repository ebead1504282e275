"""Tag, remove, list, inspect, history, prune and disk usage, with Docker's semantics
(see docker-image-semantics: §1 ls, §2 inspect, §3 history, §4 tag/rm, §5 prune/df)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from datetime import UTC, datetime, timedelta

import pytest

from imagestore import errors
from imagestore.oci import mediatypes as mt
from imagestore.oci.manifests import Descriptor
from imagestore.oci.references import parse_reference
from imagestore.store.filters import parse_list_filters, parse_prune_filters
from imagestore.store.models import Name, RemoveResult
from imagestore.store.records import NameRow, TargetRow
from imagestore.store.store import Store
from tests.store.builders import Built, build_image, layer_tar
from tests.store.conftest import OpenStore

BASE = layer_tar({"etc/os-release": b"ID=test\n", "bin/sh": b"\x7fELF" + bytes(2000)})


def app(store: Store, content: bytes, *names: str, **options: object) -> Built:
    return build_image(store, [BASE, layer_tar({"app": content})], names=names, **options)  # type: ignore[arg-type]


def listed(store: Store, *filters: str, show_all: bool = False) -> list[str]:
    page = store.list_images(parse_list_filters(filters), show_all=show_all)
    return [image.id for image in page.images]


def files(store: Store) -> set[str]:
    return set(store._parts.blobs.digests())


# ---- tag -------------------------------------------------------------------


def test_tag_moves_the_name_and_the_old_image_becomes_dangling(store: Store) -> None:
    old = app(store, b"v1", "web:latest")
    new = app(store, b"v2", "web:next")
    result = store.tag("web:next", "web:latest")
    assert result.displaced == (old.image_id,)
    assert store.inspect("web:latest").summary.id == new.image_id
    assert listed(store, "dangling=true") == [old.image_id]
    assert old.image_id not in listed(store)  # dangling images are hidden by default
    assert old.image_id in listed(store, show_all=True)


def test_tag_by_id_prefix_and_records_last_tag_time(store: Store) -> None:
    image = app(store, b"x")
    assert store.inspect(image.image_id).last_tag_time is None
    store.tag(image.image_id[7:19], "localhost:5000/team/x:1")
    details = store.inspect("localhost:5000/team/x:1")
    assert details.summary.repo_tags == (
        Name("localhost:5000/team/x:1", "localhost:5000/team/x:1"),
    )
    assert details.last_tag_time is not None


def test_tag_rejects_what_docker_rejects(store: Store) -> None:
    app(store, b"x", "x:1")
    for target in ("x@sha256:" + "a" * 64, "X:1", "sha256"):
        with pytest.raises(errors.InvalidArgument):
            store.tag("x:1", target)
    with pytest.raises(errors.NotFound, match="No such image: nothere:latest"):
        store.tag("nothere", "x:2")


# ---- resolve ---------------------------------------------------------------


def test_short_ids_resolve_and_ambiguous_prefixes_name_the_candidates(store: Store) -> None:
    images = [app(store, str(i).encode()) for i in range(40)]
    image = images[0]
    assert store.resolve_image(image.image_id[7:11]) in {i.image_id for i in images}
    assert store.resolve_image(image.image_id) == image.image_id
    assert store.resolve_image(image.image_id[7:]) == image.image_id
    prefixes: dict[str, list[str]] = {}
    for built in images:
        prefixes.setdefault(built.image_id[7], []).append(built.image_id)
    shared = next(p for p, ids in prefixes.items() if len(ids) > 1)
    with pytest.raises(errors.InvalidArgument, match="ambiguous image ID prefix") as failure:
        store.resolve_image("sha256:" + shared)
    assert failure.value.metadata["candidates"]
    with pytest.raises(errors.NotFound):
        store.resolve_image("abc")  # shorter than 4 hex: a name, and unknown


def named(familiar: str) -> Name:
    """A name in both forms, from its familiar one."""
    return Name(familiar, str(parse_reference(familiar, default_tag=False)))


# ---- remove ----------------------------------------------------------------


def test_removing_one_of_several_names_only_untags(store: Store) -> None:
    image = app(store, b"x", "a:1", "b:1")
    assert store.remove(["a:1"]) == [RemoveResult("a:1", (named("a:1"),))]
    assert store.inspect("b:1").summary.id == image.image_id


def test_removing_the_last_name_deletes_the_image_and_frees_its_own_blobs(store: Store) -> None:
    keep = app(store, b"keep", "keep:1")
    gone = app(store, b"gone", "gone:1")
    before = files(store)
    (result,) = store.remove(["gone:1"])
    assert result.untagged == (named("gone:1"),)
    assert result.deleted_images == (gone.image_id,)
    freed = set(result.freed_blobs)
    assert freed == {gone.manifest.digest, gone.layers[1].digest}
    assert gone.layers[0].digest == keep.layers[0].digest  # the shared base layer
    assert files(store) == before - freed - {gone.image_id}
    assert store.inspect("keep:1").summary.id == keep.image_id
    assert store.check().ok


def test_remove_by_id_with_two_repositories_needs_force(store: Store) -> None:
    image = app(store, b"x", "one:1", "two:1")
    (refused,) = store.remove([image.image_id])
    assert isinstance(refused.error, errors.RemoveConflict)
    assert refused.untagged == ()
    assert refused.deleted_images == refused.freed_blobs == ()
    assert str(refused.error) == (
        f"conflict: unable to delete {image.image_id[7:19]} (must be forced)"
        " - image is referenced in multiple repositories"
    )
    (result,) = store.remove([image.image_id], force=True)
    assert result.untagged == (named("one:1"), named("two:1"))
    assert result.deleted_images == (image.image_id,)
    assert listed(store, show_all=True) == []


def test_remove_by_id_with_two_tags_of_one_repository_needs_force(store: Store) -> None:
    image = app(store, b"x", "one:1", "one:2")
    (result,) = store.remove([image.image_id[7:19]])
    assert isinstance(result.error, errors.FailedPrecondition)
    assert "must be forced" in str(result.error)


def test_remove_by_id_with_a_single_tag_deletes(store: Store) -> None:
    image = app(store, b"x", "one:1")
    (result,) = store.remove([image.image_id[7:19]])
    assert result.untagged == (named("one:1"),)
    assert result.deleted_images == (image.image_id,)


def test_removing_the_last_tag_of_a_repository_drops_its_digest_references(store: Store) -> None:
    image = app(store, b"x", "web:1")
    digest_name = f"web@{image.manifest.digest}"
    with store.lease() as lease:
        store.commit_target(lease, image.manifest, [parse_reference(digest_name)])
    assert store.inspect("web:1").summary.repo_digests == (named(digest_name),)
    (result,) = store.remove(["web:1"])
    assert result.untagged == (named("web:1"), named(digest_name))
    assert result.deleted_images == (image.image_id,)


def test_remove_by_digest_reference(store: Store) -> None:
    image = app(store, b"x")
    with store.lease() as lease:
        store.commit_target(
            lease, image.manifest, [parse_reference(f"web@{image.manifest.digest}")]
        )
    (result,) = store.remove([f"web@{image.manifest.digest}"])
    assert result.untagged == (named(f"web@{image.manifest.digest}"),)
    assert result.deleted_images == (image.image_id,)


def test_an_image_pulled_by_digest_is_not_dangling(store: Store) -> None:
    image = app(store, b"x")
    with store.lease() as lease:
        store.commit_target(
            lease, image.manifest, [parse_reference(f"web@{image.manifest.digest}")]
        )
    assert listed(store, "dangling=true") == []
    assert listed(store) == [image.image_id]
    assert store.prune().deleted_images == ()


def test_remove_unknown_is_not_found(store: Store) -> None:
    (result,) = store.remove(["ghost"])
    assert isinstance(result.error, errors.ImageNotFound)
    assert str(result.error) == "No such image: ghost:latest"


def test_remove_applies_each_item_on_its_own(store: Store) -> None:
    shared = app(store, b"shared", "one:1", "two:1")
    gone = app(store, b"gone", "gone:1")
    results = store.remove(["gone:1", "ghost", shared.image_id, "one:1"], force=False)
    assert [r.item for r in results] == ["gone:1", "ghost", shared.image_id, "one:1"]
    assert results[0].deleted_images == (gone.image_id,)
    assert results[0].error is None
    assert isinstance(results[1].error, errors.ImageNotFound)
    assert isinstance(results[2].error, errors.RemoveConflict)
    assert results[3].untagged == (named("one:1"),)
    assert results[3].error is None
    assert listed(store, show_all=True) == [shared.image_id]  # "two:1" still names it
    # force only settles conflicts: an unknown name still fails
    (forced,) = store.remove(["ghost"], force=True)
    assert isinstance(forced.error, errors.ImageNotFound)


# ---- list ------------------------------------------------------------------


def test_list_is_newest_first_with_all_names(store: Store) -> None:
    old = app(store, b"1", "a:1", created="2020-01-01T00:00:00Z")
    new = app(store, b"2", "b:1", "b:2", created="2023-01-01T00:00:00Z")
    mid = app(store, b"3", "c:1", created="2021-06-01T00:00:00.5Z")
    page = store.list_images()
    assert [i.id for i in page.images] == [new.image_id, mid.image_id, old.image_id]
    assert page.images[0].repo_tags == (named("b:1"), named("b:2"))
    assert page.images[0].created == datetime(2023, 1, 1, tzinfo=UTC)
    assert page.next_page_token == ""


def test_list_filters_by_label_and_ands_them(store: Store) -> None:
    both = app(store, b"1", "a:1", labels={"team": "x", "tier": "web"})
    one = app(store, b"2", "b:1", labels={"team": "x"})
    other = app(store, b"3", "c:1", labels={"team": "y"})
    app(store, b"4", "d:1")
    assert set(listed(store, "label=team")) == {both.image_id, one.image_id, other.image_id}
    assert listed(store, "label=team=x", "label=tier") == [both.image_id]
    assert listed(store, "label=team=X") == []


def test_list_before_and_since_compare_created(store: Store) -> None:
    a = app(store, b"1", "a:1", created="2020-01-01T00:00:00Z")
    b = app(store, b"2", "b:1", created="2021-01-01T00:00:00Z")
    c = app(store, b"3", "c:1", created="2022-01-01T00:00:00Z")
    assert listed(store, "before=c:1") == [b.image_id, a.image_id]
    assert listed(store, "since=a:1") == [c.image_id, b.image_id]
    assert listed(store, "since=a:1", "before=c:1") == [b.image_id]
    with pytest.raises(errors.NotFound):
        listed(store, "before=ghost:1")


def test_list_reference_globs_match_familiar_and_canonical_and_or(store: Store) -> None:
    glibc = app(store, b"1", "busybox:glibc")
    uclibc = app(store, b"2", "busybox:uclibc")
    other = app(store, b"3", "localhost:5000/team/app:1")
    assert set(listed(store, "reference=busy*:*libc")) == {glibc.image_id, uclibc.image_id}
    assert listed(store, "reference=docker.io/library/busybox:glibc") == [glibc.image_id]
    assert set(listed(store, "reference=busybox")) == {uclibc.image_id, glibc.image_id}
    assert set(listed(store, "reference=busybox:glibc", "reference=*/*/app:*")) == {
        glibc.image_id,
        other.image_id,
    }
    assert listed(store, "reference=*") != []  # familiar "busybox" has no slash
    with pytest.raises(errors.InvalidArgument, match="syntax error in pattern"):
        listed(store, "reference=[")


def test_list_rejects_unknown_filters_like_docker(store: Store) -> None:
    with pytest.raises(errors.InvalidArgument, match="invalid filter 'color'"):
        parse_list_filters(["color=red"])
    with pytest.raises(errors.InvalidArgument, match=r"invalid filter 'dangling=maybe'"):
        parse_list_filters(["dangling=maybe"])
    with pytest.raises(errors.InvalidArgument, match=r"invalid filter 'dangling=\[true false\]'"):
        parse_list_filters(["dangling=true", "dangling=false"])


def test_list_pages_by_keyset(store: Store) -> None:
    built = [
        app(store, str(i).encode(), f"p:{i}", created=f"2020-01-{i + 1:02d}T00:00:00Z")
        for i in range(5)
    ]
    expected = [b.image_id for b in reversed(built)]
    seen: list[str] = []
    token = ""
    while True:
        page = store.list_images(page_size=2, page_token=token)
        seen += [i.id for i in page.images]
        if not page.next_page_token:
            break
        token = page.next_page_token
    assert seen == expected
    exact = store.list_images(page_size=5)
    assert len(exact.images) == 5
    assert exact.next_page_token == ""  # no empty last page
    with pytest.raises(errors.InvalidArgument, match="invalid page_token"):
        store.list_images(page_token="garbage!")
    first = store.list_images(page_size=2)  # a token is bound to its filters and all
    assert store.list_images(page_size=2, page_token=first.next_page_token).images
    for other in (
        {"filters": parse_list_filters(["reference=p:*"])},
        {"show_all": True},
    ):
        with pytest.raises(errors.PageTokenInvalid, match="other filters") as refused:
            store.list_images(page_size=2, page_token=first.next_page_token, **other)
        assert refused.value.reason == errors.Reason.PAGE_TOKEN_INVALID
    with pytest.raises(errors.InvalidArgument):
        store.list_images(page_size=-1)


# ---- inspect and history -----------------------------------------------------


def test_inspect_reports_what_docker_shows(store: Store) -> None:
    image = app(store, b"x", "web:1", labels={"a": "b"})
    details = store.inspect("web:1", platform="linux/amd64")
    assert details.summary.id == image.image_id
    assert details.summary.platform.architecture == "amd64"
    assert details.config["Cmd"] == ["/bin/sh"]
    assert details.config["Labels"] == {"a": "b"}
    assert details.manifest_digest == image.manifest.digest
    assert details.manifest_media_type == mt.OCI_MANIFEST
    assert [layer.digest for layer in details.layers] == [layer.digest for layer in image.layers]
    assert len(details.diff_ids) == 2
    assert details.summary.size == len(BASE) + len(layer_tar({"app": b"x"}))
    assert details.summary.content_size == sum(
        store._parts.blobs.size(d) or 0
        for d in [image.manifest.digest, image.image_id, *(x.digest for x in image.layers)]
    )
    assert json.loads(details.raw_config)["config"]["Labels"] == {"a": "b"}
    with pytest.raises(errors.NotFound, match="no variant for platform linux/arm64"):
        store.inspect("web:1", platform="linux/arm64")


def test_history_is_newest_first_and_empty_layers_have_no_size(store: Store) -> None:
    history = [
        {"created": "2024-01-01T00:00:00Z", "created_by": "ADD base"},
        {"created": "2024-01-02T00:00:00Z", "created_by": "ENV A=1", "empty_layer": True},
        {"created": "2024-01-03T00:00:00Z", "created_by": "COPY app", "comment": "c"},
    ]
    image = app(store, b"x", "h:1", history=history)
    rows = store.history("h:1")
    assert [r.created_by for r in rows] == ["COPY app", "ENV A=1", "ADD base"]
    assert (rows[1].size, rows[1].empty_layer, rows[1].layer_digest) == (0, True, None)
    assert rows[0].layer_digest == image.layers[1].digest
    assert rows[0].size == len(layer_tar({"app": b"x"}))
    assert rows[0].comment == "c"


# ---- prune and disk usage ------------------------------------------------------


def test_prune_removes_dangling_only_by_default(store: Store) -> None:
    dangling = app(store, b"old", "web:1")
    kept = app(store, b"new", "web:1")
    result = store.prune()
    assert result.deleted_images == (dangling.image_id,)
    assert listed(store, show_all=True) == [kept.image_id]
    assert result.untagged == ()
    assert dangling.layers[1].digest in result.deleted_blobs
    assert kept.layers[0].digest not in result.deleted_blobs  # shared base stays
    assert store.check().ok


def test_prune_dry_run_reports_exactly_what_prune_does(store: Store) -> None:
    app(store, b"old", "web:1")
    app(store, b"new", "web:1")
    before = files(store)
    sizes = {d: store._parts.blobs.size(d) for d in before}
    planned = store.prune(dry_run=True)
    assert files(store) == before  # nothing deleted
    assert listed(store, "dangling=true") != []
    done = store.prune()
    assert done.deleted_images == planned.deleted_images
    assert done.deleted_blobs == planned.deleted_blobs
    assert done.reclaimed == planned.reclaimed == sum(sizes[d] or 0 for d in done.deleted_blobs)
    assert files(store) == before - set(done.deleted_blobs)


def test_prune_all_removes_every_matching_image(store: Store) -> None:
    app(store, b"1", "a:1", labels={"keep": "yes"})
    gone = app(store, b"2", "b:1", labels={"env": "ci"})
    result = store.prune(parse_prune_filters(["label!=keep"]), all_images=True)
    assert result.deleted_images == (gone.image_id,)
    assert result.untagged == (named("b:1"),)
    result = store.prune(parse_prune_filters(["label=keep=no"]), all_images=True)
    assert result.deleted_images == ()


def test_prune_until_uses_the_time_stored_locally(store: Store) -> None:
    app(store, b"old", "web:1", created="2001-01-01T00:00:00Z")  # built long ago…
    app(store, b"new", "web:1")
    later = datetime.now(tz=UTC) + timedelta(hours=1)
    # …but stored just now: an until in the past keeps it.
    assert store.prune(parse_prune_filters(["until=24h"])).deleted_images == ()
    until = later.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert len(store.prune(parse_prune_filters([f"until={until}"])).deleted_images) == 1


def test_a_second_prune_while_one_runs_is_aborted(store: Store) -> None:
    with store._parts.catalog.singleton("prune") as held:
        assert held
        with pytest.raises(errors.Aborted, match="a prune operation is already running"):
            store.prune()
    assert store.prune().dry_run is False  # released


def test_prune_removes_unreferenced_blobs_and_stale_ingests(store: Store) -> None:
    with store.lease() as lease:
        stray = store.put_blob(lease, b"orphan", "application/octet-stream")
    # The lease ended and the blob was its own: it is already gone.
    assert stray.digest not in files(store)
    (store._parts.blobs.ingest_dir / "leftover").write_bytes(b"x" * 100)
    result = store.prune()
    assert result.stale_ingests == 1
    assert result.reclaimed >= 100
    assert list(store._parts.blobs.ingest_dir.iterdir()) == []


def test_disk_usage_splits_shared_and_unique_and_reclaimable_is_the_prune_dry_run(
    store: Store,
) -> None:
    a = app(store, b"a", "a:1")
    app(store, b"b", "b:1")
    app(store, b"c", "a:1")  # a is now dangling
    usage = store.disk_usage()
    by_id = {u.id: u for u in usage.images}
    base_size = store._parts.blobs.size(a.layers[0].digest) or 0
    assert by_id[a.image_id].shared_size == base_size
    assert by_id[a.image_id].unique_size == by_id[a.image_id].content_size - base_size
    assert usage.total_size == sum(store._parts.blobs.size(d) or 0 for d in files(store))
    assert usage.reclaimable == store.prune(dry_run=True).reclaimed > 0
    assert usage.reclaimable == by_id[a.image_id].unique_size


# ---- content checks ------------------------------------------------------------


def test_a_layer_that_does_not_match_the_config_diff_id_is_refused(store: Store) -> None:
    with store.lease() as lease:
        good = app(store, b"x", commit=False, lease=lease)
        config = json.loads(store._parts.blobs.read_bytes(good.image_id))
        config["rootfs"]["diff_ids"][1] = "sha256:" + "0" * 64
        bad_config = store.put_blob(lease, json.dumps(config).encode(), mt.OCI_CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {
                "mediaType": mt.OCI_CONFIG,
                "digest": bad_config.digest,
                "size": bad_config.size,
            },
            "layers": [layer.to_json() for layer in good.layers],
        }
        blob = store.put_blob(lease, json.dumps(manifest).encode(), mt.OCI_MANIFEST)
        with pytest.raises(errors.DigestMismatch, match="unpacks to"):
            store.commit_target(
                lease,
                Descriptor(mt.OCI_MANIFEST, blob.digest, blob.size),
                [parse_reference("bad:1")],
            )
    assert listed(store, show_all=True) == []
    assert files(store) == set()  # the failed operation's blobs went with its lease


def test_check_reports_a_corrupted_blob_and_a_missing_one(store: Store) -> None:
    image = app(store, b"x", "web:1")
    assert store.check().ok
    layer = store._parts.blobs.path(image.layers[1].digest)
    layer.chmod(0o644)
    layer.write_bytes(b"tampered")
    store._parts.blobs.path(image.layers[0].digest).unlink()
    report = store.check()
    kinds = {(p.kind, p.subject) for p in report.problems}
    assert ("corrupt-blob", image.layers[1].digest) in kinds
    assert ("missing-blob", image.layers[0].digest) in kinds


def test_a_second_store_on_the_same_root_is_refused(store: Store, open_store: OpenStore) -> None:
    with pytest.raises(errors.FailedPrecondition, match="in use by another imagestore process"):
        open_store(store.root)


def test_concurrent_ingests_of_one_digest_write_it_once(store: Store) -> None:
    payload = b"shared layer bytes" * 1000
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    written: list[bool] = []

    def ingest() -> None:
        with store.lease() as lease, store.ingest(lease, digest, len(payload)) as ingest:
            if ingest.exists:
                written.append(False)
                return
            ingest.write(payload)
            store.commit(ingest, lease, "application/octet-stream")
            written.append(True)
            with store._parts.catalog.transaction() as db:  # reference it so it survives the lease
                db.add_index(TargetRow(digest, mt.OCI_INDEX, "index", None, 0), [])
                db.set_name(
                    NameRow(
                        "docker.io/library/k:1", "docker.io/library/k", "1", None, digest, 0, 0
                    ),
                )

    threads = [threading.Thread(target=ingest) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(written) == [False] * 7 + [True]
    assert store._parts.blobs.verify(digest)


def test_a_waiting_ingest_takes_over_when_the_first_is_cancelled(store: Store) -> None:
    payload = b"layer" * 100_000
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    first_started, second_waiting = threading.Event(), threading.Event()
    outcome: list[str] = []

    def first() -> None:
        with (
            contextlib.suppress(KeyboardInterrupt),
            store.lease() as lease,
            store.ingest(lease, digest, len(payload)) as ingest,
        ):
            ingest.write(payload[:1000])
            first_started.set()
            second_waiting.wait(5)
            raise KeyboardInterrupt  # cancelled mid-write
        outcome.append("first cancelled")

    def second() -> None:
        first_started.wait(5)
        with store.lease() as lease:
            second_waiting.set()
            with store.ingest(lease, digest, len(payload)) as ingest:  # waits for the first
                assert not ingest.exists
                ingest.write(payload)
                store.commit(ingest, lease, "application/octet-stream")
                outcome.append("second committed")
                assert store._parts.blobs.verify(digest)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcome == ["first cancelled", "second committed"]
    assert list(store._parts.blobs.ingest_dir.iterdir()) == []


@pytest.mark.parametrize(
    "value",
    [
        "17000003456789",
        "2222222222222222222",
        "4" * 40,
        "100000000h",
        "-100000000h",
        "4" * 50 + "m",
    ],
)
def test_an_until_beyond_what_a_clock_holds_is_an_invalid_argument(value: str) -> None:
    # found by the fuzzer: these raised ValueError, OSError and OverflowError
    with pytest.raises(errors.InvalidArgument, match="invalid value for 'until' filter"):
        parse_prune_filters([f"until={value}"])


@pytest.mark.parametrize(
    "platform", [{"architecture": "a\x00"}, {"architecture": "arm", "variant": "v\x00"}]
)
def test_a_config_with_a_nul_in_a_platform_field_is_refused_on_every_catalog(
    store: Store, platform: dict[str, str]
) -> None:
    # PostgreSQL's text holds no NUL character (SQLite's does): both refuse it.
    with pytest.raises(errors.MalformedContent, match="NUL"):
        build_image(
            store,
            [layer_tar({"a": b"1"})],
            names=["x/y:1"],
            architecture=platform["architecture"],
            variant=platform.get("variant", ""),
        )
    assert store.list_images(show_all=True).images == ()
    assert store.check().ok
