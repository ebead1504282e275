"""Check: re-verify every blob and the catalog's consistency, like ``git fsck``.

It reports what it finds and fixes nothing; unreferenced blobs are garbage, not
damage, and are only counted (prune removes them).
"""

from __future__ import annotations

import sqlite3

from imagestore import errors
from imagestore.oci import mediatypes as mt
from imagestore.oci.manifests import parse_config
from imagestore.store.models import CheckReport, Problem
from imagestore.store.store import Store


def check(store: Store) -> CheckReport:
    problems: list[Problem] = []
    catalog, blobs = store.catalog, store.blobs
    with store.collector.lock, catalog.reading() as db:
        rows = {row.digest: row for row in catalog.blobs(db)}
        files = set(blobs.digests())
        for digest in sorted(files):
            if not blobs.verify(digest):
                problems.append(
                    Problem("corrupt-blob", digest, "content does not hash to its name")
                )
            elif digest in rows and rows[digest].size != blobs.size(digest):
                problems.append(
                    Problem("size-mismatch", digest, f"catalog says {rows[digest].size} bytes")
                )
        needed = catalog.referenced_blobs(db)
        for digest in sorted(needed - files):
            problems.append(Problem("missing-blob", digest, "referenced but not on disk"))
        for digest in sorted(set(rows) - files - needed):
            problems.append(Problem("missing-blob", digest, "recorded but not on disk"))
        for name in catalog.names(db):
            if catalog.target(db, name.target) is None:
                problems.append(
                    Problem("dangling-name", name.name, f"target {name.target} unknown")
                )
        images = catalog.images(db)
        for image in images:
            manifests = catalog.manifests_of_image(db, image.id)
            if not manifests:
                problems.append(Problem("image-without-manifest", image.id, "no manifest"))
                continue
            problems += _check_layers(store, db, image.id, [m.digest for m in manifests], files)
    for path in blobs.stale_ingests():
        problems.append(Problem("stale-ingest", path.name, "an ingest nobody owns"))
    return CheckReport(tuple(problems), blobs_checked=len(files), images_checked=len(images))


def _check_layers(
    store: Store, db: sqlite3.Connection, image_id: str, manifests: list[str], files: set[str]
) -> list[Problem]:
    """Each manifest's layers must unpack to the config's diff_ids."""
    problems = []
    if image_id not in files:
        return [Problem("missing-blob", image_id, "image config not on disk")]
    try:
        config = parse_config(store.blobs.read_bytes(image_id))
    except errors.ImageStoreError as exc:
        return [Problem("bad-config", image_id, exc.message)]
    for manifest in manifests:
        layers = [b for b in store.catalog.manifest_blobs(db, manifest) if b.position > 0]
        if len(layers) != len(config.diff_ids):
            problems.append(Problem("layer-count", manifest, "layers differ from diff_ids"))
            continue
        for layer, diff_id in zip(layers, config.diff_ids, strict=True):
            row = store.catalog.blob(db, layer.blob_digest)
            if layer.media_type in mt.ZSTD_LAYERS or row is None:
                continue
            if row.diff_id != diff_id:
                problems.append(
                    Problem("diff-id-mismatch", layer.blob_digest, f"unpacks to {row.diff_id}")
                )
    return problems
