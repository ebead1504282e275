"""Platforms (``os/arch[/variant]``): parsing, normalisation and matching.

Normalisation follows containerd/platforms (``aarch64`` → ``arm64``, arm64's
default variant is v8, ``armhf`` → ``arm/v7`` …). Matching accepts the same
architecture with an equal or older variant, best first: ``amd64/v3`` also runs
v2 and v1, ``arm/v7`` runs v6 and v5, ``arm64/v8.2`` runs v8.1 and v8.0.
Unlike containerd's ``Only()``, another architecture (``386`` on amd64, 32-bit
arm on arm64) is picked only when it is asked for by name: an index that lacks
the host's architecture is an error naming what it offers, not a silent switch.
"""

from __future__ import annotations

import platform as host
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from imagestore import errors

if TYPE_CHECKING:
    from imagestore.oci.manifests import ImageConfig

_COMPONENT = re.compile(r"[a-z0-9_.-]+")


@dataclass(frozen=True, slots=True, order=True)
class Platform:
    """A normalised platform. ``variant`` is "" when it is the default one."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)

    def to_json(self) -> dict[str, str]:
        """The OCI ``platform`` object."""
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        return out


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    arch, variant = arch.lower(), variant.lower()
    if arch in ("i386",):
        return "386", ""
    # arm64's default variant is v8, written "8", "v8", "8.0" or "v8.0"
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant in ("", "v1", "1") else _v(variant)
    if arch in ("aarch64", "arm64"):
        return "arm64", "" if _v(variant) in ("v", "v8", "v8.0") else _v(variant)
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        return "arm", "v7" if variant in ("", "7") else _v(variant)
    return arch, variant


def _v(variant: str) -> str:
    return variant if variant.startswith("v") else f"v{variant}"


def normalize(os: str, architecture: str, variant: str = "", os_version: str = "") -> Platform:
    """Normalise os, architecture and variant the way containerd does."""
    os = os.lower()
    if os == "macos":
        os = "darwin"
    arch, variant = _normalize_arch(architecture, variant)
    return Platform(os, arch, variant, os_version)


def parse_platform(text: str) -> Platform:
    """Parse ``os[/arch[/variant]]``; a missing arch is the host's."""
    parts = text.strip().lower().split("/")
    if not 1 <= len(parts) <= 3 or not all(_COMPONENT.fullmatch(p) for p in parts):
        raise errors.PlatformInvalid(
            f"invalid platform {text!r}: want os[/arch[/variant]], e.g. linux/arm64",
            metadata={"platform": text[:100]},
        )
    if len(parts) == 1:
        if parts[0] in ("linux", "windows", "darwin", "freebsd"):
            return normalize(parts[0], host_platform().architecture)
        raise errors.PlatformInvalid(
            f"invalid platform {text!r}: unknown operating system {parts[0]!r}",
            metadata={"platform": text[:100]},
        )
    return normalize(*parts)


def platform_from_json(obj: Mapping[str, Any] | None) -> Platform | None:
    """The ``platform`` object of an index entry (None when absent)."""
    if not obj:
        return None
    return normalize(
        str(obj.get("os", "")),
        str(obj.get("architecture", "")),
        str(obj.get("variant", "") or ""),
        str(obj.get("os.version", "") or ""),
    )


def host_platform() -> Platform:
    """The platform this server runs on (the default for pulls)."""
    return normalize("linux", host.machine() or "amd64")


def _variant_rank(arch: str, variant: str) -> tuple[int, ...]:
    """Order variants of one architecture; "" is the default (lowest) one."""
    if not variant:
        return (8, 0) if arch == "arm64" else (1,) if arch == "amd64" else (0,)
    numbers = re.findall(r"\d+", variant)
    return tuple(int(n) for n in numbers) or (0,)


def compatible(wanted: Platform, offered: Platform) -> int | None:
    """How well ``offered`` runs where ``wanted`` is asked: 0 = exact, larger =
    a worse fallback, None = not runnable."""
    if wanted.os != offered.os or wanted.architecture != offered.architecture:
        return None
    if wanted.variant == offered.variant:
        return 0
    if wanted.architecture not in ("amd64", "arm", "arm64"):
        return None
    want = _variant_rank(wanted.architecture, wanted.variant)
    have = _variant_rank(offered.architecture, offered.variant)
    if wanted.architecture == "arm64" and want[0] != have[0]:
        return None  # v9 and v8 lines are not ranked against each other here
    if have > want:
        return None
    return 1 + sum(abs(a - b) for a, b in zip(want, have, strict=False))


def best_match(wanted: Platform, offered: Iterable[tuple[Platform | None, Any]]) -> Any | None:
    """The first best entry of ``offered`` for ``wanted``; None if nothing runs."""
    best: tuple[int, Any] | None = None
    for candidate, item in offered:
        if candidate is None:
            continue
        score = compatible(wanted, candidate)
        if score is not None and (best is None or score < best[0]):
            best = (score, item)
    return None if best is None else best[1]


def platform_mismatch(image: str, config: ImageConfig, wanted: Sequence[Platform]) -> str:
    """Docker's words when an image of one platform runs on none of ``wanted``;
    "" when it runs on one (or its config names no platform: it runs anywhere)."""
    if not config.os or not config.architecture:
        return ""
    actual = normalize(config.os, config.architecture, config.variant)
    if any(compatible(platform, actual) is not None for platform in wanted):
        return ""
    asked = ", ".join(str(platform) for platform in wanted)
    return (
        f"image with reference {image} was found but does not match the specified platform:"
        f" wanted {asked}, actual: {actual}"
    )


def require_platform(image: str, config: ImageConfig, wanted: Sequence[Platform]) -> None:
    """PlatformNotFound, in docker's words, unless an image of one platform runs
    on one of ``wanted`` (save and push refuse what pull only warns of)."""
    mismatch = platform_mismatch(image, config, wanted)
    if mismatch:
        raise errors.PlatformNotFound(
            mismatch,
            metadata={"platform": ", ".join(map(str, wanted))[:500], "image": image[:300]},
        )
