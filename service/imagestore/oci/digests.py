"""Content digests: ``sha256:<64 lowercase hex>``, the only algorithm stored.

A digest string that passes :func:`parse_digest` is safe to use as a file name.
"""

from __future__ import annotations

import re

from imagestore import errors

SHA256_PREFIX = "sha256:"
_SHA256 = re.compile(r"sha256:[a-f0-9]{64}")
# The OCI grammar for any algorithm, to tell "unsupported" from "malformed".
_ANY_ALGORITHM = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_HEX_PREFIX = re.compile(r"[a-f0-9]{1,64}")


def is_digest(value: str) -> bool:
    """True for a well-formed ``sha256:<64 lowercase hex>``."""
    return _SHA256.fullmatch(value) is not None


def parse_digest(value: str) -> str:
    """Validate a digest; raise InvalidArgument saying what is wrong."""
    if _SHA256.fullmatch(value):
        return value
    if _ANY_ALGORITHM.fullmatch(value):
        algorithm, _, encoded = value.partition(":")
        if algorithm != "sha256":
            raise errors.DigestInvalid(
                f"unsupported digest algorithm {algorithm!r}: only sha256 is supported",
                metadata={"digest": value[:80]},
            )
        raise errors.DigestInvalid(
            f"invalid sha256 digest {value[:80]!r}: want 64 lowercase hex characters,"
            f" got {len(encoded)}",
            metadata={"digest": value[:80]},
        )
    raise errors.DigestInvalid(
        f"invalid digest {value[:80]!r}: want sha256:<64 hex>", metadata={"digest": value[:80]}
    )


def digest_hex(digest: str) -> str:
    """The hex part of a validated digest (its file name in blobs/sha256/)."""
    return parse_digest(digest)[len(SHA256_PREFIX) :]


def short_id(digest: str) -> str:
    """Docker's 12-character short form of an image ID."""
    return digest_hex(digest)[:12]


def is_id_prefix(value: str) -> bool:
    """True when value could name an image by ID prefix (optionally ``sha256:``)."""
    hex_part = value.removeprefix(SHA256_PREFIX)
    return _HEX_PREFIX.fullmatch(hex_part) is not None
