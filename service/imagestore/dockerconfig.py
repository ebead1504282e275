"""Docker's ``config.json``: registry credentials, read and written as docker does.

``auths`` holds base64 ``user:password`` (or an ``identitytoken``) per
registry; ``credHelpers`` names a helper per registry and ``credsStore`` a
default one, both programs ``docker-credential-<suffix>`` speaking JSON on
stdin/stdout (verbs ``get``, ``store``, ``erase``). Lookup order is docker/cli's:
the registry's helper, then the store, then ``auths``. Only the registries the
file names get credentials.

The server reads such a file for ``--registry-config``; the CLI reads and
writes the user's own for ``login``, ``logout``, ``pull`` and ``push``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagestore import errors, jsonparse

#: Docker Hub's key in ``auths`` and for credential helpers
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_KEYS = (DOCKER_HUB_KEY, "index.docker.io", "docker.io", "registry-1.docker.io")
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
        """Tells identities apart in a token cache without keeping secrets in keys."""
        material = "\0".join(
            (self.username, self.password, self.identity_token, self.registry_token)
        )
        return hashlib.sha256(material.encode()).hexdigest()[:32]


ANONYMOUS = Credentials()


def default_path() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json`` (docker's rule)."""
    folder = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    return Path(folder) / "config.json"


def config_key(domain: str) -> str:
    """The key docker files a registry under (Docker Hub has a historical one)."""
    return DOCKER_HUB_KEY if domain in _DOCKER_HUB_KEYS else domain


def _keys(domain: str) -> tuple[str, ...]:
    if domain in _DOCKER_HUB_KEYS:
        return _DOCKER_HUB_KEYS
    return (domain, f"https://{domain}", f"http://{domain}")


def _decode_auth(value: str, source: Path) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise errors.OptionInvalid(
            f"{source}: an 'auth' entry is not base64", metadata={"path": str(source)}
        ) from None
    username, sep, password = decoded.partition(":")
    if not sep:
        raise errors.OptionInvalid(
            f"{source}: an 'auth' entry is not user:password", metadata={"path": str(source)}
        )
    return username, password


class DockerConfig:
    """One config file (missing is fine: no credentials)."""

    def __init__(self, path: Path, *, must_exist: bool = True) -> None:
        self.path = path
        document: Any = {}
        try:
            document = jsonparse.loads(path.read_text())
        except FileNotFoundError:
            if must_exist:
                raise errors.OptionInvalid(
                    f"registry config {path} does not exist", metadata={"path": str(path)}
                ) from None
        except (OSError, ValueError) as exc:
            raise errors.OptionInvalid(
                f"cannot read registry config {path}: {exc}", metadata={"path": str(path)}
            ) from None
        if not isinstance(document, dict):
            raise errors.OptionInvalid(
                f"registry config {path} is not a JSON object", metadata={"path": str(path)}
            )
        self.document: dict[str, Any] = document
        self.auths: dict[str, Any] = dict(document.get("auths") or {})
        self.helpers: dict[str, str] = dict(document.get("credHelpers") or {})
        self.store: str = str(document.get("credsStore") or "")

    def lookup(self, domain: str) -> Credentials:
        """The credentials this file holds for a registry, or anonymous (blocking:
        a helper may run)."""
        keys = _keys(domain)
        helper = next((self.helpers[k] for k in keys if k in self.helpers), None)
        if helper is not None:
            return _helper_get(helper, config_key(domain))
        if self.store and any(k in self.auths for k in keys):
            return _helper_get(self.store, next(k for k in keys if k in self.auths))
        for key in keys:
            entry = self.auths.get(key)
            if isinstance(entry, dict):
                return self._from_entry(entry)
        return ANONYMOUS

    def _from_entry(self, entry: dict[str, Any]) -> Credentials:
        username, password = str(entry.get("username") or ""), str(entry.get("password") or "")
        if entry.get("auth"):
            username, password = _decode_auth(str(entry["auth"]), self.path)
        token = str(entry.get("identitytoken") or "")
        if token:
            return Credentials(username=username, identity_token=token)
        return Credentials(username=username, password=password)

    def remember(self, domain: str, credentials: Credentials) -> None:
        """Keep credentials as ``docker login`` does: in the registry's helper or
        the store when one is set, else base64 in ``auths``."""
        key = config_key(domain)
        helper = self.helpers.get(key) or self.store
        if helper:
            secret = credentials.identity_token or credentials.password
            username = "<token>" if credentials.identity_token else credentials.username
            _helper(helper, "store", {"ServerURL": key, "Username": username, "Secret": secret})
            self.auths[key] = {}
        elif credentials.identity_token:
            self.auths[key] = {
                "auth": base64.b64encode(f"{credentials.username}:".encode()).decode(),
                "identitytoken": credentials.identity_token,
            }
        else:
            pair = f"{credentials.username}:{credentials.password}".encode()
            self.auths[key] = {"auth": base64.b64encode(pair).decode()}
        self._save()

    def forget(self, domain: str) -> bool:
        """Remove a registry's credentials; False when there were none."""
        key = config_key(domain)
        helper = self.helpers.get(key) or self.store
        known = key in self.auths
        if helper and known:
            _helper(helper, "erase", key)
        self.auths.pop(key, None)
        if known:
            self._save()
        return known

    def _save(self) -> None:
        """Write the file atomically, private to its owner (it holds secrets)."""
        self.document["auths"] = self.auths
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, partial = tempfile.mkstemp(prefix=".config.json.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(self.document, out, indent="\t")
                out.write("\n")
            os.chmod(partial, 0o600)
            os.replace(partial, self.path)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise


def _helper(suffix: str, verb: str, payload: Any) -> str:
    """Run ``docker-credential-<suffix> <verb>`` with ``payload`` on stdin."""
    program = f"docker-credential-{suffix}"
    text = payload if isinstance(payload, str) else json.dumps(payload)
    try:
        result = subprocess.run(
            [program, verb],
            input=text.encode(),
            capture_output=True,
            timeout=_HELPER_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise errors.CredentialHelperFailed(
            f"credential helper {program} is not installed", metadata={"helper": program}
        ) from None
    except subprocess.TimeoutExpired:
        raise errors.CredentialHelperTimeout(
            f"credential helper {program} did not answer", metadata={"helper": program}
        ) from None
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace")
        if "credentials not found" in output:
            raise LookupError(program)
        raise errors.CredentialHelperFailed(
            f"credential helper {program} failed: {output[:200].strip()}",
            metadata={"helper": program},
        )
    return result.stdout.decode(errors="replace")


def _helper_get(suffix: str, server: str) -> Credentials:
    try:
        answer = jsonparse.loads(_helper(suffix, "get", server))
        username, secret = str(answer["Username"]), str(answer["Secret"])
    except LookupError:
        return ANONYMOUS
    except (ValueError, KeyError, TypeError):
        raise errors.CredentialHelperFailed(
            f"credential helper docker-credential-{suffix} gave no credentials",
            metadata={"helper": f"docker-credential-{suffix}"},
        ) from None
    if username == "<token>":
        return Credentials(identity_token=secret)
    return Credentials(username=username, password=secret)
