"""Prune and disk usage: what can go, and how much it frees.

Disk usage's ``reclaimable`` is a dry run of the default prune: the same code
runs, inside a transaction that is rolled back.
"""

from __future__ import annotations

import itertools
from collections import Counter

from imagestore import errors
from imagestore.store.events import Journal, image_event
from imagestore.store.filters import PruneFilters
from imagestore.store.images import from_ns
from imagestore.store.listing import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, decode_token, encode_token
from imagestore.store.models import DiskUsage, EventKind, ImageUsage, Name, PruneResult, name_of
from imagestore.store.names import untag_events
from imagestore.store.parts import Parts
from imagestore.store.records import EventRow, ImageRow, NameRow


def _selected(
    image: ImageRow, names: list[NameRow], filters: PruneFilters, dangling_only: bool
) -> bool:
    if dangling_only and names:
        return False
    if filters.until is not None and image.stored_at >= filters.until.timestamp() * 1e9:
        return False  # Docker's until: stored before that time (not the build time)
    if not all(label.matches(image.labels) for label in filters.labels):
        return False
    return not any(label.matches(image.labels) for label in filters.not_labels)


def prune(
    parts: Parts,
    journal: Journal,
    filters: PruneFilters | None = None,
    *,
    all_images: bool = False,
    dry_run: bool = False,
) -> PruneResult:
    """``docker image prune``: dangling images by default, every matching one
    with ``all_images``; then unreferenced blobs and stale ingests. One at a time."""
    with parts.catalog.singleton("prune") as held:  # on every replica of the catalog
        if not held:
            raise errors.PruneRunning("a prune operation is already running")
        return run_prune(
            parts, journal, filters or PruneFilters(), all_images=all_images, dry_run=dry_run
        )


def run_prune(
    parts: Parts, journal: Journal, filters: PruneFilters, *, all_images: bool, dry_run: bool
) -> PruneResult:
    """The prune itself, with its untag and delete events and one prune event
    last, all in its transaction (a dry run rolls them back with the rest)."""
    dangling_only = filters.dangling if filters.dangling is not None else not all_images
    collector = parts.collector
    deleted: list[str] = []
    untagged: list[Name] = []
    blobs = parts.blobs
    with collector.lock, journal.transaction(rollback=dry_run) as (db, events):
        live = parts.replica.live(db)
        for replica in db.replicas():  # dead: its leases protect nothing any more
            if replica.id not in live:
                db.forget_replica(replica.id)
        names = db.names_by_image()
        deletions: list[EventRow] = []
        for image in list(db.images()):
            image_names = names.get(image.id, [])
            if not _selected(image, image_names, filters, dangling_only):
                continue
            for name in sorted(image_names, key=lambda n: n.name):
                row = db.name(name.name)
                if row is not None:
                    events += untag_events(
                        db, row.name, row.target, db.images_of_target(row.target)
                    )
                    db.delete_name(name.name)
                    untagged.append(name_of(name.name))
            deletions.append(image_event(db, EventKind.DELETE, image.id))
            db.delete_image(image.id)
            deleted.append(image.id)
        sweep = collector.plan(db)
        epoch = collector.apply(db, sweep)
        # the stale ingests it will remove once committed count as reclaimed
        reclaimed = sweep.reclaimed + sum(blobs.stale_ingests(live).values())
        events += deletions
        events.append(EventRow(EventKind.PRUNE.value, reclaimed=reclaimed))
    if not dry_run:
        collector.unlink(sweep, epoch)
    stale = blobs.stale_ingests(live) if dry_run else blobs.remove_stale_ingests(live)
    return PruneResult(
        deleted_images=tuple(deleted),
        untagged=tuple(untagged),
        deleted_blobs=tuple(sweep.blobs),
        reclaimed=sweep.reclaimed + sum(stale.values()),
        stale_ingests=len(stale),
        dry_run=dry_run,
    )


#: what a DiskUsage page token is bound to (the request has no filters)
_DISK_USAGE_QUERY = "disk-usage"


def disk_usage(
    parts: Parts, journal: Journal, *, page_size: int = 0, page_token: str = ""
) -> DiskUsage:
    """``docker system df -v`` for images: per image content, shared and unique
    bytes, one page of images at a time (newest first, as ListImages; keyset
    pages: 0 means 1,000, capped at 10,000); the totals are on every page."""
    if page_size < 0:
        raise errors.PageSizeInvalid(
            "page_size must not be negative", metadata={"page_size": str(page_size)}
        )
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    after = decode_token(page_token, _DISK_USAGE_QUERY) if page_token else None
    with parts.catalog.reading() as db:
        image_count = db.image_count()
        page = list(itertools.islice(db.images(after), size + 1))
        names = db.names_by_image()
        sizes = {row.digest: row.size for row in db.blobs()}
        owned = db.blobs_by_image()
    more = len(page) > size
    images = page[:size]
    token = ""
    if more and images:
        token = encode_token((images[-1].created or 0, images[-1].id), _DISK_USAGE_QUERY)
    users = Counter(digest for blobs in owned.values() for digest in blobs)
    usage = []
    for image in images:
        blobs = owned.get(image.id, set())
        shared = sum(sizes.get(d, 0) for d in blobs if users[d] > 1)
        content = sum(sizes.get(d, 0) for d in blobs)
        usage.append(
            ImageUsage(
                id=image.id,
                repo_tags=tuple(
                    sorted({name_of(n.name) for n in names.get(image.id, []) if not n.digest})
                ),
                created=from_ns(image.created),
                content_size=content,
                shared_size=shared,
                unique_size=content - shared,
            )
        )
    reclaimable = run_prune(
        parts, journal, PruneFilters(), all_images=False, dry_run=True
    ).reclaimed
    return DiskUsage(
        images=tuple(usage),
        total_size=sum(sizes.values()),
        reclaimable=reclaimable,
        image_count=image_count,
        blob_count=len(sizes),
        next_page_token=token,
    )
