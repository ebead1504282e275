"""The events journal at the store: each change writes its events in its own
transaction, under consecutive cursors; retention by count and by age; the
subscription that wakes watchers after a commit."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from imagestore import errors
from imagestore.store.filters import parse_event_filters, parse_prune_filters
from imagestore.store.models import Event, EventKind
from imagestore.store.store import Store
from tests.store.builders import Built, build_image, build_index, layer_tar
from tests.store.conftest import OpenStore

BASE = layer_tar({"etc/os-release": b"ID=events\n"})
Seen = list[tuple[str, str, str]]


def app(store: Store, content: bytes, *names: str, **options: object) -> Built:
    layers = [BASE, layer_tar({"app": content})]
    return build_image(store, layers, names=names, **options)  # type: ignore[arg-type]


def events(store: Store, after: int = 0) -> list[Event]:
    page = store.read_events(after, 10_000)
    return list(page.events)


def seen(found: list[Event]) -> Seen:
    """(kind, image, familiar name) of each event."""
    return [(e.kind.value, e.image_id, e.name.familiar if e.name else "") for e in found]


def last(store: Store) -> int:
    return store.event_bounds()[1]


def test_an_empty_journal(store: Store) -> None:
    assert store.event_bounds() == (1, 0)
    assert store.read_events(0, 10).events == ()


def test_tag_and_a_moved_name_untags_the_image_it_left_first(store: Store) -> None:
    one = app(store, b"1", "team/app:1", labels={"tier": "web"})
    two = app(store, b"2")
    start = last(store)
    store.tag(two.image_id, "team/app:1")
    found = events(store, start)
    assert seen(found) == [
        ("untag", one.image_id, "team/app:1"),
        ("tag", two.image_id, "team/app:1"),
    ]
    assert found[0].labels == {"tier": "web"}
    assert found[1].target_digest == two.manifest.digest
    assert found[1].name is not None
    assert found[1].name.canonical == "docker.io/team/app:1"
    assert [e.cursor for e in found] == [start + 1, start + 2]
    assert found[0].time_ns == found[1].time_ns  # one transaction, one commit time


def test_remove_untags_each_name_then_deletes(store: Store) -> None:
    built = app(store, b"x", "a/x:1", "a/x:2")
    start = last(store)
    store.remove(["a/x:1"])
    assert seen(events(store, start)) == [("untag", built.image_id, "a/x:1")]
    start = last(store)
    store.remove(["a/x:2"])
    assert seen(events(store, start)) == [
        ("untag", built.image_id, "a/x:2"),
        ("delete", built.image_id, ""),
    ]


def test_a_failed_change_writes_nothing_and_consumes_no_cursor(store: Store) -> None:
    app(store, b"a", "a/x:1", "b/x:1")
    before = store.event_bounds()
    results = store.remove(["nope:1"])
    assert isinstance(results[0].error, errors.ImageNotFound)
    built = app(store, b"b", "c/x:1")
    # a conflict fails the whole item: its untags are rolled back with it
    only = app(store, b"c", "d/x:1", "e/x:1")
    mark = store.event_bounds()
    assert isinstance(store.remove([only.image_id])[0].error, errors.RemoveConflict)
    assert store.event_bounds() == mark
    with pytest.raises(errors.ImageNotFound):
        store.tag("nope:1", "f/x:1")
    assert store.event_bounds() == mark
    assert mark[1] > before[1]
    assert built.image_id


def test_pull_writes_one_event_per_name(store: Store) -> None:
    start = last(store)
    built = app(store, b"p", "reg.test/p:1", event=EventKind.PULL)
    found = events(store, start)
    assert seen(found) == [("pull", built.image_id, "reg.test/p:1")]
    assert found[0].target_digest == built.manifest.digest


def test_load_writes_one_event_per_image_with_its_first_name(store: Store) -> None:
    old = app(store, b"old", "l/x:2")
    start = last(store)
    built = app(store, b"l", "l/x:1", "l/x:2", event=EventKind.LOAD)
    assert seen(events(store, start)) == [
        ("untag", old.image_id, "l/x:2"),  # the name it moved away from
        ("load", built.image_id, "l/x:1"),
        ("tag", built.image_id, "l/x:2"),
    ]
    start = last(store)
    again = app(store, b"l", event=EventKind.LOAD)  # no names: the image alone
    assert seen(events(store, start)) == [("load", again.image_id, "")]


def test_an_index_name_reaches_each_stored_child(store: Store) -> None:
    amd = app(store, b"i")
    arm = build_image(store, [BASE, layer_tar({"app": b"j"})], architecture="arm64")
    start = last(store)
    build_index(store, [(amd, "linux/amd64"), (arm, "linux/arm64")], names=["m/x:1"])
    tags = seen(events(store, start))
    assert sorted(tags) == sorted([("tag", amd.image_id, "m/x:1"), ("tag", arm.image_id, "m/x:1")])


def test_prune_untags_deletes_then_reports_in_its_transaction(store: Store) -> None:
    kept = app(store, b"k", "k/x:1", labels={"keep": "1"})
    gone = app(store, b"g", "g/x:1", labels={"old": "yes"})
    dangling = app(store, b"d")
    start = last(store)
    result = store.prune(parse_prune_filters(["label!=keep"]), all_images=True)
    assert set(result.deleted_images) == {gone.image_id, dangling.image_id}
    found = events(store, start)
    assert [e.kind for e in found][-1] is EventKind.PRUNE
    assert found[-1].reclaimed_bytes == result.reclaimed > 0
    assert ("untag", gone.image_id, "g/x:1") in seen(found)
    deletes = [e for e in found if e.kind is EventKind.DELETE]
    assert {e.image_id for e in deletes} == {gone.image_id, dangling.image_id}
    assert {e.image_id: dict(e.labels) for e in deletes}[gone.image_id] == {"old": "yes"}
    kinds = [e.kind for e in found]
    assert kinds.index(EventKind.UNTAG) < kinds.index(EventKind.DELETE)
    assert kept.image_id not in {e.image_id for e in found}


def test_a_dry_run_prune_and_disk_usage_consume_no_cursor(store: Store) -> None:
    app(store, b"d")  # dangling: a dry run would delete it
    bounds = store.event_bounds()
    notified: list[int] = []
    store.subscribe_events(notified.append)
    assert store.prune(dry_run=True).deleted_images
    store.disk_usage()
    assert store.event_bounds() == bounds
    assert notified == []
    store.prune()
    assert store.event_bounds()[1] > bounds[1]
    assert notified == [store.event_bounds()[1]]


def test_push_records_its_event_with_the_blob_sources(store: Store) -> None:
    built = app(store, b"s", "reg.test/s:1")
    start = last(store)
    store.record_push(
        [built.manifest.digest], "reg.test", "s", "reg.test/s:1", built.manifest.digest
    )
    found = events(store, start)
    assert seen(found) == [("push", built.image_id, "reg.test/s:1")]
    assert found[0].remote == "reg.test/s"
    assert store.blob_sources(built.manifest.digest, "reg.test") == ["s"]


def test_cursors_are_consecutive_across_threads_in_commit_order(store: Store) -> None:
    images = [app(store, bytes([n])) for n in range(4)]
    start = last(store)
    barrier = threading.Barrier(4)

    def tagger(number: int) -> None:
        barrier.wait()
        for round_ in range(10):
            store.tag(images[number].image_id, f"t{number}/x:{round_}")

    threads = [threading.Thread(target=tagger, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found = events(store, start)
    assert [e.cursor for e in found] == list(range(start + 1, start + 41))
    assert [e.time_ns for e in found] == sorted(e.time_ns for e in found)
    for number in range(4):  # each thread's tags in its own order
        mine = [
            e.name.familiar for e in found if e.name and e.name.familiar.startswith(f"t{number}/")
        ]
        assert mine == [f"t{number}/x:{r}" for r in range(10)]


def test_the_subscription_hears_the_last_cursor_after_commit(store: Store) -> None:
    built = app(store, b"n")
    heard: list[tuple[int, int]] = []

    def listener(cursor: int) -> None:  # what a reader sees when told: committed already
        heard.append((cursor, store.event_bounds()[1]))

    unsubscribe = store.subscribe_events(listener)
    store.tag(built.image_id, "n/x:1")
    store.tag(built.image_id, "n/x:2")
    assert heard == [(last(store) - 1, last(store) - 1), (last(store), last(store))]
    unsubscribe()
    store.tag(built.image_id, "n/x:3")
    assert len(heard) == 2


def test_retention_by_count(tmp_path: Path, open_store: OpenStore) -> None:
    with open_store(tmp_path / "root", events_max_count=3) as store:
        built = app(store, b"c")
        for number in range(5):
            store.tag(built.image_id, f"c/x:{number}")
        oldest, final = store.event_bounds()
        assert final - oldest + 1 == 3
        assert [e.cursor for e in events(store)] == [final - 2, final - 1, final]
        assert [e.name.familiar for e in events(store) if e.name] == [
            "c/x:2",
            "c/x:3",
            "c/x:4",
        ]


def test_retention_by_age_with_an_injected_clock(tmp_path: Path, open_store: OpenStore) -> None:
    now = [1_000 * 10**9]
    with open_store(tmp_path / "root", events_max_age=60, events_clock=lambda: now[0]) as store:
        built = app(store, b"a")
        store.tag(built.image_id, "a/x:1")
        first = last(store)
        now[0] += 30 * 10**9
        store.tag(built.image_id, "a/x:2")
        assert store.event_bounds()[0] <= first  # 30 s old: kept
        now[0] += 45 * 10**9  # a/x:1 is 75 s old, a/x:2 45 s
        store.tag(built.image_id, "a/x:3")
        kept = [e.name.familiar for e in events(store) if e.name]
        assert kept == ["a/x:2", "a/x:3"]
        assert store.event_bounds()[0] == first + 1
        assert all(e.time_ns >= now[0] - 60 * 10**9 for e in events(store))


def test_the_journal_survives_a_reopen(tmp_path: Path, open_store: OpenStore) -> None:
    with open_store(tmp_path / "root") as store:
        built = app(store, b"r", "r/x:1")
        bounds = store.event_bounds()
    with open_store(tmp_path / "root") as store:
        assert store.event_bounds() == bounds
        store.tag(built.image_id, "r/x:2")
        assert last(store) == bounds[1] + 1


def test_retention_options_are_checked(tmp_path: Path, open_store: OpenStore) -> None:
    with pytest.raises(errors.OptionInvalid):
        open_store(tmp_path / "a", events_max_count=0)
    with pytest.raises(errors.OptionInvalid):
        open_store(tmp_path / "b", events_max_age=0)
    with open_store(tmp_path / "a") as store:  # the refused open released the root
        assert store.event_bounds() == (1, 0)


def test_event_filters_select_what_docker_would(store: Store) -> None:
    web = app(store, b"w", "team/web:1", labels={"tier": "web", "env": "prod"})
    db = app(store, b"b", "team/db:1", labels={"tier": "db"})
    found = events(store)

    def picked(*filters: str) -> set[tuple[str, str, str]]:
        chosen = parse_event_filters(filters)
        return {s for e, s in zip(found, seen(found), strict=True) if chosen.matches(e)}

    web_tag = ("tag", web.image_id, "team/web:1")
    db_tag = ("tag", db.image_id, "team/db:1")
    assert picked() == {web_tag, db_tag}
    assert picked("type=image") == {web_tag, db_tag}
    assert picked("type=container") == set()
    assert picked("event=tag") == {web_tag, db_tag}
    assert picked("event=untag") == set()
    assert picked("image=team/web") == {web_tag}  # the repository: any tag
    assert picked("image=docker.io/team/web:1") == {web_tag}
    assert picked("image=team/web:2") == set()
    assert picked(f"image={db.image_id}") == {db_tag}
    assert picked(f"image={db.image_id.removeprefix('sha256:')[:12]}") == {db_tag}
    assert picked("image=team/web", "image=team/db") == {web_tag, db_tag}  # ORed
    assert picked("reference=team/*") == {web_tag, db_tag}
    assert picked("reference=*/db:*") == {db_tag}
    assert picked("label=tier") == {web_tag, db_tag}
    assert picked("label=tier=db") == {db_tag}
    assert picked("label=tier=web", "label=env=prod") == {web_tag}  # labels ANDed, as docker
    assert picked("event=tag", "image=team/db") == {db_tag}  # keys ANDed


@pytest.mark.parametrize(
    ("item", "key"),
    [("color=red", "color"), ("event=explode", "event"), ("type=thing", "type"),
     ("image=not a name", "image"), ("reference=[a", "reference"), ("label==x", "label")],
)  # fmt: skip
def test_bad_event_filters_are_filter_invalid(item: str, key: str) -> None:
    with pytest.raises(errors.FilterInvalid) as caught:
        parse_event_filters([item])
    assert caught.value.metadata["filter"] == key
