"""The local-image commands: images, inspect, history, tag, rm, prune, df, check."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from imagestore import errors
from imagestore.cli import humanize, views
from imagestore.cli.output import say, tabwrite, write_objects, write_rows
from imagestore.cli.progress import CheckMeter
from imagestore.cli.sanitize import printable
from imagestore.client import CheckProblem, CheckProgress, ImageStoreClient

PRUNE_WARNING = "WARNING! This will remove all dangling images."
PRUNE_ALL_WARNING = (
    "WARNING! This will remove all images without at least one container associated to them."
)


def add_parsers(commands: Any) -> None:
    for name in ("images", "ls"):
        ls = commands.add_parser(
            name, help="list images" if name == "images" else "alias of images"
        )
        ls.add_argument("repository", nargs="?", help="only REPOSITORY[:TAG] (a reference filter)")
        ls.add_argument("-a", "--all", action="store_true", help="show all images (dangling too)")
        ls.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
        ls.add_argument("--digests", action="store_true", help="show digests")
        ls.add_argument("--no-trunc", action="store_true", help="do not truncate output")
        ls.add_argument("-f", "--filter", action="append", default=[], help="key=value (repeat)")
        ls.add_argument("--format", default="", help="table, table TEMPLATE, json or TEMPLATE")
        ls.set_defaults(run=list_images)

    inspect = commands.add_parser("inspect", help="detailed information on images")
    inspect.add_argument("images", nargs="+", metavar="IMAGE")
    inspect.add_argument("-f", "--format", default="", help="Go template, or json")
    inspect.add_argument("--platform", default="", help="os/arch[/variant] of a multi-arch image")
    inspect.set_defaults(run=inspect_images)

    history = commands.add_parser("history", help="the history of an image")
    history.add_argument("image", metavar="IMAGE")
    history.add_argument("--no-trunc", action="store_true", help="do not truncate output")
    history.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    history.add_argument("--format", default="", help="table, table TEMPLATE, json or TEMPLATE")
    history.add_argument("--platform", default="", help="os/arch[/variant]")
    history.set_defaults(run=show_history)

    tag = commands.add_parser("tag", help="create a tag TARGET that refers to SOURCE")
    tag.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    tag.add_argument("target", metavar="TARGET_IMAGE[:TAG]")
    tag.set_defaults(run=tag_image)

    for name in ("rm", "rmi"):
        rm = commands.add_parser(name, help="remove images" if name == "rm" else "alias of rm")
        rm.add_argument("images", nargs="+", metavar="IMAGE")
        rm.add_argument("-f", "--force", action="store_true", help="force removal")
        rm.add_argument("--no-prune", action="store_true", help="accepted; changes nothing")
        rm.set_defaults(run=remove_images)

    prune = commands.add_parser("prune", help="remove unused images")
    prune.add_argument("-a", "--all", action="store_true", help="remove all unused images")
    prune.add_argument("--filter", action="append", default=[], help="key=value (repeat)")
    prune.add_argument("-f", "--force", action="store_true", help="do not prompt")
    prune.add_argument("--dry-run", action="store_true", help="only say what would go")
    prune.set_defaults(run=prune_images)

    df = commands.add_parser("df", help="disk usage of images")
    df.add_argument("-v", "--verbose", action="store_true", help="per-image usage")
    df.set_defaults(run=disk_usage)

    check = commands.add_parser("check", help="re-verify every blob and the catalog")
    check.set_defaults(run=check_store)


def list_images(client: ImageStoreClient, args: argparse.Namespace) -> int:
    filters = list(args.filter)
    if args.repository:
        filters.append(f"reference={args.repository}")
    found = client.list_images(all=args.all, filters=filters)
    fmt = "{{.ID}}" if args.quiet else args.format
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
    objects = []
    missing: list[str] = []
    for image in args.images:
        try:
            details = client.inspect(image, platform=args.platform or None)
            objects.append(views.inspect_object(details))
        except errors.NotFound as failure:
            missing.append(failure.message)
    if objects or not args.format:
        write_objects(sys.stdout, objects, args.format)
    for message in missing:
        say(f"Error: {message}", out=sys.stderr)
    return 1 if missing else 0


def show_history(client: ImageStoreClient, args: argparse.Namespace) -> int:
    details = client.inspect(args.image, platform=args.platform or None)
    entries = client.history(args.image, platform=args.platform or None)
    rows = views.history_rows(details.image.id, entries, truncate=not args.no_trunc)
    fmt = "{{.ID}}" if args.quiet else args.format
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
        say(f"Error response from daemon: {failure.message}", out=sys.stderr)
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
    if args.verbose:
        usage = client.disk_usage()  # every page: the columns fit the widest row
        header = "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE\tSHARED SIZE\tUNIQUE SIZE\tCONTAINERS"
        # a name's own tab must not start a column: each cell escaped before the join
        rows = [(*views.usage_row(image), "0") for image in usage.images]
        lines = ["\t".join(printable(cell) for cell in row) for row in rows]
        sys.stdout.write("Images space usage:\n\n" + tabwrite([header, *lines]))
        return 0
    # the totals are on every page: one row's page is enough
    usage = next(client.disk_usage_pages(page_size=1))
    percent = usage.reclaimable * 100 // usage.total_size if usage.total_size else 0
    reclaimable = f"{humanize.size(usage.reclaimable)} ({percent}%)"
    lines = [
        "TYPE\tTOTAL\tACTIVE\tSIZE\tRECLAIMABLE",
        f"Images\t{usage.image_count}\t0\t{humanize.size(usage.total_size)}\t{reclaimable}",
    ]
    sys.stdout.write(tabwrite(lines))
    return 0


def check_store(client: ImageStoreClient, args: argparse.Namespace) -> int:
    """Each problem as the server confirms it (a progress bar meanwhile on a
    terminal), then the summary; exit 1 when anything is wrong."""
    with client.check() as call, CheckMeter(sys.stdout) as meter:
        for event in call:
            if isinstance(event, CheckProgress):
                meter.update(event)
            elif isinstance(event, CheckProblem):
                meter.line(f"{event.kind}: {event.subject}: {event.detail}")
        report = call.result()
    verdict = "ok" if report.ok else f"{len(report.problems)} problem(s)"
    say(f"{verdict}: {report.blobs_checked} blobs and {report.images_checked} images checked")
    if report.unrecorded_blobs:
        say(
            f"{len(report.unrecorded_blobs)} blob file(s) without a record"
            " (garbage, not damage; prune removes them)"
        )
    return 0 if report.ok else 1
