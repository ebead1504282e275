"""ListImages: one row per image, Docker's filters, newest first, keyset pages."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from imagestore import errors
from imagestore.oci.globs import Glob, compile_glob
from imagestore.store.filters import ListFilters, reference_forms
from imagestore.store.images import from_ns, image_summary, named_indexes, summary
from imagestore.store.models import ImageSummary
from imagestore.store.names import resolve_image
from imagestore.store.parts import Parts

DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 10_000


#: a row's size as the caller will send it
Measure = Callable[[ImageSummary], int]


@dataclass(frozen=True, slots=True)
class Page:
    images: tuple[ImageSummary, ...]
    next_page_token: str  # "" on the last page


def query_key(filters: ListFilters, show_all: bool) -> str:
    """What a page token is bound to: the filters and ``all`` of its listing."""
    return hashlib.sha256(repr((filters, show_all)).encode()).hexdigest()[:16]


def encode_token(key: tuple[int, str], query: str) -> str:
    raw = json.dumps({"c": key[0], "i": key[1], "q": query}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, query: str) -> tuple[int, str]:
    """The keyset position in ``token``; refused unless the token was issued for
    the same filters and ``all`` (``query``): a page of another listing would
    silently skip or repeat rows."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        key, issued_for = (int(data["c"]), str(data["i"])), data["q"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise errors.PageTokenInvalid(
            "invalid page_token: pass back the next_page_token of a previous page",
            metadata={"page_token": token[:100]},
        ) from None
    if issued_for != query:
        raise errors.PageTokenInvalid(
            "page_token belongs to a listing with other filters or another 'all':"
            " send the filters and 'all' of the request that returned it",
            metadata={"page_token": token[:100]},
        )
    return key


def matching_names(names: list[str], globs: list[Glob]) -> list[str]:
    """The names a reference filter keeps (docker lists only those for the image)."""
    return [
        name
        for name in names
        if any(glob.match(form) for form in reference_forms(name) for glob in globs)
    ]


def _in_window(
    created: datetime | None,
    before: datetime | None,
    since: datetime | None,
    until: datetime | None,
) -> bool:
    """before/since/until compare the build time; an image without one never matches."""
    if created is None:
        return False
    if before is not None and not created < before:
        return False
    if since is not None and not created > since:
        return False
    return until is None or created < until


def list_images(
    parts: Parts,
    filters: ListFilters | None = None,
    *,
    show_all: bool = False,
    page_size: int = 0,
    page_token: str = "",
    max_bytes: int | None = None,
    measure: Measure | None = None,
) -> Page:
    """Images newest first. Dangling ones are hidden unless ``show_all`` or
    ``dangling=true``. ``page_size`` 0 means 1,000; it is capped at 10,000.

    With ``max_bytes`` and ``measure`` (a row's size as the caller will send
    it), a page also ends before its rows would add up to more than
    ``max_bytes``; it always holds at least one row, so paging advances."""
    filters = filters or ListFilters()
    if page_size < 0:
        raise errors.PageSizeInvalid(
            "page_size must not be negative", metadata={"page_size": str(page_size)}
        )
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    query = query_key(filters, show_all)
    after = decode_token(page_token, query) if page_token else None
    # compiled once (a malformed pattern is refused even on an empty store)
    globs = [compile_glob(pattern) for pattern in filters.references]

    rows: list[ImageSummary] = []
    last_key: tuple[int, str] | None = None
    more = False
    used = 0  # bytes of the rows so far, as measured
    with parts.catalog.reading() as db:
        before = [image_summary(db, resolve_image(db, r)).created for r in filters.before]
        since = [image_summary(db, resolve_image(db, r)).created for r in filters.since]
        oldest_before = min((t for t in before if t is not None), default=None)
        newest_since = max((t for t in since if t is not None), default=None)
        names = db.name_strings_by_image()
        indexes = named_indexes(db)
        for image in db.images(after):
            image_names = names.get(image.id, [])
            dangling = not image_names
            if filters.dangling is not None:
                if dangling != filters.dangling:
                    continue
            elif dangling and not show_all:
                continue
            if filters.labels and not all(label.matches(image.labels) for label in filters.labels):
                continue
            if filters.references:
                image_names = matching_names(image_names, globs)
                if not image_names:
                    continue
            if (before or since or filters.until) and not _in_window(
                from_ns(image.created), oldest_before, newest_since, filters.until
            ):
                continue
            if len(rows) == size:
                more = True
                break
            row = summary(image, image_names, indexes.get(image.id, ()))
            if max_bytes is not None and measure is not None:
                row_bytes = measure(row)
                if rows and used + row_bytes > max_bytes:
                    more = True
                    break
                used += row_bytes
            rows.append(row)
            last_key = (image.created or 0, image.id)
    token = encode_token(last_key, query) if more and last_key is not None else ""
    return Page(tuple(rows), token)
