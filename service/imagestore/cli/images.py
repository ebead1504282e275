"""The local-image commands: images, inspect, history, tag, rm, prune, df, check."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from imagestore.cli import humanize, views
from imagestore.cli.output import (
    check_template,
    daemon_error,
    say,
    tabwrite,
    write_objects,
    write_rows,
)
from imagestore.cli.sanitize import printable

# what only some commands use is imported by them: `images` starts without it
if TYPE_CHECKING:
    import argparse

    from imagestore import errors
    from imagestore.client import ImageStoreClient

PRUNE_WARNING = "WARNING! This will remove all dangling images."
#: no containers here: -a removes every image the filters select, named or not
PRUNE_ALL_WARNING = (
    "WARNING! This will remove all images, tagged or not, and the layers no other image uses."
)
#: docker's --format json is the template {{json .}}: one object a line, nothing escaped
JSON_FORMAT = "json"


def _format(fmt: str) -> str:
    """docker's ``--format json``: the template ``{{json .}}`` (nothing escaped)."""
    return "{{json .}}" if fmt == JSON_FORMAT else fmt


def list_images(client: ImageStoreClient, args: argparse.Namespace) -> int:
    filters = list(args.filter)
    if args.repository:
        filters.append(f"reference={args.repository}")
    found = client.list_images(all=args.all, filters=filters)
    if args.tree:
        tree = views.tree_rows(found, absent=args.all, truncate=not args.no_trunc)
        lines = ["\t".join(printable(cell) for cell in row) for row in tree]
        sys.stdout.write(tabwrite(["IMAGE\tID\tSIZE\tPLATFORMS", *lines]))
        return 0
    fmt = "{{.ID}}" if args.quiet else _format(args.format)
    digests = args.digests or ".Digest" in fmt  # docker shows them when the format asks
    if args.digests and fmt.startswith("table ") and ".Digest" not in fmt:
        fmt += "\t{{.Digest}}"  # docker appends the column
    rows = [
        row
        for image in found
        for row in views.image_rows(image, digests=digests, truncate=not args.no_trunc)
    ]
    default = views.IMAGE_TABLE_DIGESTS if args.digests else views.IMAGE_TABLE
    write_rows(sys.stdout, rows, fmt, default_table=default, headers=views.IMAGE_HEADERS)
    return 0


def inspect_images(client: ImageStoreClient, args: argparse.Namespace) -> int:
    from imagestore import errors

    check_template(args.format)
    objects = []
    missing: list[errors.NotFound] = []
    for image in args.images:
        try:
            details = client.inspect(image, platform=args.platform or None)
            objects.append(views.inspect_object(details))
        except errors.NotFound as failure:
            missing.append(failure)
    if objects or not args.format:
        write_objects(sys.stdout, objects, args.format)
    for unknown in missing:
        say(daemon_error(unknown), out=sys.stderr)
    return 1 if missing else 0


def show_history(client: ImageStoreClient, args: argparse.Namespace) -> int:
    check_template(_format(args.format))
    details = client.inspect(args.image, platform=args.platform or None)
    entries = client.history(args.image, platform=args.platform or None)
    rows = views.history_rows(
        details.image.id, entries, truncate=not args.no_trunc, human=args.human
    )
    fmt = "{{.ID}}" if args.quiet else _format(args.format)
    write_rows(
        sys.stdout, rows, fmt, default_table=views.HISTORY_TABLE, headers=views.HISTORY_HEADERS
    )
    return 0


def tag_image(client: ImageStoreClient, args: argparse.Namespace) -> int:
    client.tag(args.source, args.target)
    return 0


def remove_images(client: ImageStoreClient, args: argparse.Namespace) -> int:
    """docker rmi: each image on its own; what each did, then the failures on
    stderr (exit 1, unless -f and every failure is an unknown image)."""
    from imagestore import errors

    results = client.remove(args.images, force=args.force, no_prune=args.no_prune)
    failures: list[errors.ImageStoreError] = []
    for result in results:
        if result.error is not None:
            failures.append(result.error)
            continue
        for name in result.untagged:
            say(f"Untagged: {name.familiar}")
        for deleted in (*result.deleted_image_ids, *result.freed_blobs):
            say(f"Deleted: {deleted}")
    for failure in failures:
        say(daemon_error(failure), out=sys.stderr)
    fatal = [f for f in failures if not (args.force and isinstance(f, errors.NotFound))]
    return 1 if fatal else 0


def _confirm(message: str) -> bool:
    sys.stdout.write(f"{message}\nAre you sure you want to continue? [y/N] ")
    sys.stdout.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def prune_images(client: ImageStoreClient, args: argparse.Namespace) -> int:
    warning = PRUNE_ALL_WARNING if args.all else PRUNE_WARNING
    if not args.force and not args.dry_run and not _confirm(warning):
        say("image prune has been cancelled", out=sys.stderr)
        return 1
    result = client.prune(all=args.all, filters=args.filter, dry_run=args.dry_run)
    if result.untagged or result.deleted_image_ids:
        say("Would delete Images:" if args.dry_run else "Deleted Images:")
        for name in result.untagged:
            say(f"untagged: {name.familiar}")
        for image_id in result.deleted_image_ids:
            say(f"deleted: {image_id}")
        if result.truncated:  # more than one answer holds: the counts are whole
            names = result.untagged_count - len(result.untagged)
            images = result.deleted_image_count - len(result.deleted_image_ids)
            say(f"… and {names} more untagged, {images} more deleted (not listed)")
        say()
    what = "Total reclaimable space" if args.dry_run else "Total reclaimed space"
    say(f"{what}: {humanize.size(result.reclaimed_bytes, 4)}")
    return 0


def disk_usage(client: ImageStoreClient, args: argparse.Namespace) -> int:
    fmt = _format(args.format)
    if args.verbose:
        usage = client.disk_usage()  # every page: the columns fit the widest row
        rows = [views.usage_row(image) for image in usage.images]
        if fmt:
            write_rows(
                sys.stdout, rows, fmt, default_table=views.USAGE_TABLE, headers=views.USAGE_HEADERS
            )
            return 0
        sys.stdout.write("Images space usage:\n\n")
        write_rows(
            sys.stdout, rows, "table", default_table=views.USAGE_TABLE, headers=views.USAGE_HEADERS
        )
        return 0
    # the totals are on every page: one row's page is enough
    usage = next(client.disk_usage_pages(page_size=1))
    # No containers here: `prune -a` frees every blob (all but those a pull or load
    # in progress holds), so all of SIZE is reclaimable. An image is active while a
    # name keeps it from `prune`: all but the dangling ones. (Both read-only: a
    # Prune dry run would take the prune lock, and fail a concurrent prune.)
    dangling = len(client.list_images(all=True, filters=["dangling=true"]))
    active = max(usage.image_count - dangling, 0)
    row = views.summary_row(usage, active=active, reclaimable=usage.total_size)
    write_rows(
        sys.stdout, [row], fmt, default_table=views.SUMMARY_TABLE, headers=views.SUMMARY_HEADERS
    )
    return 0


def check_store(client: ImageStoreClient, args: argparse.Namespace) -> int:
    """Each problem as the server confirms it (a progress bar meanwhile on a
    terminal), then the summary; exit 1 when anything is wrong."""
    from imagestore.cli.progress import CheckMeter
    from imagestore.client import CheckProblem, CheckProgress

    with client.check() as call, CheckMeter(sys.stdout) as meter:
        for event in call:
            if isinstance(event, CheckProgress):
                meter.update(event)
            elif isinstance(event, CheckProblem):
                meter.line(f"{event.kind}: {event.subject}: {event.detail}")
        report = call.result()
    verdict = "ok" if report.ok else _count(len(report.problems), "problem")
    blobs, images = report.blobs_checked, report.images_checked
    say(f"{verdict}: {_count(blobs, 'blob')} and {_count(images, 'image')} checked")
    if report.unrecorded_blobs:
        say(
            f"{_count(len(report.unrecorded_blobs), 'blob file')} without a record"
            " (garbage, not damage; prune removes them)"
        )
    return 0 if report.ok else 1


def _count(number: int, noun: str) -> str:
    """``1 image``, ``2 images``."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
