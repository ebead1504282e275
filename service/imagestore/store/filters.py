"""Filters of ListImages, Prune and WatchEvents, parsed from Docker's
``key=value`` strings.

Keys and error texts follow ``docker image ls --filter``, ``docker image
prune --filter`` and ``docker events --filter`` (daemon/internal/filters,
daemon/internal/timestamp, daemon/events/filter.go).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from imagestore import errors
from imagestore.oci.digests import is_id_prefix
from imagestore.oci.globs import Glob, compile_glob
from imagestore.oci.references import Reference, parse_reference
from imagestore.oci.times import parse_rfc3339
from imagestore.store.models import Event, EventKind

LIST_KEYS = ("dangling", "label", "before", "since", "reference", "until")
#: filters in one request: docker users give a handful; each reference glob is
#: matched against every name, so their number multiplies a listing's cost
MAX_FILTERS = 64
#: a reference pattern's length: a reference is at most 255 characters plus its domain
MAX_PATTERN_LENGTH = 1024
PRUNE_KEYS = ("dangling", "label", "label!", "until")
EVENT_KEYS = ("type", "event", "image", "reference", "label")
#: docker's event types: only images have events here; the others select none
EVENT_TYPES = (
    "image", "container", "volume", "network", "daemon", "plugin", "node", "service",
    "secret", "config",
)  # fmt: skip
#: the shortest image ID prefix an ``image=`` event filter takes (docker's short ID)
MIN_EVENT_ID_PREFIX = 12


@dataclass(frozen=True, slots=True)
class LabelFilter:
    """``key`` (present) or ``key=value`` (exact, case-sensitive)."""

    key: str
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> LabelFilter:
        key, sep, value = text.partition("=")
        if not key:
            raise _invalid("label", text)
        return cls(key, value if sep else None)

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.key not in labels:
            return False
        return self.value is None or labels[self.key] == self.value


@dataclass(frozen=True, slots=True)
class ListFilters:
    dangling: bool | None = None
    labels: tuple[LabelFilter, ...] = ()  # ANDed
    before: tuple[str, ...] = ()  # image references; the oldest wins
    since: tuple[str, ...] = ()  # image references; the newest wins
    references: tuple[str, ...] = ()  # path.Match globs; ORed
    until: datetime | None = None  # created before


@dataclass(frozen=True, slots=True)
class PruneFilters:
    dangling: bool | None = None  # None: the caller's default (dangling unless all)
    until: datetime | None = None  # stored here before this time
    labels: tuple[LabelFilter, ...] = ()  # ANDed
    not_labels: tuple[LabelFilter, ...] = ()  # an image with any of these is kept


@dataclass(frozen=True, slots=True)
class EventFilters:
    """``docker events --filter``: the same key ORed, different keys ANDed;
    labels, as docker matches them, all ANDed. Empty: every event."""

    types: frozenset[str] = frozenset()
    kinds: frozenset[EventKind] = frozenset()
    id_prefixes: tuple[str, ...] = ()  #: hex of image IDs (image=<ID or prefix>)
    names: frozenset[str] = frozenset()  #: canonical names (image=<name:tag>)
    repositories: frozenset[str] = frozenset()  #: canonical repositories (image=<name>)
    references: tuple[Glob, ...] = ()  #: path.Match globs on the name's forms
    labels: tuple[LabelFilter, ...] = ()
    has_image: bool = False  #: an image= filter was given

    def matches(self, event: Event) -> bool:
        """Whether docker's filter would show this event."""
        if self.types and "image" not in self.types:
            return False
        if self.kinds and event.kind not in self.kinds:
            return False
        canonical = event.name.canonical if event.name is not None else ""
        if self.has_image and not self._image_matches(event.image_id, canonical):
            return False
        if self.references:
            if not canonical:
                return False
            forms = reference_forms(canonical)
            if not any(glob.match(form) for glob in self.references for form in forms):
                return False
        return all(label.matches(event.labels) for label in self.labels)

    def _image_matches(self, image_id: str, canonical: str) -> bool:
        hex_id = image_id.removeprefix("sha256:")
        if hex_id and any(hex_id.startswith(prefix) for prefix in self.id_prefixes):
            return True
        if not canonical:
            return False
        return canonical in self.names or _repository(canonical) in self.repositories


@lru_cache(maxsize=4096)
def _parsed(canonical: str) -> Reference:
    return parse_reference(canonical, default_tag=False)


def _repository(canonical: str) -> str:
    return _parsed(canonical).name


def reference_forms(canonical: str) -> tuple[str, ...]:
    """The strings a reference filter may match: familiar and canonical, with
    and without tag or digest."""
    reference = _parsed(canonical)
    return (reference.familiar(), reference.familiar_name, str(reference), reference.name)


def parse_event_filters(items: Iterable[str]) -> EventFilters:
    """WatchEvents' filters; FilterInvalid for an unknown key or a bad value."""
    groups = split_filters(items, EVENT_KEYS)
    for value in groups.get("type", []):
        if value not in EVENT_TYPES:
            raise _invalid("type", value)
    kinds = set()
    for value in groups.get("event", []):
        try:
            kinds.add(EventKind(value))
        except ValueError:
            raise _invalid("event", value) from None
    prefixes: list[str] = []
    names: set[str] = set()
    repositories: set[str] = set()
    for value in groups.get("image", []):
        hex_part = value.removeprefix("sha256:")
        as_id = is_id_prefix(value) and (
            value.startswith("sha256:") or len(hex_part) >= MIN_EVENT_ID_PREFIX
        )
        if as_id:
            prefixes.append(hex_part)
        try:
            reference = parse_reference(value, default_tag=False)
        except errors.InvalidArgument:
            if not as_id:
                raise _invalid("image", value) from None
            continue
        if reference.tag is None and reference.digest is None:
            repositories.add(reference.name)
        else:
            names.add(str(reference))
    globs = [compile_glob(pattern) for pattern in groups.get("reference", [])]
    return EventFilters(
        types=frozenset(groups.get("type", [])),
        kinds=frozenset(kinds),
        id_prefixes=tuple(prefixes),
        names=frozenset(names),
        repositories=frozenset(repositories),
        references=tuple(globs),
        labels=_labels(groups, "label"),
        has_image="image" in groups,
    )


def _invalid(key: str, value: str) -> errors.FilterInvalid:
    return errors.FilterInvalid(
        f"invalid filter '{key}={value}'", metadata={"filter": key, "value": value[:200]}
    )


def split_filters(items: Iterable[str], accepted: tuple[str, ...]) -> dict[str, list[str]]:
    """``["label=a", "dangling=true"]`` → ``{"label": ["a"], "dangling": ["true"]}``."""
    result: dict[str, list[str]] = {}
    items = list(items)
    if len(items) > MAX_FILTERS:
        raise errors.FilterInvalid(
            f"too many filters: {len(items)} (at most {MAX_FILTERS})",
            metadata={"filters": str(len(items)), "limit": str(MAX_FILTERS)},
        )
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise errors.FilterInvalid(
                f"bad format of filter (expected name=value): {item[:100]!r}",
                metadata={"filter": item[:100]},
            )
        if key not in accepted:
            raise errors.FilterInvalid(  # the valid keys, as the user needs them next
                f"invalid filter '{key[:100]}' (valid filters: {', '.join(sorted(accepted))})",
                metadata={"filter": key[:100]},
            )
        if key == "reference" and len(value) > MAX_PATTERN_LENGTH:
            raise errors.FilterInvalid(
                f"reference filter longer than {MAX_PATTERN_LENGTH} characters",
                metadata={"filter": key, "limit": str(MAX_PATTERN_LENGTH)},
            )
        result.setdefault(key, []).append(value)
    return result


def parse_bool(key: str, values: list[str]) -> bool:
    parsed = set()
    for value in values:
        if value.lower() in ("true", "1"):
            parsed.add(True)
        elif value.lower() in ("false", "0"):
            parsed.add(False)
        else:
            raise _invalid(key, value)
    if len(parsed) != 1:
        raise errors.FilterInvalid(
            f"invalid filter '{key}=[{' '.join(values)}]'", metadata={"filter": key}
        )
    return parsed.pop()


def _until(groups: dict[str, list[str]], now: datetime | None) -> datetime | None:
    values = groups.get("until", [])
    if len(values) > 1:
        raise errors.FilterInvalid(
            "more than one until filter specified", metadata={"filter": "until"}
        )
    return parse_timestamp(values[0], now) if values else None


def _dangling(groups: dict[str, list[str]]) -> bool | None:
    return parse_bool("dangling", groups["dangling"]) if "dangling" in groups else None


def _labels(groups: dict[str, list[str]], key: str) -> tuple[LabelFilter, ...]:
    return tuple(LabelFilter.parse(value) for value in groups.get(key, []))


def parse_list_filters(items: Iterable[str], now: datetime | None = None) -> ListFilters:
    groups = split_filters(items, LIST_KEYS)
    return ListFilters(
        dangling=_dangling(groups),
        labels=_labels(groups, "label"),
        before=tuple(groups.get("before", [])),
        since=tuple(groups.get("since", [])),
        references=tuple(groups.get("reference", [])),
        until=_until(groups, now),
    )


def parse_prune_filters(items: Iterable[str], now: datetime | None = None) -> PruneFilters:
    groups = split_filters(items, PRUNE_KEYS)
    return PruneFilters(
        dangling=_dangling(groups),
        until=_until(groups, now),
        labels=_labels(groups, "label"),
        not_labels=_labels(groups, "label!"),
    )


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_LOCAL_FORMATS = (
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%dT%H",
    "%Y-%m-%d",
)
_UNIX = re.compile(r"(\d+)(?:\.(\d{1,9}))?")


def parse_go_duration(text: str) -> timedelta | None:
    """Go's ``time.ParseDuration`` (``10m``, ``1h30m``, ``1.5h``); None if not one."""
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    if not body:
        return None
    position, seconds = 0, 0.0
    for match in _DURATION_PART.finditer(body):
        if match.start() != position:
            return None
        seconds += float(match[1]) * _UNITS[match[2]]
        position = match.end()
    if position != len(body) or position == 0:
        return None
    try:
        return timedelta(seconds=sign * seconds)
    except OverflowError:  # Go: "invalid duration" past ~290 years
        return None


def parse_timestamp(value: str, now: datetime | None = None) -> datetime:
    """Docker's ``until`` syntax: a Go duration before now, RFC 3339 (local
    time when no zone is given), or Unix ``seconds[.nanoseconds]``."""
    try:
        return _parse_timestamp(value, now)
    except (OverflowError, ValueError, OSError):  # a time outside what datetime holds
        raise _bad_until(value) from None


def _bad_until(value: str) -> errors.FilterInvalid:
    return errors.FilterInvalid(
        f"invalid value for 'until' filter: {value[:100]!r} is not a duration, RFC 3339 time"
        " or Unix timestamp",
        metadata={"filter": "until", "value": value[:100]},
    )


def _parse_timestamp(value: str, now: datetime | None) -> datetime:
    now = now or datetime.now(tz=UTC)
    text = value.strip()
    if not text:
        raise errors.FilterInvalid(
            "invalid value for 'until' filter: empty", metadata={"filter": "until"}
        )
    if text != "0" and (duration := parse_go_duration(text)) is not None:
        return now - duration
    if "T" in text or re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        parsed = parse_rfc3339(text)
        for pattern in _LOCAL_FORMATS if parsed is None else ():
            try:
                parsed = datetime.strptime(text, pattern)
                break
            except ValueError:
                continue
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.astimezone()  # server's local zone
    if match := _UNIX.fullmatch(text):
        nanos = int((match[2] or "0").ljust(9, "0"))
        return datetime.fromtimestamp(int(match[1]), tz=UTC) + timedelta(microseconds=nanos // 1000)
    raise _bad_until(value)
