"""pull, push, load and save: streams with per-layer progress; Ctrl-C cancels
the call (the server then keeps nothing of it)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TypeVar

from imagestore import errors
from imagestore.cli.login import credentials_for
from imagestore.cli.output import say
from imagestore.cli.progress import ProgressView
from imagestore.client import (
    ImageName,
    ImageStoreClient,
    Phase,
    Progress,
    PullResult,
    ResultStream,
)
from imagestore.oci.references import parse_reference

#: `--platform all`: every platform an index lists
ALL_PLATFORMS = "all"


R = TypeVar("R")


def _default_tag_note(image: str, quiet: bool) -> None:
    """docker's "Using default tag: latest" for a name without tag or digest."""
    reference = parse_reference(image, default_tag=False)
    if not quiet and reference.tag is None and reference.digest is None:
        say("Using default tag: latest")


def _follow(call: ResultStream[Progress, R], quiet: bool, *, hide_present: bool = False) -> R:
    """Show a stream's progress (unless quiet), docker's digest line included (the
    server sends it as a summary line), then return its result. Leaving early
    (Ctrl-C) cancels the call."""
    view = ProgressView(sys.stdout, terminal=False if quiet else None, hide_present=hide_present)
    with call, view:
        for progress in call:
            if not quiet:
                view.show(progress)
        return call.result()


def _canonical(name: ImageName, image: str, *, default_tag: bool = True) -> str:
    """The name as docker prints it last ("docker.io/library/redis:latest"): the
    server's, else the one asked for, normalised."""
    return name.canonical or str(parse_reference(image, default_tag=default_tag))


def pull_image(client: ImageStoreClient, args: argparse.Namespace) -> int:
    if args.all_tags:
        reference = parse_reference(args.image, default_tag=False)
        if reference.tag is not None or reference.digest is not None:
            raise errors.InvalidArgument("tag can't be used with --all-tags/-a")
    else:
        _default_tag_note(args.image, args.quiet)
    everything = ALL_PLATFORMS in args.platform
    platforms = [p for p in args.platform if p != ALL_PLATFORMS]
    auth = credentials_for(args, args.image)
    call = client.pull(
        args.image,
        platforms=platforms,
        all_platforms=everything,
        all_tags=args.all_tags,
        auth=auth,
    )
    result = _follow(call, args.quiet, hide_present=True)
    if not args.quiet:
        say(f"Status: {_status(result)}")
    say(_canonical(result.name, args.image, default_tag=not args.all_tags))
    return 0


def _status(result: PullResult) -> str:
    """docker's last status line, from whether anything changed and the name."""
    if not result.name.familiar:  # a server that names nothing: its own words
        return result.status
    if result.updated:
        return f"Downloaded newer image for {result.name.familiar}"
    return f"Image is up to date for {result.name.familiar}"


def push_image(client: ImageStoreClient, args: argparse.Namespace) -> int:
    _default_tag_note(args.image, args.quiet)
    auth = credentials_for(args, args.image)
    result = _follow(client.push(args.image, platform=args.platform or None, auth=auth), args.quiet)
    if args.quiet:
        say(_canonical(result.name, args.image))
    return 0


def load_images(client: ImageStoreClient, args: argparse.Namespace) -> int:
    """docker load: one bar of the archive's bytes on a terminal (it ends full),
    docker's line for each name that moved from another image, then each image."""
    source = args.input or sys.stdin.buffer
    if not args.input and sys.stdin.isatty():
        raise errors.InvalidArgument(
            "requested load from stdin, but stdin is empty (use -i FILE or redirect)"
        )
    total = os.path.getsize(args.input) if args.input else 0
    quiet = args.quiet or not sys.stdout.isatty()  # docker prints no load progress to pipes
    view = ProgressView(sys.stdout, terminal=False if quiet else None)
    done = 0
    with client.load(source) as call, view:
        for progress in call:
            done = progress.current
            if not quiet:  # members stream by; a person watches one bar of archive bytes
                view.show(_archive_bar(done, total))
        result = call.result()
        if not quiet and total and done < total:  # the tar's end blocks: counted, not sent
            view.show(_archive_bar(total, total))
    for image in result.images:
        for name, old in zip(image.moved, image.moved_from, strict=False):
            if old and old != image.id:
                say(
                    f"The image {name.familiar} already exists, renaming the old one with ID"
                    f" {old} to empty string"
                )
        for name in image.names:
            say(f"Loaded image: {name.familiar}")
        if not image.names:
            say(f"Loaded image ID: {image.id}")
    return 0


def _archive_bar(current: int, total: int) -> Progress:
    """Load's one line: no layer ID, no phase (a member's "complete" is not the end)."""
    return Progress(Phase.UNSPECIFIED, "Loading", current=current, total=total or None)


def save_images(client: ImageStoreClient, args: argparse.Namespace) -> int:
    images = _every_tag(client, args.images)
    if args.output:
        client.save_to(images, args.output, args.platform or None)
        return 0
    if sys.stdout.isatty():
        raise errors.InvalidArgument(
            "cowardly refusing to save to a terminal. Use the -o flag or redirect"
        )
    out = sys.stdout.buffer
    with client.save(images, args.platform or None) as chunks:
        for chunk in chunks:
            out.write(chunk)
    out.flush()
    return 0


def _every_tag(client: ImageStoreClient, images: list[str]) -> list[str]:
    """docker save: REPO without a tag or digest means every tag of the repository
    (found through ListImages' reference filter); REPO:TAG, a digest or an image
    ID mean themselves. A REPO without any tag is left as given: the server says
    what is missing."""
    wanted: list[str] = []
    for image in images:
        try:
            reference = parse_reference(image, default_tag=False)
        except errors.InvalidArgument:  # an image ID, or a name the server will refuse
            wanted.append(image)
            continue
        if reference.tag is not None or reference.digest is not None:
            wanted.append(image)
            continue
        repository = reference.familiar_name
        tags = sorted(
            {
                name.familiar
                for found in client.list_images(filters=[f"reference={repository}"])
                for name in found.repo_tags
                if parse_reference(name.familiar).familiar_name == repository
            }
        )
        wanted += tags or [image]
    return list(dict.fromkeys(wanted))
