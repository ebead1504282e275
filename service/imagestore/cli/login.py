"""login and logout: the user's Docker config file, as docker keeps it; and the
credentials pull and push send for a registry (read client-side, as docker does)."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from imagestore import errors
from imagestore.cli.output import say
from imagestore.client import ImageStoreClient, RegistryAuth
from imagestore.dockerconfig import Credentials, DockerConfig, config_key, default_path
from imagestore.oci.references import normalize_domain, parse_reference


def config_file(args: argparse.Namespace) -> DockerConfig:
    path = Path(args.config) / "config.json" if args.config else default_path()
    return DockerConfig(path, must_exist=False)


def credentials_for(args: argparse.Namespace, image: str) -> RegistryAuth | None:
    """What the user's config holds for an image's registry (None: anonymous)."""
    found = config_file(args).lookup(parse_reference(image).domain)
    if not found:
        return None
    return RegistryAuth(
        username=found.username,
        password=found.password,
        identity_token=found.identity_token,
        registry_token=found.registry_token,
    )


def log_in(client: ImageStoreClient, args: argparse.Namespace) -> int:
    domain = normalize_domain(args.server or "docker.io")
    username, password = args.username, args.password
    if args.password and args.password_stdin:
        raise errors.InvalidArgument("--password and --password-stdin are mutually exclusive")
    if args.password:
        say("WARNING! Using --password via the CLI is insecure. Use --password-stdin.",
            out=sys.stderr)  # fmt: skip
    if args.password_stdin:
        if not username:
            raise errors.InvalidArgument("Must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    if not username:
        username = _ask("Username: ")
    if not password:
        if not sys.stdin.isatty():
            raise errors.InvalidArgument(
                "Cannot perform an interactive login from a non TTY device"
            )
        password = getpass.getpass("Password: ")
    auth = RegistryAuth(username=username, password=password)
    status = client.login(domain, auth)
    config_file(args).remember(domain, Credentials(username=username, password=password))
    say(status)
    return 0


def log_out(client: ImageStoreClient, args: argparse.Namespace) -> int:
    domain = normalize_domain(args.server or "docker.io")
    shown = config_key(domain)
    if config_file(args).forget(domain):
        say(f"Removing login credentials for {shown}")
    else:
        say(f"Not logged in to {shown}")
    return 0


def _ask(prompt: str) -> str:
    _require_terminal()
    return input(prompt).strip()


def _require_terminal() -> None:
    if not sys.stdin.isatty():
        raise errors.InvalidArgument("Cannot perform an interactive login from a non TTY device")
