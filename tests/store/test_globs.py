"""Reference globs: Go's path.Match, case for case, in linear time.

The table follows Go's semantics (path/match_test.go's cases, written out
here, plus the corners of Go's algorithm); the properties compare the matcher
with an independent backtracking reference, the fast path with the byte-level
port of Go's algorithm, and the refusals with Go's rules for a bad pattern.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagestore import errors
from imagestore.oci import globs
from imagestore.oci.globs import Glob, compile_glob, path_match
from imagestore.oci.references import path_match as path_match_from_references

ATTACK = "*a*a*a*a*a*a*a*a*a*b"

GO_CASES = [
    ("abc", "abc", True),
    ("*", "abc", True),
    ("*c", "abc", True),
    ("a*", "a", True),
    ("a*", "abc", True),
    ("a*", "ab/c", False),
    ("a*/b", "abc/b", True),
    ("a*/b", "a/c/b", False),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", True),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", False),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", False),
    ("a*b?c*x", "abxbbxdbxebxczzx", True),
    ("a*b?c*x", "abxbbxdbxebxczzy", False),
    ("ab[c]", "abc", True),
    ("ab[b-d]", "abc", True),
    ("ab[e-g]", "abc", False),
    ("ab[^c]", "abc", False),
    ("ab[^b-d]", "abc", False),
    ("ab[^e-g]", "abc", True),
    ("a\\*b", "a*b", True),
    ("a\\*b", "ab", False),
    ("a?b", "a☺b", True),
    ("a[^a]b", "a☺b", True),
    ("a???b", "a☺b", False),
    ("a[^a][^a][^a]b", "a☺b", False),
    ("[a-ζ]*", "\N{GREEK SMALL LETTER ALPHA}", True),
    ("*[a-ζ]", "A", False),
    ("a?b", "a/b", False),
    ("a*b", "a/b", False),
    ("[\\]a]", "]", True),
    ("[\\-]", "-", True),
    ("[x\\-]", "x", True),
    ("[x\\-]", "-", True),
    ("[x\\-]", "z", False),
    ("[\\-x]", "x", True),
    ("[\\-x]", "-", True),
    ("[\\-x]", "a", False),
    ("*x", "xxx", True),
]

GO_CORNERS = [
    ("", "", True),
    ("", "a", False),
    ("*", "", True),
    ("**", "a/b", False),
    ("*/*", "user/app", True),
    ("*", "user/app", False),
    ("a[^b]c", "a/c", True),  # a class may match '/', unlike ? and *
    ("a[/]c", "a/c", True),
    ("[b-a]", "a", False),  # a reversed range is valid and matches nothing
    ("[b-a]", "b", False),
    ("[^b-a]", "q", True),
    ("[^^]", "^", False),
    ("[\\^]", "^", True),
    ("[a^]", "^", True),
    ("a]b", "a]b", True),  # ']' and '-' outside a class are plain characters
    ("a-b^", "a-b^", True),
    ("\\a\\b", "ab", True),
    ("[\\\\]", "\\", True),
    ("[*?]", "*", True),
    ("[a*]*", "*aa", True),  # '*' in a class is a character, and splits no chunk
    ("[a*]*", "b*", False),
    ("[a*]*", "*/", False),
    ("*:*", "busybox:glibc", True),
    ("busy*:*libc", "busybox:uclibc", True),
    ("busy*:*libc", "busybox:musl", False),
    ("docker.io/library/redis:*", "docker.io/library/redis:7", True),
    ("app:?", "app:1", True),
    ("app:[0-9]", "app:7", True),
    ("app:[^0-9]", "app:x", True),
    ("app:[^0-9]", "app:7", False),
    ("a\\*", "a*", True),
    (ATTACK, "a" * 40, False),
    (ATTACK, "a" * 40 + "b", True),
    (ATTACK, "a" * 8 + "b", False),
    (ATTACK, "a" * 9 + "b", True),
    ("*" + "?a" * 20 + "b", "a" * 4000, False),
    # Go commits to a chunk's leftmost match: here '[a/]' takes the first 'a'
    # and the next star cannot cross the '/', although letting the first star
    # take the a's and '[a/]' the '/' would match. path.Match says false.
    ("*[a/]*b", "aa/b", False),
    ("*[a/]*b", "a/b", False),
    ("*[a/]*b", "/b", True),
    # Go reads bytes: after a star it may start inside 'é', where the class
    # sees U+FFFD, which is not 'é'.
    ("*[^é]", "é", True),
    ("[^é]", "é", False),
    ("*[\ufffd]", "é", True),
    ("é*", "é/", False),
]

MALFORMED = [
    # Go's ErrBadPattern cases of path/match_test.go...
    "[]a]",
    "[-]",
    "[x-]",
    "[-x]",
    "\\",
    "[a-b-c]",
    "[",
    "[^",
    "[^bc",
    "a[",
    "a/b[",
    # ...and more of the same rules
    "[]",
    "[^]",
    "[^]]",
    "a\\",
    "ab[c",
    "[a-",
    "[a-]b",
    "[a\\",
    "[\\",
    "*[",
    "a*b[",
    "[]*]",
    "[a--]",
    "[^-a]",
    "[\ud800]",  # not UTF-8: Go's class sees RuneError
    "[\\\udfff]",
]


@pytest.mark.parametrize(("pattern", "name", "matches"), GO_CASES + GO_CORNERS)
def test_globs_match_as_go_path_match(pattern: str, name: str, matches: bool) -> None:
    glob = Glob(pattern)
    assert glob.match(name) is matches
    assert glob.match_bytes(name.encode("utf-8", "surrogatepass")) is matches
    assert path_match(pattern, name) is matches


@pytest.mark.parametrize("pattern", MALFORMED)
@pytest.mark.parametrize("name", ["", "a", "x", "ab", "a/b", "]", "-", "zzzz/zzzz"])
def test_a_malformed_pattern_is_refused_whatever_the_name(pattern: str, name: str) -> None:
    # Go 1.16+: ErrBadPattern even where the name fails to match early.
    with pytest.raises(errors.InvalidArgument, match="syntax error in pattern") as raised:
        path_match(pattern, name)
    assert raised.value.metadata == {"filter": "reference", "value": pattern}


def test_the_error_names_a_long_pattern_by_its_start() -> None:
    pattern = "[" + "a" * 100_000
    with pytest.raises(errors.InvalidArgument) as raised:
        path_match(pattern, "a")
    assert len(raised.value.message) < 300
    assert raised.value.metadata["value"] == pattern[:200]


def test_path_match_stays_importable_from_references() -> None:
    assert path_match_from_references is path_match


def test_compiled_globs_are_cached_and_bounded() -> None:
    assert compile_glob("busy*:*libc") is compile_glob("busy*:*libc")
    cache_ = globs._Cache(entries=2, chars=10)
    first = cache_.get("a*")
    cache_.get("b*")
    assert cache_.get("a*") is first  # used last: kept
    cache_.get("c*")  # evicts "b*", the least recently used
    assert cache_.get("a*") is first
    assert set(cache_._globs) == {"a*", "c*"}
    huge = "x" * 11  # beyond the character budget: compiled, not kept
    assert cache_.get(huge) is not cache_.get(huge)
    assert set(cache_._globs) == {"a*", "c*"}
    by_size = globs._Cache(entries=10, chars=6)
    for pattern in ("aaa", "bbb", "cc"):
        by_size.get(pattern)
    assert list(by_size._globs) == ["bbb", "cc"]
    assert by_size._held == 5


# --- linear time: structure and operation counts -------------------------------

_SINGLE_CHARACTER_OPS = {"LITERAL", "NOT_LITERAL", "IN"}


def _regex_ops(pattern: str) -> set[str]:
    parser: Any = importlib.import_module("re._parser")
    return {str(op) for op, _ in parser.parse(pattern)}


@dataclass
class Work:
    """What the chunks of one match were asked to do."""

    calls: list[int]  # per chunk
    reads: int = 0  # starts they may try x their width: what they may read at most


def _counted(glob: Glob) -> Work:
    """Wrap every chunk's two entry points (find a match, fit one at a start)."""
    chunks = [chunk for chunk in glob.chunks() if chunk.terms]
    work = Work(calls=[0] * len(chunks))
    for index, chunk in enumerate(chunks):
        find, fits = chunk.find, chunk.fits

        def counted_find(
            name: str, at: int, latest: int, index: int = index, find: Any = find
        ) -> int:
            work.calls[index] += 1
            work.reads += (max(0, latest - at) + 1) * chunks[index].width
            result: int = find(name, at, latest)
            return result

        def counted_fits(name: str, start: int, index: int = index, fits: Any = fits) -> bool:
            work.calls[index] += 1
            work.reads += chunks[index].width
            result: bool = fits(name, start)
            return result

        chunk.find = counted_find  # type: ignore[method-assign]
        chunk.fits = counted_fits  # type: ignore[method-assign]
    return work


@pytest.mark.parametrize("length", [40, 4000])
@pytest.mark.parametrize(
    "pattern",
    [
        ATTACK,
        "*a" * 200 + "*b",
        "*" + "?a" * 20 + "b",
        "*a?a*a?a*b",
        "[a]*" * 9 + "b",
        "*" + "[a]" * 30 + "*[^a]",
    ],
)
def test_the_backtracking_attack_costs_at_most_pattern_times_name(
    pattern: str, length: int
) -> None:
    name = "a" * length
    glob = Glob(pattern)
    work = _counted(glob)
    assert glob.match(name) is False
    # Each chunk is asked once at most (never retried), and what the chunks may
    # read adds up to no more than len(pattern) x len(name).
    assert all(calls <= 1 for calls in work.calls), work
    assert work.reads <= len(pattern) * (len(name) + 1), work
    for chunk in glob.chunks():
        if chunk.terms and chunk.literal is None:  # a literal is found by str.find
            ops = _regex_ops(chunk.compiled.pattern)
            assert ops <= _SINGLE_CHARACTER_OPS, ops  # no repeat, no branch: no backtracking


@pytest.mark.parametrize("pattern", [ATTACK, "*" + "?a" * 20 + "b"])
def test_the_byte_level_path_tries_each_start_once_per_chunk(pattern: str) -> None:
    name = ("a" * 4000).encode()
    glob = Glob(pattern)
    attempts = 0
    for chunk in glob.chunks():
        original = chunk.match_bytes

        def counting(data: bytes, at: int, original: Any = original) -> int:
            nonlocal attempts
            attempts += 1
            result: int = original(data, at)
            return result

        chunk.match_bytes = counting  # type: ignore[method-assign,assignment]
    assert glob.match_bytes(name) is False
    assert attempts <= (len(name) + 1) * len(glob.chunks())


def test_a_pattern_longer_than_the_name_is_refused_without_parsing() -> None:
    glob = Glob("?" * 1_000_000 + "*")
    assert glob.width == 1_000_000
    assert glob.match("a" * 1000) is False
    assert glob._chunks is None  # never split into chunks


def test_a_huge_class_is_one_term() -> None:
    glob = Glob("[" + "a-c" * 100_000 + "x]" + "*")
    assert glob.width == 1
    assert glob.match("b")
    assert glob.match("xyz")
    assert not glob.match("x/")
    assert not glob.match("d")


# --- properties ----------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    kind: str  # "star", "any", "literal", "class"
    char: str = ""
    negated: bool = False
    ranges: tuple[tuple[str, str], ...] = ()

    def accepts(self, char: str) -> bool:
        if self.kind == "any":
            return char != "/"
        if self.kind == "literal":
            return char == self.char
        inside = any(lo <= char <= hi for lo, hi in self.ranges)
        return inside != self.negated


def reference_match(terms: tuple[Term, ...], name: str) -> bool:
    """Backtracking over (term, position), memoised: the plain meaning of a glob."""

    @cache
    def at(term: int, position: int) -> bool:
        if term == len(terms):
            return position == len(name)
        current = terms[term]
        if current.kind == "star":
            if at(term + 1, position):
                return True
            return position < len(name) and name[position] != "/" and at(term, position + 1)
        if position == len(name) or not current.accepts(name[position]):
            return False
        return at(term + 1, position + 1)

    return at(0, 0)


NAME_ALPHABET = "ab/-]"
_class_chars = st.sampled_from("ab-]^\\[*?")  # never '/': see below


def _render_char(char: str, escape: bool, specials: str) -> str:
    return "\\" + char if escape or char in specials else char


@st.composite
def terms(draw: st.DrawFn) -> tuple[Term, ...]:
    """Terms whose classes never match '/': where Go's commitment to a chunk's
    leftmost match gives the plain meaning (see GO_CORNERS for where not)."""
    result = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["star", "any", "literal", "literal", "class"]))
        if kind == "literal":
            result.append(Term("literal", char=draw(st.sampled_from("ab/-]^*?[\\"))))
        elif kind == "class":
            negated = draw(st.booleans())
            pairs = draw(st.lists(st.tuples(_class_chars, _class_chars), min_size=1, max_size=3))
            # a positive class never spans '/' (between '-' and '?')
            ranges = tuple(
                (lo, hi if draw(st.booleans()) and not lo <= "/" <= hi else lo) for lo, hi in pairs
            )
            if negated:
                ranges += (("/", "/"),)  # a negated class names '/', so it never matches it
            result.append(Term("class", negated=negated, ranges=ranges))
        else:
            result.append(Term(kind))
    return tuple(result)


def render(terms_: tuple[Term, ...], escapes: list[bool]) -> str:
    out = []
    for index, term in enumerate(terms_):
        escape = escapes[index % len(escapes)] if escapes else False
        if term.kind == "star":
            out.append("*")
        elif term.kind == "any":
            out.append("?")
        elif term.kind == "literal":
            out.append(_render_char(term.char, escape, "*?[\\"))
        else:
            items = []
            for position, (lo, hi) in enumerate(term.ranges):
                first = position == 0 and not term.negated
                low = _render_char(lo, escape, "\\-]" + ("^" if first else ""))
                high = _render_char(hi, escape, "\\-]")
                items.append(low if lo == hi else f"{low}-{high}")
            out.append("[" + ("^" if term.negated else "") + "".join(items) + "]")
    return "".join(out)


@settings(max_examples=1500)
@given(terms(), st.lists(st.booleans(), max_size=4), st.text(NAME_ALPHABET, max_size=10))
def test_globs_agree_with_a_backtracking_reference(
    pattern_terms: tuple[Term, ...], escapes: list[bool], name: str
) -> None:
    pattern = render(pattern_terms, escapes)
    assert path_match(pattern, name) is reference_match(pattern_terms, name), pattern


@settings(max_examples=1500)
@given(terms(), st.data())
def test_globs_match_what_the_reference_generates(
    pattern_terms: tuple[Term, ...], data: st.DataObject
) -> None:
    """A name built term by term matches: the random names above mostly do not."""
    name = []
    for term in pattern_terms:
        if term.kind == "star":
            name.append(data.draw(st.text("ab-]", max_size=3)))
            continue
        choices = [char for char in NAME_ALPHABET + "^*?[\\" if term.accepts(char)]
        if not choices:
            return
        name.append(data.draw(st.sampled_from(choices)))
    assert path_match(render(pattern_terms, []), "".join(name))


def go_malformed(pattern: str) -> bool:
    """Go's rules for ErrBadPattern, read character by character."""

    def class_char(at: int) -> int | None:  # Go's getEsc: the index after it, or None
        if at >= len(pattern) or pattern[at] in "-]":
            return None
        if pattern[at] == "\\":
            at += 1
            if at >= len(pattern):
                return None
        if 0xD800 <= ord(pattern[at]) <= 0xDFFF:
            return None  # not UTF-8
        at += 1
        return at if at < len(pattern) else None

    at = 0
    while at < len(pattern):
        if pattern[at] == "\\":
            if at + 1 == len(pattern):
                return True
            at += 2
        elif pattern[at] == "[":
            at += 1
            if at < len(pattern) and pattern[at] == "^":
                at += 1
            ranges = 0
            while not (at < len(pattern) and pattern[at] == "]" and ranges):
                after = class_char(at)
                if after is not None and pattern[after] == "-":
                    after = class_char(after + 1)
                if after is None:
                    return True
                at, ranges = after, ranges + 1
            at += 1
        else:
            at += 1
    return False


PATTERN_ALPHABET = "ab/*?[]^-\\é\ud800"


@pytest.mark.parametrize("pattern", MALFORMED)
def test_the_go_rules_oracle_agrees_with_the_table(pattern: str) -> None:
    assert go_malformed(pattern)


@settings(max_examples=3000)
@given(st.text(PATTERN_ALPHABET, max_size=12), st.text(NAME_ALPHABET + "é", max_size=8))
def test_malformed_exactly_when_go_says_so(pattern: str, name: str) -> None:
    try:
        path_match(pattern, name)
    except errors.InvalidArgument:
        assert go_malformed(pattern), pattern
    else:
        assert not go_malformed(pattern), pattern


@settings(max_examples=3000)
@given(st.text(PATTERN_ALPHABET, max_size=12), st.text(NAME_ALPHABET, max_size=10))
def test_the_fast_path_agrees_with_gos_algorithm_step_by_step(pattern: str, name: str) -> None:
    """On ASCII names (every reference), the regex path and the byte-level port
    of Go's loop agree, corners included (classes that match '/')."""
    try:
        glob = Glob(pattern)
    except errors.InvalidArgument:
        return
    assert glob.match(name) is glob.match_bytes(name.encode()), (pattern, name)
    for chunk in glob.chunks():
        if chunk.terms:
            assert _regex_ops(chunk.compiled.pattern) <= _SINGLE_CHARACTER_OPS
            assert chunk.literal is None or chunk.fits(chunk.literal, 0)
