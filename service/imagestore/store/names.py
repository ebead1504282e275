"""Names: resolving what a user typed, ``docker tag`` and ``docker rmi``
(docs/design.md §1, §3).

A name (``repo:tag`` or ``repo@digest``, stored canonical) points at a
target, a manifest or an index; the images it reaches are that manifest's, or
those of the index's stored children. Every change holds the GC lock, so what
a change resolved is still there when its transaction runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from imagestore import errors
from imagestore.oci.digests import is_id_prefix, short_id
from imagestore.oci.platforms import Platform, best_match, host_platform, parse_platform
from imagestore.oci.references import Reference, parse_reference, parse_tag_target
from imagestore.store.catalog import CatalogReader, CatalogWriter
from imagestore.store.content import now_ns
from imagestore.store.events import Journal, image_event
from imagestore.store.models import EventKind, Name, RemoveResult, TagResult, name_of
from imagestore.store.parts import Parts
from imagestore.store.records import EventRow, NameRow

#: the shortest image ID prefix accepted without its ``sha256:``
MIN_ID_PREFIX = 4


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a user-given name or ID denotes."""

    image_ids: tuple[str, ...]
    target: str | None  # the name's target, when it was a name
    name: NameRow | None


def name_row(reference: Reference, target: str, when: int) -> NameRow:
    """The stored form of ``reference`` pointing at ``target``."""
    if reference.digest is not None:  # a digest reference is stored without its tag
        reference = reference.repository().with_digest(reference.digest)
    return NameRow(
        name=str(reference),
        repository=reference.name,
        tag=reference.tag if reference.digest is None else None,
        digest=reference.digest,
        target=target,
        created_at=when,
        updated_at=when,
    )


def resolve(db: CatalogReader, text: str) -> Resolved:
    """A name first (tag or digest reference), then an image ID or unique prefix."""
    text = text.strip()
    reference: Reference | None = None
    try:
        reference = parse_reference(text)
    except errors.InvalidArgument:
        if not is_id_prefix(text):
            raise
    if reference is not None:
        name = db.name(name_row(reference, "", 0).name)
        if name is not None:
            return Resolved(tuple(db.images_of_target(name.target)), name.target, name)
        if reference.digest and (target := db.target(reference.digest)):
            images = db.images_of_target(target.digest)
            if images:
                return Resolved(tuple(images), target.digest, None)
    if is_id_prefix(text):
        hex_part = text.removeprefix("sha256:")
        if len(hex_part) >= MIN_ID_PREFIX or text.startswith("sha256:"):
            found = db.images_by_prefix(hex_part)
            if len(found) == 1:
                return Resolved((found[0],), None, None)
            if len(found) > 1:
                raise errors.ImageIdAmbiguous(
                    f"ambiguous image ID prefix {text!r}: matches "
                    + ", ".join(short_id(i) for i in found),
                    metadata={"prefix": text, "candidates": ",".join(found)},
                )
    shown = reference.familiar() if reference is not None else text
    raise errors.ImageNotFound(f"No such image: {shown}", metadata={"image": text[:300]})


def resolve_image(db: CatalogReader, text: str, platform: str | None = None) -> str:
    """One image ID for a name, ID or prefix; a name reaching several
    platforms picks ``platform`` (default: the host's)."""
    resolved = resolve(db, text)
    if len(resolved.image_ids) == 1 and platform is None:
        return resolved.image_ids[0]
    wanted = parse_platform(platform) if platform else host_platform()
    offered = []
    for image_id in resolved.image_ids:
        row = db.image(image_id)
        if row is not None:
            offered.append((Platform(row.os, row.architecture, row.variant), image_id))
    choice = best_match(wanted, offered)
    if choice is None:
        present = ", ".join(sorted(str(p) for p, _ in offered)) or "none"
        raise errors.PlatformNotFound(
            f"image {text} has no variant for platform {wanted}; present: {present}",
            metadata={"platform": str(wanted), "image": text[:300], "offered": present[:500]},
        )
    return str(choice)


def untag_events(
    db: CatalogReader, name: str, target: str, images: Sequence[str]
) -> list[EventRow]:
    """UNTAG events: ``name`` (canonical), once pointing at ``target``, no longer
    reaches these images."""
    return [image_event(db, EventKind.UNTAG, i, name, target) for i in images]


class Names:
    """Tag and remove on one store; each change writes its events (tag, untag,
    delete) in its own transaction."""

    def __init__(self, parts: Parts, journal: Journal) -> None:
        self._journal = journal
        self._collector = parts.collector

    def tag(self, source: str, target: str) -> TagResult:
        """``docker tag``: the target name always moves to the source's image."""
        reference = parse_tag_target(target)
        when = now_ns()
        with self._collector.lock, self._journal.transaction() as (db, events):
            resolved = resolve(db, source)
            if resolved.target is not None:
                destination = resolved.target
            else:
                manifests = db.manifests_of_image(resolved.image_ids[0])
                if not manifests:
                    raise errors.ImageNotFound(
                        f"No such image: {source}", metadata={"image": source[:300]}
                    )
                destination = manifests[0].digest
            row = name_row(reference, destination, when)
            previous = db.set_name(row)
            displaced: list[str] = []
            if previous is not None and previous != destination:
                displaced = [
                    i for i in db.images_of_target(previous) if i not in resolved.image_ids
                ]
            # a cache watching the image the name left learns it first
            events += untag_events(db, row.name, previous or "", displaced)
            events += [
                image_event(db, EventKind.TAG, i, row.name, destination) for i in resolved.image_ids
            ]
            db.set_last_tag_time(resolved.image_ids, when)
        return TagResult(
            Name(reference.familiar(), str(reference)), resolved.image_ids, tuple(displaced)
        )

    def remove(self, items: Sequence[str], *, force: bool = False) -> list[RemoveResult]:
        """``docker rmi a b``: each item on its own (its own transaction), in
        order; one that fails (unknown, conflict) does not stop the others and
        carries its error in its result. ``force`` only lets an image be
        deleted by ID while several names reach it; unknown items still fail."""
        results: list[RemoveResult] = []
        for item in items:
            try:
                results.append(self._remove_one(item, force))
            except errors.ImageStoreError as exc:
                results.append(RemoveResult(item, error=exc.with_traceback(None)))
        return results

    def _remove_one(self, item: str, force: bool) -> RemoveResult:
        untagged: list[Name] = []
        with self._collector.lock:
            with self._journal.transaction() as (db, events):
                resolved = resolve(db, item)
                if resolved.name is not None:
                    untagged += _untag(db, resolved.name, events)
                    doomed = [i for i in resolved.image_ids if not db.names_of_image(i)]
                else:
                    image_id = resolved.image_ids[0]
                    untagged += _untag_all(db, image_id, force, events)
                    doomed = [image_id]
                candidates: set[str] = set()
                for image_id in doomed:
                    candidates |= _image_blobs(db, image_id)
                    events.append(image_event(db, EventKind.DELETE, image_id))
                    db.delete_image(image_id)
                candidates |= set(db.unnamed_indexes())
            sweep = self._collector.collect(candidates)
        freed = tuple(d for d in sweep.blobs if d not in doomed)
        return RemoveResult(item, tuple(untagged), tuple(doomed), freed)


def _delete_name(db: CatalogWriter, name: NameRow, events: list[EventRow]) -> Name:
    """Delete one name, adding its UNTAG events (one per image it reached)."""
    events += untag_events(db, name.name, name.target, db.images_of_target(name.target))
    db.delete_name(name.name)
    return name_of(name.name)


def _untag(db: CatalogWriter, name: NameRow, recorded: list[EventRow]) -> list[Name]:
    """Remove one name; removing a repository's last tag of an image also
    removes that repository's digest references to it (Docker's rule)."""
    images = set(db.images_of_target(name.target))
    events = [_delete_name(db, name, recorded)]
    if name.digest is None:
        remaining = [
            n
            for image_id in images
            for n in db.names_of_image(image_id)
            if n.repository == name.repository
        ]
        if not any(n.digest is None for n in remaining):
            for n in sorted({n.name: n for n in remaining}.values(), key=lambda n: n.name):
                events.append(_delete_name(db, n, recorded))
    return events


def _untag_all(
    db: CatalogWriter, image_id: str, force: bool, recorded: list[EventRow]
) -> list[Name]:
    """Remove every name of an image removed by ID; one in several repositories,
    or with several tags, only with ``force`` (Docker's conflict)."""
    names = db.names_of_image(image_id)
    tags = [n for n in names if n.digest is None]
    if not force and (len(tags) > 1 or len({n.repository for n in names}) > 1):
        raise errors.RemoveConflict(
            f"conflict: unable to delete {short_id(image_id)} (must be forced)"
            " - image is referenced in multiple repositories",
            metadata={"image": image_id},
        )
    return [
        _delete_name(db, name, recorded)
        for name in sorted(names, key=lambda n: (n.digest is not None, n.name))
    ]


def _image_blobs(db: CatalogReader, image_id: str) -> set[str]:
    blobs: set[str] = set()
    for manifest in db.manifests_of_image(image_id):
        blobs.add(manifest.digest)
        blobs.update(b.blob_digest for b in db.manifest_blobs(manifest.digest))
    return blobs
