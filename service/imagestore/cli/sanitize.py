"""Text from the server made safe to print on a terminal.

Names, labels, history, registry error messages and progress statuses come from
archives and registries nobody vetted; a terminal obeys the control characters in
them (``ESC ] 0 ; title BEL`` renames the window, ``ESC [ 2 J`` clears the screen,
``U+009B`` is a one-character CSI). The rule, the same everywhere the CLI prints:

- an unsafe character is shown as a visible escape: ``\\t``, ``\\n``, ``\\r``;
  otherwise ``\\xHH`` up to U+00FF and ``\\uHHHH`` above (ESC → ``\\x1b``, BEL →
  ``\\x07``, U+009B → ``\\x9b``, U+202E → ``\\u202e``); a backslash is left as it
  is, so the escape is for eyes, not for parsing (exact values are in the JSON
  output);
- unsafe: the C0 controls U+0000-U+001F (newline and tab too, unless the caller
  keeps them because they are its own formatting), DEL, the C1 controls
  U+0080-U+009F, the line and paragraph separators U+2028/U+2029, the bidi
  controls that reorder what follows (U+061C, U+200E/F, U+202A-E, U+2066-9), and
  lone surrogates (which no terminal encoding can carry);
- JSON stays valid and exact: its unsafe characters become ``\\uHHHH`` escapes,
  which decode to the very same string.
"""

from __future__ import annotations

import functools
import re

_UNSAFE_CLASS = (
    "\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
)


@functools.cache
def _unsafe(*, keep_layout: bool) -> re.Pattern[str]:
    """The unsafe characters; with ``keep_layout`` all but newline and tab (the
    CLI's own line and column breaks may stay in a rendered template). Compiled
    on first use: text that :meth:`str.isprintable` passes holds none of them
    (each is a control, format, separator or surrogate character), and most
    text does."""
    if keep_layout:
        return re.compile(f"(?![\n\t])[{_UNSAFE_CLASS}]")
    return re.compile(f"[{_UNSAFE_CLASS}]")


#: the escapes everyone reads at sight; the other characters are shown by number
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def printable(text: str) -> str:
    """``text`` with every unsafe character escaped (newlines and tabs too): for a
    value inside a line or a table cell."""
    return text if text.isprintable() else _unsafe(keep_layout=False).sub(_visible, text)


def printable_lines(text: str) -> str:
    """``text`` with every unsafe character escaped except newline and tab: for a
    whole rendered template, whose line and column breaks are the user's format."""
    return text if text.isprintable() else _unsafe(keep_layout=True).sub(_visible, text)


def safe_json(text: str) -> str:
    """JSON text (``json.dumps`` output) with every unsafe character still raw in
    it written as a ``\\uHHHH`` escape: the same document, nothing a terminal obeys.

    ``json.dumps`` escapes U+0000-U+001F inside strings itself, so a raw newline
    left in its output is indentation and stays."""
    return text if text.isprintable() else _unsafe(keep_layout=True).sub(_json_escape, text)
