"""The Go-template subset and go-units formatting, case by case."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from imagestore import errors
from imagestore.cli import humanize
from imagestore.cli.output import go_json, tabwrite
from imagestore.cli.template import Struct, Template

IMAGE = Struct(
    Id="sha256:abc",
    RepoTags=["a:1", "b:2"],
    Config=Struct(Env=["A=1"], Labels={"com.example.version": "1.0", "x": "y"}, Cmd=[]),
    Os="linux",
    Architecture="arm64",
    Variant="",
    Size=1234,
)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{.Id}}", "sha256:abc"),
        ("{{.Config.Env}}", "[A=1]"),
        ("{{.Config.Cmd}}", "[]"),
        ("{{.Config.Labels}}", "map[com.example.version:1.0 x:y]"),
        ("{{.Config.Labels.x}}|{{.Config.Labels.missing}}", "y|<no value>"),
        ('{{index .Config.Labels "com.example.version"}}', "1.0"),
        ('{{index .Config.Labels "missing"}}', ""),
        ("{{index .RepoTags 1}}", "b:2"),
        ("{{json .RepoTags}}", '["a:1","b:2"]'),
        ("{{.RepoTags | json}}", '["a:1","b:2"]'),
        ("{{json .Config.Labels}}", '{"com.example.version":"1.0","x":"y"}'),
        ('{{join .RepoTags ","}}', "a:1,b:2"),
        ("{{range .RepoTags}}{{println .}}{{end}}", "a:1\nb:2\n"),
        ("{{range $i, $t := .RepoTags}}{{$i}}={{$t}} {{end}}", "0=a:1 1=b:2 "),
        ("{{range .Config.Cmd}}x{{else}}none{{end}}", "none"),
        ("{{if .Variant}}v{{else}}no variant{{end}}", "no variant"),
        ('{{if eq .Os "windows"}}w{{else if eq .Os "linux"}}l{{else}}o{{end}}', "l"),
        ("{{if and .Os (not .Variant)}}yes{{end}}", "yes"),
        ("{{with .Config}}{{len .Env}}{{end}}", "1"),
        ("{{len .RepoTags}} {{.Size}}", "2 1234"),
        ('{{printf "%s/%s" .Os .Architecture}}', "linux/arm64"),
        ('{{upper .Os}} {{lower "ABC"}} {{title .Os}}', "LINUX abc Linux"),
        ('{{split "a,b" ","}}', "[a b]"),
        ("a {{- .Os -}} b", "alinuxb"),
        ("{{/* a comment */}}x", "x"),
        ("{{$os := .Os}}{{$os}}", "linux"),
    ],
)
def test_templates_render_like_go(source: str, expected: str) -> None:
    assert Template(source).render(IMAGE) == expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{.Nope}}", "can't evaluate field Nope"),
        ("{{nofunc .Id}}", 'function "nofunc" not defined'),
        ("{{if .Id}}x", "missing {{end}}"),
        ("{{end}}", "unexpected {{end}}"),
        ("{{index .RepoTags 5}}", "index out of range"),
        ("{{$missing}}", "undefined variable"),
        ('{{"\\x"}}', "malformed string literal"),  # found by the fuzzer
        ("{{and}}", "want at least 1 got 0"),
        ("{{or}}", "want at least 1 got 0"),
        ("{{pad .Os 1000000000 0}}", "pad width"),
        ('{{printf "%33333333333333s" .Id}}', "width or precision"),  # found by the fuzzer
        ('{{printf "%.9999999f" .Size}}', "width or precision"),
    ],
)
def test_template_mistakes_are_invalid_arguments(source: str, message: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=message):
        Template(source).render(IMAGE)


@pytest.mark.parametrize(
    ("size", "precision", "text"),
    [
        (0, 3, "0B"),
        (999, 3, "999B"),
        (1000, 3, "1kB"),
        (1024, 3, "1.02kB"),
        (7_840_000, 3, "7.84MB"),
        (123_456_789, 3, "123MB"),
        (1_230_000_000, 3, "1.23GB"),
        (16_430_000, 4, "16.43MB"),
    ],
)
def test_sizes_are_go_units(size: int, precision: int, text: str) -> None:
    assert humanize.size(size, precision) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.5, "Less than a second"),
        (1, "1 second"),
        (45, "45 seconds"),
        (61, "About a minute"),
        (47 * 60, "47 minutes"),
        (3600, "About an hour"),
        (5 * 3600, "5 hours"),
        (3 * 86400, "3 days"),
        (20 * 86400, "2 weeks"),
        (90 * 86400, "3 months"),
        (800 * 86400, "2 years"),
    ],
)
def test_durations_are_go_units(seconds: float, text: str) -> None:
    assert humanize.duration(seconds) == text


def test_created_since_and_times() -> None:
    now = datetime(2026, 1, 10, tzinfo=UTC)
    assert humanize.since(now - timedelta(days=3), now) == "3 days ago"
    assert humanize.since(None) == "N/A"
    when = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert humanize.go_time(when) == "2024-05-06 07:08:09 +0000 UTC"
    assert humanize.rfc3339(when) == "2024-05-06T07:08:09Z"
    assert humanize.rfc3339(when.replace(microsecond=500000)) == "2024-05-06T07:08:09.5Z"


def test_tables_align_like_gos_tabwriter() -> None:
    # a column is its widest cell + 3, and at least 10 wide; the last cell is free
    assert tabwrite(["A\tBB\tC", "longer-cell\tx\ty"]) == (
        "A             BB        C\nlonger-cell   x         y\n"
    )
    # docker's json function does not escape <, > and & (SetEscapeHTML(false))
    assert go_json({"Digest": "<none>", "a": "&"}) == '{"Digest":"<none>","a":"&"}'
