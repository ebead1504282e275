"""Prune and disk usage: what can go, and how much it frees.

Disk usage's ``reclaimable`` is a dry run of the default prune: the same code
runs, inside a transaction that is rolled back.
"""

from __future__ import annotations

from collections import Counter

from imagestore import errors
from imagestore.store.catalog import ImageRow, NameRow
from imagestore.store.filters import PruneFilters
from imagestore.store.models import DiskUsage, ImageUsage, PruneResult
from imagestore.store.store import Store, familiar, from_ns


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
    store: Store,
    filters: PruneFilters | None = None,
    *,
    all_images: bool = False,
    dry_run: bool = False,
) -> PruneResult:
    """``docker image prune``: dangling images by default, every matching one
    with ``all_images``; then unreferenced blobs and stale ingests. One at a time."""
    if not store.prune_lock.acquire(blocking=False):
        raise errors.Aborted("a prune operation is already running")
    try:
        return run_prune(store, filters or PruneFilters(), all_images=all_images, dry_run=dry_run)
    finally:
        store.prune_lock.release()


def run_prune(
    store: Store, filters: PruneFilters, *, all_images: bool, dry_run: bool
) -> PruneResult:
    dangling_only = filters.dangling if filters.dangling is not None else not all_images
    catalog, collector = store.catalog, store.collector
    deleted: list[str] = []
    untagged: list[str] = []
    with collector.lock, store.leases.lock:
        with catalog.transaction(rollback=dry_run) as db:
            names = catalog.names_by_image(db)
            for image in catalog.images(db):
                image_names = names.get(image.id, [])
                if not _selected(image, image_names, filters, dangling_only):
                    continue
                for name in sorted(image_names, key=lambda n: n.name):
                    if catalog.name(db, name.name) is not None:
                        catalog.delete_name(db, name.name)
                        untagged.append(familiar(name))
                catalog.delete_image(db, image.id)
                deleted.append(image.id)
            sweep = collector.plan(db)
            collector.apply(db, sweep)
        if not dry_run:
            collector.unlink(sweep)
    stale = store.blobs.stale_ingests() if dry_run else store.blobs.remove_stale_ingests()
    return PruneResult(
        deleted_images=tuple(deleted),
        untagged=tuple(untagged),
        deleted_blobs=tuple(sweep.blobs),
        reclaimed=sweep.reclaimed + sum(stale.values()),
        stale_ingests=len(stale),
    )


def disk_usage(store: Store) -> DiskUsage:
    """``docker system df -v`` for images: per image content, shared and unique bytes."""
    with store.catalog.reading() as db:
        images = store.catalog.images(db)
        names = store.catalog.names_by_image(db)
        sizes = {row.digest: row.size for row in store.catalog.blobs(db)}
        owned: dict[str, set[str]] = {}
        for row in db.execute(
            "SELECT t.image_id, mb.blob_digest FROM manifest_blobs mb"
            " JOIN targets t ON t.digest = mb.manifest_digest"
            " UNION SELECT image_id, digest FROM targets WHERE kind = 'manifest'"
        ):
            owned.setdefault(row[0], set()).add(row[1])
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
                    sorted(familiar(n) for n in names.get(image.id, []) if not n.digest)
                ),
                created=from_ns(image.created),
                content_size=content,
                shared_size=shared,
                unique_size=content - shared,
            )
        )
    reclaimable = run_prune(store, PruneFilters(), all_images=False, dry_run=True).reclaimed
    return DiskUsage(
        images=tuple(usage),
        total_size=sum(sizes.values()),
        reclaimable=reclaimable,
        image_count=len(images),
        blob_count=len(sizes),
    )
