"""pull, push, load and save: streams with per-layer progress; Ctrl-C cancels
the call (the server then keeps nothing of it)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from imagestore import errors
from imagestore.cli.login import credentials_for
from imagestore.cli.progress import ProgressView
from imagestore.client import (
    ImageStoreClient,
    LoadResult,
    Progress,
    PullResult,
    PushResult,
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
    save.set_defaults(run=save_images)


def pull_image(client: ImageStoreClient, args: argparse.Namespace) -> int:
    reference = parse_reference(args.image)
    if not args.quiet and reference.tag is not None and ":" not in args.image.split("/")[-1]:
        print("Using default tag: latest")
    auth = credentials_for(args, args.image)
    result: PullResult | None = None
    with ProgressView(sys.stdout, terminal=None if not args.quiet else False) as view:
        for event in client.pull(args.image, platforms=args.platform, auth=auth):
            if isinstance(event, Progress):
                if not args.quiet:
                    view.show(event)
            else:
                result = event
    if result is None:
        raise errors.Unavailable("the pull ended without a result")
    if not args.quiet:
        print(f"Status: {result.status}")
    print(str(reference))
    return 0


def push_image(client: ImageStoreClient, args: argparse.Namespace) -> int:
    if not args.quiet and ":" not in args.image.split("/")[-1] and "@" not in args.image:
        print("Using default tag: latest")
    auth = credentials_for(args, args.image)
    result: PushResult | None = None
    with ProgressView(sys.stdout, terminal=None if not args.quiet else False) as view:
        for event in client.push(args.image, platform=args.platform, auth=auth):
            if isinstance(event, Progress):
                if not args.quiet:
                    view.show(event)
            else:
                result = event
    if result is None:
        raise errors.Unavailable("the push ended without a result")
    if args.quiet:
        print(f"{parse_reference(args.image)}")
    return 0


def load_images(client: ImageStoreClient, args: argparse.Namespace) -> int:
    source = args.input or sys.stdin.buffer
    if not args.input and sys.stdin.isatty():
        raise errors.InvalidArgument(
            "requested load from stdin, but stdin is empty (use -i FILE or redirect)"
        )
    total = os.path.getsize(args.input) if args.input else 0
    result: LoadResult | None = None
    with ProgressView(sys.stdout, terminal=None if not args.quiet else False) as view:
        for event in client.load(source):
            if isinstance(event, Progress):
                if not args.quiet and view.terminal:
                    view.show(Progress("archive", "Loading", event.current, total))
            else:
                result = event
    if result is None:
        raise errors.Unavailable("the load ended without a result")
    for image in result.images:
        for name in image.names:
            print(f"Loaded image: {name}")
        if not image.names:
            print(f"Loaded image ID: {image.id}")
    return 0


def save_images(client: ImageStoreClient, args: argparse.Namespace) -> int:
    if args.output:
        client.save_to(args.images, args.output)
        return 0
    if sys.stdout.isatty():
        raise errors.InvalidArgument(
            "cowardly refusing to save to a terminal. Use the -o flag or redirect"
        )
    out = sys.stdout.buffer
    for chunk in client.save(args.images):
        out.write(chunk)
    out.flush()
    return 0
