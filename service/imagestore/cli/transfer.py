"""pull, push, load and save: streams with per-layer progress; Ctrl-C cancels
the call (the server then keeps nothing of it)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from typing import Any, TypeVar

from imagestore import errors
from imagestore.cli.login import credentials_for
from imagestore.cli.output import say
from imagestore.cli.progress import ProgressView
from imagestore.client import (
    ImageStoreClient,
    LoadResult,
    Progress,
)
from imagestore.oci.references import parse_reference


def add_parsers(commands: Any) -> None:
    pull = commands.add_parser("pull", help="download an image from a registry")
    pull.add_argument("image", metavar="NAME[:TAG|@DIGEST]")
    pull.add_argument(
        "--platform",
        action="append",
        default=[],
        help="os/arch[/variant] of a multi-arch image, or all (repeat; default this server's)",
    )
    pull.add_argument("-q", "--quiet", action="store_true", help="print only the image name")
    pull.set_defaults(run=pull_image)

    push = commands.add_parser("push", help="upload an image to its registry")
    push.add_argument("image", metavar="NAME[:TAG]")
    push.add_argument("--platform", default="", help="push only this platform of an index")
    push.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    push.set_defaults(run=push_image)

    load = commands.add_parser("load", help="load images from a tar archive")
    load.add_argument("-i", "--input", default="", help="archive file (default: stdin)")
    load.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    load.set_defaults(run=load_images)

    save = commands.add_parser("save", help="save images to a tar archive")
    save.add_argument("images", nargs="+", metavar="IMAGE")
    save.add_argument("-o", "--output", default="", help="file (default: stdout)")
    save.add_argument(
        "--platform",
        default="",
        help="save one platform (os[/arch[/variant]]) of a multi-platform image",
    )
    save.set_defaults(run=save_images)


T = TypeVar("T")


def _default_tag_note(image: str, quiet: bool) -> None:
    """docker's "Using default tag: latest" for a name without tag or digest."""
    reference = parse_reference(image, default_tag=False)
    if not quiet and reference.tag is None and reference.digest is None:
        say("Using default tag: latest")


def _follow(events: Iterator[Progress | T], quiet: bool, what: str) -> T:
    """Show a stream's progress (unless quiet); return its last item, the result."""
    result: T | None = None
    with ProgressView(sys.stdout, terminal=False if quiet else None) as view:
        for event in events:
            if isinstance(event, Progress):
                if not quiet:
                    view.show(event)
            else:
                result = event
    if result is None:
        raise errors.Unavailable(f"the {what} ended without a result")
    return result


def pull_image(client: ImageStoreClient, args: argparse.Namespace) -> int:
    _default_tag_note(args.image, args.quiet)
    auth = credentials_for(args, args.image)
    events = client.pull(args.image, platforms=args.platform, auth=auth)
    result = _follow(events, args.quiet, "pull")
    if not args.quiet:
        say(f"Status: {result.status}")
    say(str(parse_reference(args.image)))
    return 0


def push_image(client: ImageStoreClient, args: argparse.Namespace) -> int:
    _default_tag_note(args.image, args.quiet)
    auth = credentials_for(args, args.image)
    _follow(client.push(args.image, platform=args.platform, auth=auth), args.quiet, "push")
    if args.quiet:
        say(str(parse_reference(args.image)))
    return 0


def load_images(client: ImageStoreClient, args: argparse.Namespace) -> int:
    source = args.input or sys.stdin.buffer
    if not args.input and sys.stdin.isatty():
        raise errors.InvalidArgument(
            "requested load from stdin, but stdin is empty (use -i FILE or redirect)"
        )
    total = os.path.getsize(args.input) if args.input else 0

    def one_bar() -> Iterator[Progress | LoadResult]:
        """Members stream by; a person watches one bar of archive bytes."""
        for event in client.load(source):
            if isinstance(event, Progress):
                yield Progress("archive", "Loading", event.current, total)
            else:
                yield event

    quiet = args.quiet or not sys.stdout.isatty()  # docker prints no load progress to pipes
    result = _follow(one_bar(), quiet, "load")
    for image in result.images:
        for name in image.names:
            say(f"Loaded image: {name}")
        if not image.names:
            say(f"Loaded image ID: {image.id}")
    return 0


def save_images(client: ImageStoreClient, args: argparse.Namespace) -> int:
    if args.output:
        client.save_to(args.images, args.output, args.platform)
        return 0
    if sys.stdout.isatty():
        raise errors.InvalidArgument(
            "cowardly refusing to save to a terminal. Use the -o flag or redirect"
        )
    out = sys.stdout.buffer
    for chunk in client.save(args.images, args.platform):
        out.write(chunk)
    out.flush()
    return 0
