"""Image references, parsed and normalised exactly as Docker does.

``redis`` → ``docker.io/library/redis:latest``; shown back in the familiar
form ``redis:latest``. Grammar, normalisation and error texts follow
distribution/reference (``regexp.go``, ``normalize.go``) and Docker's tag rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from imagestore import errors
from imagestore.oci.digests import parse_digest

# Reference filters are Go's path.Match globs; kept importable from here.
from imagestore.oci.globs import path_match as path_match

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
MAX_PATH_LENGTH = 255

# distribution/reference regexp.go, with Go's ASCII-only \w spelled out.
_ALPHANUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALPHANUM}(?:{_SEPARATOR}{_ALPHANUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_HOST = rf"(?:{_DOMAIN_NAME}|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
#: a tag on its own (what follows ``:`` in a reference)
TAG = re.compile(_TAG)
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"(?P<domain>{_DOMAIN})/(?P<path>{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
)
_IDENTIFIER = re.compile(r"[a-f0-9]{64}")


def _invalid(text: str, message: str) -> errors.ReferenceInvalid:
    return errors.ReferenceInvalid(message, metadata={"reference": text[:300]})


@dataclass(frozen=True, slots=True, order=True)
class Reference:
    """A normalised reference: ``domain/path[:tag][@digest]``."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """Canonical repository name: ``docker.io/library/redis``."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """Repository name as Docker shows it: ``redis``, ``user/app``, ``host:5000/app``."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        if self.path.startswith(OFFICIAL_REPO_PREFIX) and self.path.count("/") == 1:
            return self.path[len(OFFICIAL_REPO_PREFIX) :]
        first = self.path.split("/", 1)[0]
        if "/" in self.path and (first == "localhost" or "." in first):
            return self.name  # "docker.io/a.b/c": dropping docker.io would make a.b a host
        return self.path

    def _suffix(self) -> str:
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self.name + self._suffix()

    def familiar(self) -> str:
        """The familiar string: ``redis:latest``, ``redis@sha256:…``."""
        return self.familiar_name + self._suffix()

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.domain, self.path, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, None, parse_digest(digest))

    def repository(self) -> Reference:
        """The bare repository, without tag or digest."""
        return Reference(self.domain, self.path)


_DOMAIN_ONLY = re.compile(_DOMAIN)
_HUB_ALIASES = ("index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/")


def normalize_domain(text: str) -> str:
    """A registry as ``docker login`` takes it: ``docker.io`` for Docker Hub's
    names, else the host[:port] as given (``https://`` dropped)."""
    text = text.strip()
    if text in _HUB_ALIASES:
        return DEFAULT_DOMAIN
    host = text.removeprefix("https://").removeprefix("http://").rstrip("/")
    if not _DOMAIN_ONLY.fullmatch(host):
        raise _invalid(text, f"invalid registry {text[:100]!r}: expected host[:port]")
    return DEFAULT_DOMAIN if host in _HUB_ALIASES else host


def _split_domain(text: str) -> tuple[str, str]:
    """Docker's splitDockerDomain: is the first component a registry host?"""
    first, slash, rest = text.partition("/")
    if not slash:
        return DEFAULT_DOMAIN, OFFICIAL_REPO_PREFIX + text
    if first == LEGACY_DEFAULT_DOMAIN:
        domain, remainder = DEFAULT_DOMAIN, rest
    elif first == "localhost" or any(c in first for c in ".:") or first.lower() != first:
        domain, remainder = first, rest
    else:
        domain, remainder = DEFAULT_DOMAIN, text
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def parse_reference(text: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalise a reference like ``docker pull`` does.

    A reference with neither tag nor digest gets ``:latest`` unless
    ``default_tag`` is False. Raises InvalidArgument with Docker's wording.
    """
    if not text:
        raise _invalid(text, "invalid reference format: the reference is empty")
    if _IDENTIFIER.fullmatch(text):
        raise _invalid(
            text, f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
        )
    domain, remainder = _split_domain(text)
    remote_name = remainder.split("@", 1)[0].split(":", 1)[0]
    if remote_name.lower() != remote_name:
        raise _invalid(
            text, f"invalid reference format: repository name ({remote_name}) must be lowercase"
        )
    match = _REFERENCE.fullmatch(f"{domain}/{remainder}")
    if match is None:
        raise _invalid(text, f'"{text}" is not a valid reference: invalid reference format')
    path = match["path"]
    if len(path) > MAX_PATH_LENGTH:
        raise _invalid(text, f"repository name must not be more than {MAX_PATH_LENGTH} characters")
    digest = parse_digest(match["digest"]) if match["digest"] else None
    tag = match["tag"]
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(match["domain"], path, tag, digest)


def parse_tag_target(text: str) -> Reference:
    """Parse the target of a Tag: Docker's rules for what a new tag may be."""
    reference = parse_reference(text)
    if reference.digest is not None:
        raise _invalid(text, "refusing to create a tag with a digest reference")
    if reference.familiar_name == "sha256":
        raise _invalid(text, "refusing to create an ambiguous tag using digest algorithm as name")
    return reference
