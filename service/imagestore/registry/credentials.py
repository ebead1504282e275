"""Registry credentials: sent with a request, or (opt-in) from a Docker config file.

The file format is Docker's ``config.json``: ``auths`` (base64 ``user:password``
or ``identitytoken``), ``credHelpers`` per registry and a default ``credsStore``,
both programs named ``docker-credential-<suffix>``. The order is docker/cli's: a
registry's helper, then the store, then ``auths``. Only the registries the file
names get credentials.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagestore import errors

#: Docker Hub's historical key in ``auths`` and for credential helpers
DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io")
_HELPER_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Credentials:
    """One identity at one registry. ``repr`` never shows secrets."""

    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""

    def __bool__(self) -> bool:
        return bool(self.username or self.password or self.identity_token or self.registry_token)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, secret=<hidden>)"

    @property
    def cache_key(self) -> str:
        """Tells identities apart in the token cache without keeping secrets in keys."""
        material = "\0".join(
            (self.username, self.password, self.identity_token, self.registry_token)
        )
        return hashlib.sha256(material.encode()).hexdigest()[:32]


ANONYMOUS = Credentials()


def _config_keys(domain: str) -> tuple[str, ...]:
    if domain == "docker.io":
        return DOCKER_HUB_KEYS
    return (domain, f"https://{domain}", f"http://{domain}")


def _decode_auth(value: str, source: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise errors.InvalidArgument(f"{source}: an 'auth' entry is not base64") from None
    username, sep, password = decoded.partition(":")
    if not sep:
        raise errors.InvalidArgument(f"{source}: an 'auth' entry is not user:password")
    return username, password


class DockerConfig:
    """Server-side credentials from one Docker config file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            document: Any = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise errors.InvalidArgument(f"cannot read registry config {path}: {exc}") from None
        if not isinstance(document, dict):
            raise errors.InvalidArgument(f"registry config {path} is not a JSON object")
        self.auths: dict[str, Any] = dict(document.get("auths") or {})
        self.helpers: dict[str, str] = dict(document.get("credHelpers") or {})
        self.store: str = str(document.get("credsStore") or "")

    async def lookup(self, domain: str) -> Credentials:
        """The credentials this file holds for a registry, or anonymous."""
        keys = _config_keys(domain)
        helper = next((self.helpers[k] for k in keys if k in self.helpers), None)
        if helper is not None:
            return await _from_helper(helper, keys[0])
        if self.store and any(k in self.auths for k in keys):
            return await _from_helper(self.store, next(k for k in keys if k in self.auths))
        for key in keys:
            entry = self.auths.get(key)
            if isinstance(entry, dict):
                return self._from_entry(entry)
        return ANONYMOUS

    def _from_entry(self, entry: dict[str, Any]) -> Credentials:
        username, password = str(entry.get("username") or ""), str(entry.get("password") or "")
        if entry.get("auth"):
            username, password = _decode_auth(str(entry["auth"]), str(self.path))
        token = str(entry.get("identitytoken") or "")
        if token:
            return Credentials(username=username, identity_token=token)
        return Credentials(username=username, password=password)


async def _from_helper(suffix: str, server: str) -> Credentials:
    """Ask ``docker-credential-<suffix> get`` (server URL on stdin, JSON on stdout)."""
    program = f"docker-credential-{suffix}"
    try:
        process = await asyncio.create_subprocess_exec(
            program,
            "get",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise errors.FailedPrecondition(f"credential helper {program}: {exc.strerror}") from None
    try:
        out, err = await asyncio.wait_for(process.communicate(server.encode()), _HELPER_TIMEOUT)
    except TimeoutError:
        process.kill()
        raise errors.Unavailable(f"credential helper {program} did not answer") from None
    if process.returncode != 0:
        if b"credentials not found" in out + err:
            return ANONYMOUS
        raise errors.FailedPrecondition(
            f"credential helper {program} failed: {err.decode(errors='replace')[:200].strip()}"
        )
    try:
        answer = json.loads(out)
        username, secret = str(answer["Username"]), str(answer["Secret"])
    except (ValueError, KeyError, TypeError):
        raise errors.FailedPrecondition(
            f"credential helper {program} gave no credentials"
        ) from None
    if username == "<token>":
        return Credentials(identity_token=secret)
    return Credentials(username=username, password=secret)
