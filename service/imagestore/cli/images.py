"""The local-image commands: images, inspect, history, tag, rm, prune, df, check."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from imagestore import errors
from imagestore.cli import humanize, views
from imagestore.cli.output import daemon_error, say, tabwrite, write_objects, write_rows
from imagestore.cli.progress import CheckMeter
from imagestore.cli.sanitize import printable
from imagestore.client import CheckProblem, CheckProgress, ImageStoreClient

PRUNE_WARNING = "WARNING! This will remove all dangling images."
#: no containers here: -a removes every image the filters select, named or not
PRUNE_ALL_WARNING = (
    "WARNING! This will remove all images, tagged or not, and the layers no other image uses."
)
#: docker's --format json is the template {{json .}}: one object a line, nothing escaped
JSON_FORMAT = "json"

IMAGES_EPILOG = """columns:
  SIZE     the image's layers uncompressed (what docker's SIZE shows), not the
           bytes they take here: those are `imagestore df -v`'s CONTENT SIZE
  CREATED  when the image was built (its config's created time)

filters (-f key=value, repeat):
  dangling=true|false, label=KEY[=VALUE], reference=GLOB,
  before=IMAGE, since=IMAGE (built before/after that image),
  until=TIMESTAMP (built before it: the image's build time, not when it was
  stored here; RFC 3339, a date, Unix seconds, or a Go duration such as 24h)

--tree: each name that points at an index (a multi-platform image) with the
  platforms stored under it (-a: the ones not stored too)"""

PRUNE_EPILOG = """filters (--filter key=value, repeat):
  until=TIMESTAMP  only images stored here before it (when this store got them,
                   not their build time); RFC 3339, a date, Unix seconds, or a
                   Go duration such as 24h
  label=KEY[=VALUE], label!=KEY[=VALUE], dangling=true|false

Without -a only dangling images go (no tag, no digest name); with -a every image
the filters select: here no container ever holds one."""

DF_EPILOG = """columns:
  TOTAL         images stored
  ACTIVE        images with a name (a tag or a digest name): those `prune`
                without -a keeps (there are no containers here)
  SIZE          bytes on disk: every blob once, compressed layers as pulled
  RECLAIMABLE   what `prune -a` would free: all of SIZE (no container holds an
                image here) but blobs a pull or load in progress holds
-v, per image (bytes on disk, compressed, as in SIZE above; `images` shows
  uncompressed sizes):
  CONTENT SIZE  the image's blobs; SHARED SIZE those other images use too;
  UNIQUE SIZE   those only it uses (what removing it frees)

--format: table, table TEMPLATE, json or TEMPLATE over .Type .TotalCount
  .Active .Size .Reclaimable (with -v, over each image: .Repository .Tag .ID
  .CreatedSince .Size .SharedSize .UniqueSize)"""

HISTORY_EPILOG = """SIZE is the layer's uncompressed size; -H/--human=false prints it in bytes and
CREATED as an RFC 3339 time, as docker does."""


def add_parsers(commands: Any) -> None:
    for name in ("images", "ls"):
        ls = commands.add_parser(
            name,
            help="list images" if name == "images" else "alias of images",
            epilog=IMAGES_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        ls.add_argument("repository", nargs="?", help="only REPOSITORY[:TAG] (a reference filter)")
        ls.add_argument("-a", "--all", action="store_true", help="show all images (dangling too)")
        ls.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
        ls.add_argument("--digests", action="store_true", help="show digests")
        ls.add_argument("--no-trunc", action="store_true", help="do not truncate output")
        ls.add_argument("-f", "--filter", action="append", default=[], help="key=value (repeat)")
        ls.add_argument("--format", default="", help="table, table TEMPLATE, json or TEMPLATE")
        ls.add_argument(
            "--tree",
            action="store_true",
            help="names of multi-platform images (indexes) with their platforms below",
        )
        ls.set_defaults(run=list_images)

    inspect = commands.add_parser("inspect", help="detailed information on images")
    inspect.add_argument("images", nargs="+", metavar="IMAGE")
    inspect.add_argument("-f", "--format", default="", help="Go template, or json")
    inspect.add_argument("--platform", default="", help="os/arch[/variant] of a multi-arch image")
    inspect.set_defaults(run=inspect_images)

    history = commands.add_parser(
        "history",
        help="the history of an image",
        epilog=HISTORY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    history.add_argument("image", metavar="IMAGE")
    history.add_argument(
        "-H",
        "--human",
        nargs="?",
        const=True,
        default=True,
        type=_boolean,
        metavar="BOOL",
        help="sizes and dates for people (default true; --human=false: bytes, RFC 3339)",
    )
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

    prune = commands.add_parser(
        "prune",
        help="remove unused images",
        epilog=PRUNE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prune.add_argument("-a", "--all", action="store_true", help="remove all unused images")
    prune.add_argument(
        "--filter",
        action="append",
        default=[],
        help="key=value (repeat): until=TIMESTAMP compares when the image was stored here",
    )
    prune.add_argument("-f", "--force", action="store_true", help="do not prompt")
    prune.add_argument("--dry-run", action="store_true", help="only say what would go")
    prune.set_defaults(run=prune_images)

    df = commands.add_parser(
        "df",
        help="disk usage of images",
        epilog=DF_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    df.add_argument("-v", "--verbose", action="store_true", help="per-image usage")
    df.add_argument("--format", default="", help="table, table TEMPLATE, json or TEMPLATE")
    df.set_defaults(run=disk_usage)

    check = commands.add_parser("check", help="re-verify every blob and the catalog")
    check.set_defaults(run=check_store)


def _boolean(text: str) -> bool:
    """A Go flag's boolean: 1, t, true, 0, f, false (any case)."""
    value = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}.get(
        text.lower()
    )
    if value is None:
        raise argparse.ArgumentTypeError(f"invalid boolean value {text!r}")
    return value


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
