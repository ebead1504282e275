"""Reference globs: Go's ``path.Match``, in time linear in pattern and name.

``docker image ls --filter reference=PATTERN`` matches names with Go's
``path.Match``: ``*`` is any run of characters other than ``/``, ``?`` one
character other than ``/``, ``[...]`` a class (ranges ``a-z``, ``^`` negates;
a class *may* match ``/``), ``\\`` escapes. A malformed pattern is an error
whatever the name (Go 1.16 and later), so it is refused before any matching.

Translating a glob into a backtracking regex made ``*a*a*a*a*a*a*a*a*a*b``
exponential in the length of a name of ``a``'s. Here, as in Go, the pattern is
a list of chunks: single-character terms, each chunk after a star or not. A
chunk is matched at the leftmost start its star allows and never revisited
(Go commits to it: the next star absorbs whatever lies between); only the last
chunk must end at the end of the name. Every term matches exactly one
character, so a chunk is found with ``str.find`` (plain text) or a regex of
fixed width with no repetition and no alternation: one attempt reads at most
its width, a search tries each start once, so a match costs
O(len(pattern) * len(name)) at worst, and a pattern with more terms than the
name has characters is refused before it is even split into chunks.

Go reads UTF-8 bytes: after a star it may start a chunk inside a multi-byte
character, where ``?`` and classes see U+FFFD. References are ASCII, where
bytes and characters coincide; other names take a byte-level path
(:meth:`Glob.match_bytes`) that follows Go step by step.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from imagestore import errors

__all__ = ["Glob", "compile_glob", "path_match"]

_SLASH = ord("/")
_ASCII = (1 << 128) - 1
_REPLACEMENT = 0xFFFD

# A class: characters, escaped (anything but a surrogate, which is not valid
# UTF-8) or plain (not ``\``, ``-``, ``]``, nor a surrogate), and ranges
# ``lo-hi`` whose ``hi`` no ``-`` follows (``[a-b-c]`` is malformed).
_PLAIN = r"[^\\\-\]\ud800-\udfff]"
_ESCAPED = r"\\[^\ud800-\udfff]"
_CLASS_CHAR = rf"(?:{_PLAIN}|{_ESCAPED})"
_CLASS = rf"\[\^?+{_CLASS_CHAR}(?:{_PLAIN}++|{_ESCAPED}|-{_CLASS_CHAR}(?!-))*+\]"
# The whole grammar, possessive so that a refusal costs one linear pass too.
_VALID = re.compile(rf"(?:[^*?\\\[]++|\*++|\?++|\\.|{_CLASS})*+", re.DOTALL)
# In a valid pattern: the escapes and classes, each one term.
_ESCAPE_OR_CLASS = re.compile(r"\\.|\[\^?+(?:[^\\\]]++|\\.)++\]", re.DOTALL)
_TERM = re.compile(
    r"(?P<star>\*++)|(?P<any>\?)|\\(?P<escaped>.)"
    r"|\[(?P<negated>\^?+)(?P<body>(?:[^\\\]]++|\\.)++)\]|(?P<literal>[^*?\\\[]++)",
    re.DOTALL,
)
_RANGE = re.compile(r"(\\.|[^\\\-])(?:-(\\.|[^\\\-]))?", re.DOTALL)
# A class body in one character per term (see _ascii_mask): escaped '\' and
# '-' become surrogates, which a valid class cannot hold; every other
# character beyond ASCII becomes U+0080.
_BACKSLASH_MARK = "\ud800"
_DASH_MARK = "\ud801"
_BEYOND_ASCII = re.compile("[^\x00-\x7f\ud800\ud801]")
_SHORT_RANGE = re.compile(r"(.)-(.)", re.DOTALL)
_MARKED = {_BACKSLASH_MARK: ord("\\"), _DASH_MARK: ord("-")}


def _bad_pattern(pattern: str) -> errors.FilterInvalid:
    shown = pattern if len(pattern) <= 200 else pattern[:200] + "…"
    return errors.FilterInvalid(
        f"invalid reference filter {shown!r}: syntax error in pattern",
        metadata={"filter": "reference", "value": pattern[:200]},
    )


@dataclass(frozen=True, slots=True)
class _Literal:
    text: str
    encoded: bytes  # Go compares a literal byte by byte

    @classmethod
    def of(cls, text: str) -> _Literal:
        return cls(text, text.encode("utf-8", "surrogatepass"))

    @property
    def width(self) -> int:
        return len(self.text)

    def regex(self) -> str:
        return re.escape(self.text)

    def match_bytes(self, name: bytes, at: int) -> int:
        return at + len(self.encoded) if name.startswith(self.encoded, at) else -1


@dataclass(frozen=True, slots=True)
class _AnyChar:
    width = 1

    def regex(self) -> str:
        return "[^/]"

    def match_bytes(self, name: bytes, at: int) -> int:
        if at >= len(name) or name[at] == _SLASH:
            return -1
        return at + _decode_rune(name, at)[1]


@dataclass(frozen=True)
class _Class:
    negated: bool
    body: str  # validated: characters and ranges, escapes kept
    width = 1

    def _ranges(self) -> Iterator[tuple[int, int]]:
        """(lo, hi) code points; Go keeps a reversed range, which matches nothing."""
        for item in _RANGE.finditer(self.body):
            lo = ord(item[1][-1])  # "\\x" or "x": the character is the last one
            yield lo, ord(item[2][-1]) if item[2] else lo

    @cached_property
    def spans(self) -> tuple[tuple[int, int], ...]:
        """The ranges that match something, sorted and merged."""
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted(span for span in self._ranges() if span[0] <= span[1]):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
            else:
                merged.append((lo, hi))
        return tuple(merged)

    def contains(self, rune: int) -> bool:
        found = any(lo <= rune <= hi for lo, hi in self.spans)
        return found != self.negated

    def regex(self) -> str:
        # Only ASCII names reach a regex: the class reduces to a set of 128 bits.
        mask = _ascii_mask(self.body)
        return _ascii_set(_ASCII & ~mask if self.negated else mask)

    def match_bytes(self, name: bytes, at: int) -> int:
        if at >= len(name):
            return -1
        rune, size = _decode_rune(name, at)
        return at + size if self.contains(rune) else -1


_Term = _Literal | _AnyChar | _Class


def _ascii_mask(body: str) -> int:
    """The ASCII characters a class body names, as bits.

    A class may be megabytes long: only passes in C read all of it, and what
    Python loops over is deduplicated first (at most 131 distinct characters).
    """
    text = body.replace("\\\\", _BACKSLASH_MARK).replace("\\-", _DASH_MARK).replace("\\", "")
    text = _BEYOND_ASCII.sub("\x80", text)
    mask = 0
    for char in set(_SHORT_RANGE.sub("", text)):
        code = _MARKED.get(char, ord(char))
        if code < 128:
            mask |= 1 << code
    for lo, hi in set(_SHORT_RANGE.findall(text)):
        low, top = _MARKED.get(lo, ord(lo)), min(_MARKED.get(hi, ord(hi)), 127)
        if low <= top:  # Go keeps a reversed range: it matches nothing
            mask |= (2 << top) - (1 << low)
    return mask


@lru_cache(maxsize=256)
def _ascii_set(mask: int) -> str:
    """A regex class of the ASCII characters in ``mask`` (never matching if none)."""
    if not mask:
        return r"[^\x00-\x7f]"
    spans: list[str] = []
    code = 0
    while code < 128:
        if mask >> code & 1:
            end = code
            while end + 1 < 128 and mask >> (end + 1) & 1:
                end += 1
            spans.append(f"\\x{code:02x}" + (f"-\\x{end:02x}" if end > code else ""))
            code = end + 1
        else:
            code += 1
    return "[" + "".join(spans) + "]"


def _decode_rune(data: bytes, at: int) -> tuple[int, int]:
    """Go's utf8.DecodeRune: (rune, size), or (U+FFFD, 1) where the bytes are not UTF-8."""
    lead = data[at]
    if lead < 0x80:
        return lead, 1
    # The length a lead byte announces; Python's strict decoder refuses what
    # Go refuses (overlong forms, surrogates, beyond U+10FFFF, short input).
    size = 2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else 4
    if lead >= 0xC2 and lead <= 0xF4:
        try:
            return ord(data[at : at + size].decode("utf-8")), size
        except UnicodeDecodeError:
            pass
    return _REPLACEMENT, 1


@dataclass
class _Chunk:
    """Single-character terms, after a star (``star``) or at the start."""

    star: bool
    terms: list[_Term] = field(default_factory=list)

    @cached_property
    def width(self) -> int:
        return sum(term.width for term in self.terms)

    @cached_property
    def literal(self) -> str | None:
        """The text of a chunk of plain characters only: matched without a regex."""
        only = self.terms[0] if len(self.terms) == 1 else None
        return only.text if isinstance(only, _Literal) else None

    @cached_property
    def compiled(self) -> re.Pattern[str]:
        """A regex of fixed width: one single-character item per term character."""
        return re.compile("".join(term.regex() for term in self.terms), re.DOTALL)

    def find(self, name: str, at: int, latest: int) -> int:
        """The end of the leftmost match starting in ``[at, latest]``, or -1 (ASCII)."""
        stop = min(len(name), latest + self.width)
        if self.literal is not None:
            start = name.find(self.literal, at, stop)
            return -1 if start < 0 else start + self.width
        found = self.compiled.search(name, at, stop)
        return -1 if found is None else found.end()

    def fits(self, name: str, start: int) -> bool:
        """Whether a match starts at ``start`` (ASCII)."""
        if self.literal is not None:
            return name.startswith(self.literal, start)
        return self.compiled.match(name, start) is not None

    def match_bytes(self, name: bytes, at: int) -> int:
        """Go's matchChunk: the end of a match starting at ``at``, or -1."""
        for term in self.terms:
            at = term.match_bytes(name, at)
            if at < 0:
                return -1
        return at


def _parse(pattern: str) -> list[_Chunk]:
    chunks = [_Chunk(star=False)]
    literal: list[str] = []  # adjacent plain and escaped characters, joined once

    def end_literal() -> None:
        if literal:
            chunks[-1].terms.append(_Literal.of("".join(literal)))
            literal.clear()

    for token in _TERM.finditer(pattern):
        kind = token.lastgroup
        if kind in ("escaped", "literal"):
            literal.append(token[kind])
            continue
        end_literal()
        if kind == "star":
            chunks.append(_Chunk(star=True))
        elif kind == "any":
            chunks[-1].terms.append(_AnyChar())
        else:
            chunks[-1].terms.append(_Class(negated=bool(token["negated"]), body=token["body"]))
    end_literal()
    if not chunks[0].terms:
        chunks.pop(0)  # the pattern starts with a star (or is empty)
    return chunks


class Glob:
    """A validated ``path.Match`` pattern, ready to match many names.

    Raises InvalidArgument (Go's ErrBadPattern) for a malformed pattern: an
    unclosed or empty class, a trailing backslash, a range missing an end
    (``[a-]``, ``[-a]``, ``[a-b-c]``), a ``-`` or ``]`` unescaped in a class.
    """

    __slots__ = ("_chunks", "pattern", "width")

    def __init__(self, pattern: str) -> None:
        if _VALID.fullmatch(pattern) is None:
            raise _bad_pattern(pattern)
        self.pattern = pattern
        # Each term matches one character: a name shorter than that never
        # matches, so a long pattern costs nothing more than this count.
        terms = _ESCAPE_OR_CLASS.sub("?", pattern)
        self.width = len(terms) - terms.count("*")
        self._chunks: list[_Chunk] | None = None

    def __repr__(self) -> str:
        return f"Glob({self.pattern!r})"

    def chunks(self) -> list[_Chunk]:
        """The chunks, parsed on first use (only once a name is long enough)."""
        if self._chunks is None:
            self._chunks = _parse(self.pattern)
        return self._chunks

    def match(self, name: str) -> bool:
        """Whether ``name`` matches, exactly as Go's ``path.Match``."""
        if not name.isascii():
            return self.match_bytes(name.encode("utf-8", "surrogatepass"))
        if self.width > len(name):
            return False
        return self._match_ascii(name)

    def _match_ascii(self, name: str) -> bool:
        end = len(name)
        at = 0
        chunks = self.chunks()
        for index, chunk in enumerate(chunks):
            latest = at  # the latest start: a star skips characters other than '/'
            if chunk.star:
                slash = name.find("/", at)
                if not chunk.terms:
                    return slash < 0  # a trailing star takes the rest, unless it has a '/'
                latest = end if slash < 0 else slash
            if index == len(chunks) - 1:
                start = end - chunk.width  # a fixed width: only one start can end the name
                return at <= start <= latest and chunk.fits(name, start)
            at = chunk.find(name, at, latest)
            if at < 0:
                return False
        return at == end

    def match_bytes(self, name: bytes) -> bool:
        """Go's algorithm over UTF-8 bytes, step by step (names that are not ASCII)."""
        if self.width > len(name):
            return False
        end = len(name)
        at = 0
        chunks = self.chunks()
        for index, chunk in enumerate(chunks):
            if chunk.star and not chunk.terms:
                return name.find(b"/", at) < 0
            last = index == len(chunks) - 1
            found = chunk.match_bytes(name, at)
            if found < 0 or (last and found != end):
                found = -1
                if chunk.star:
                    found = self._skip(chunk, name, at, last)
                if found < 0:
                    return False
            at = found
        return at == end

    @staticmethod
    def _skip(chunk: _Chunk, name: bytes, at: int, last: bool) -> int:
        """Go's star loop: the chunk after skipping 1, 2, … bytes other than '/'."""
        for skip in _starts(name, at):
            found = chunk.match_bytes(name, skip)
            if found >= 0 and not (last and found != len(name)):
                return found
        return -1


def _starts(name: bytes, at: int) -> Iterator[int]:
    while at < len(name) and name[at] != _SLASH:
        at += 1
        yield at


class _Cache:
    """Compiled globs, least recently used first out, bounded in entries and characters."""

    def __init__(self, entries: int, chars: int) -> None:
        self._entries = entries
        self._chars = chars
        self._held = 0
        self._globs: OrderedDict[str, Glob] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, pattern: str) -> Glob:
        with self._lock:
            glob = self._globs.get(pattern)
            if glob is not None:
                self._globs.move_to_end(pattern)
                return glob
        glob = Glob(pattern)
        if len(pattern) <= self._chars:
            with self._lock:
                if pattern not in self._globs:
                    self._globs[pattern] = glob
                    self._held += len(pattern)
                while len(self._globs) > self._entries or self._held > self._chars:
                    evicted, _ = self._globs.popitem(last=False)
                    self._held -= len(evicted)
        return glob


# ListImages matches each pattern against every name of every image: compiled
# once per pattern, kept while in use (a pattern is at most a message long).
_CACHE = _Cache(entries=256, chars=16 << 20)


def compile_glob(pattern: str) -> Glob:
    """The compiled glob for ``pattern`` (cached); InvalidArgument if malformed."""
    return _CACHE.get(pattern)


def path_match(pattern: str, name: str) -> bool:
    """Go's ``path.Match``: ``*`` and ``?`` never cross ``/``; ``[^…]`` negates.

    Raises InvalidArgument for a malformed pattern (Go's ErrBadPattern),
    whatever the name.
    """
    return compile_glob(pattern).match(name)
