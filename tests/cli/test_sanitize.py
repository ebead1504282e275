"""The terminal-escape rule (imagestore.cli.sanitize) and the output paths that
apply it: message lines, tables, templates, JSON and progress (plain and rich)."""

from __future__ import annotations

import io
import json

import pytest

from imagestore.cli.output import go_json, say, tabwrite, write_objects, write_rows
from imagestore.cli.progress import CheckMeter, ProgressView
from imagestore.cli.sanitize import printable, printable_lines, safe_json
from imagestore.cli.template import Struct, Template
from imagestore.client import CheckProgress, Phase, Progress


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text, unicode: é 日本 ✓", "plain text, unicode: é 日本 ✓"),
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),  # OSC title, BEL-terminated
        ("\x1b]8;;http://x\x1b\\link", "\\x1b]8;;http://x\\x1b\\link"),  # OSC 8, ST
        ("\x1b[2J\x1b[31m", "\\x1b[2J\\x1b[31m"),  # CSI
        ("\x9b2J \x9d0;t\x9c \x85", "\\x9b2J \\x9d0;t\\x9c \\x85"),  # C1: CSI, OSC, ST, NEL
        ("a\tb\nc\rd", "a\\tb\\nc\\rd"),
        ("\x00\x08\x7f", "\\x00\\x08\\x7f"),
        ("\u202eevil\u2066\u2028", "\\u202eevil\\u2066\\u2028"),  # bidi, line separator
        ("\udc9b", "\\udc9b"),  # a lone surrogate (bytes that were not UTF-8)
        ("back\\slash [bold]", "back\\slash [bold]"),
    ],
)
def test_printable_escapes_every_control_character(raw: str, shown: str) -> None:
    assert printable(raw) == shown
    assert printable(shown) == shown  # escaping twice changes nothing


def test_printable_lines_keeps_only_newlines_and_tabs() -> None:
    assert printable_lines("a\tb\nc\x1b[2J\r\x9b") == "a\tb\nc\\x1b[2J\\r\\x9b"


def test_safe_json_is_the_same_document_with_nothing_raw() -> None:
    value = {"k\x9b": ["\x1b]0;t\x07", "\x7f\u202e\u2028", "é", "\udc9b"]}
    text = safe_json(json.dumps(value, indent=4, ensure_ascii=False))
    assert json.loads(text) == value
    assert printable_lines(text) == text  # no raw control character left
    assert "é" in text  # other characters stay as they are
    compact = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert go_json(value) == safe_json(compact)


def test_say_escapes_the_whole_line() -> None:
    out = io.StringIO()
    say("Error: No such image: x\x1b[2J\nforged", out=out)
    assert out.getvalue() == "Error: No such image: x\\x1b[2J\\nforged\n"


def test_a_table_keeps_one_row_per_item_and_aligns_the_escaped_cells() -> None:
    rows = [Struct(Name="a\tb\nc", Note="\x1b[31mred"), Struct(Name="plain", Note="ok")]
    out = io.StringIO()
    write_rows(out, rows, "", default_table="table {{.Name}}\t{{.Note}}", headers={})
    # the escaped cell is 7 wide: the column is 10 (the minimum), not cut at the tab
    assert out.getvalue().splitlines() == [
        "NAME      NOTE",
        "a\\tb\\nc   \\x1b[31mred",
        "plain     ok",
    ]
    assert tabwrite(["x\x07\tyy"]) == "x\\x07     yy\n"


def test_templates_escape_values_but_keep_their_layout_and_json_exact() -> None:
    rows = [Struct(Name="\x1b]0;t\x07", Note="n\x9b")]
    out = io.StringIO()
    write_rows(out, rows, "{{.Name}}\\t{{.Note}}", default_table="", headers={})
    assert out.getvalue() == "\\x1b]0;t\\x07\tn\\x9b\n"
    out = io.StringIO()
    write_rows(out, rows, "json", default_table="", headers={})
    assert json.loads(out.getvalue()) == dict(rows[0])
    assert printable_lines(out.getvalue()) == out.getvalue()
    labels = {"a": "\x1b[2J", "b": "\x9b"}
    as_json = Template("{{json .}}").render(labels)
    assert json.loads(as_json) == labels
    assert printable_lines(as_json) == as_json


def test_inspect_objects_are_valid_exact_json_or_escaped_templates() -> None:
    item = Struct(Id="x", Labels={"t": "\x1b]0;t\x07\x9b"})
    for fmt in ("", "json"):
        out = io.StringIO()
        write_objects(out, [item], fmt)
        assert printable_lines(out.getvalue()) == out.getvalue()
        decoded = json.loads(out.getvalue())
        assert (decoded[0] if fmt == "" else decoded) == item
    out = io.StringIO()
    write_objects(out, [item], '{{index .Labels "t"}}\\n{{.Id}}')
    assert out.getvalue() == "\\x1b]0;t\\x07\\x9b\nx\n"


def test_plain_progress_lines_are_escaped() -> None:
    out = io.StringIO()
    with ProgressView(out, terminal=False) as view:
        view.show(Progress(Phase.MOUNTED, "Mounted from \x9b31m", subject="abc\x1b[2J"))
        view.show(Progress(Phase.SUMMARY, "Status: \x1b]0;t\x07"))
    assert out.getvalue() == "abc\\x1b[2J: Mounted from \\x9b31m\nStatus: \\x1b]0;t\\x07\n"


def test_check_findings_are_escaped_on_a_terminal_or_not() -> None:
    for terminal in (False, True):
        out = io.StringIO()
        with CheckMeter(out, terminal=terminal) as meter:
            meter.update(CheckProgress(1, 4, 10, 40))
            meter.line("corrupt-blob: sha256:ab: \x1b]0;t\x07")
            meter.update(CheckProgress(4, 4, 40, 40))
        shown = out.getvalue()
        assert "corrupt-blob: sha256:ab: \\x1b]0;t\\x07\n" in shown
        assert "\x07" not in shown
        if not terminal:  # a pipe gets the findings alone
            assert shown == "corrupt-blob: sha256:ab: \\x1b]0;t\\x07\n"
