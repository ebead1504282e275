"""docker's ``--format`` machinery: ``table`` (aligned, with a header),
``table TEMPLATE``, ``json`` (one object per line) or a raw TEMPLATE."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

from imagestore.cli.template import Struct, Template

#: Go's tabwriter as docker sets it up: minwidth 10, padding 3
MIN_WIDTH, PADDING = 10, 3


def tabwrite(lines: Iterable[str]) -> str:
    """Align tab-separated cells into columns; the last cell of a line is free."""
    rows = [line.split("\t") for line in lines]
    widths: list[int] = []
    for row in rows:
        for column, cell in enumerate(row[:-1]):
            width = max(len(cell) + PADDING, MIN_WIDTH)
            if column < len(widths):
                widths[column] = max(widths[column], width)
            else:
                widths.append(width)
    out = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        out.append("".join(cells) + row[-1])
    return "".join(line + "\n" for line in out)


def go_json(value: Any) -> str:
    """Go's ``json.Marshal``: compact, with <, > and & escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _unescape(source: str) -> str:
    return source.replace("\\t", "\t").replace("\\n", "\n")


def write_rows(
    out: TextIO,
    rows: Sequence[Struct],
    fmt: str,
    *,
    default_table: str,
    headers: Mapping[str, str],
) -> None:
    """Print ``rows`` the way a docker list command does with ``--format fmt``."""
    fmt = fmt or "table"
    if fmt == "json":
        for row in rows:
            out.write(go_json(dict(sorted(row.items()))) + "\n")
        return
    table = fmt == "table" or fmt.startswith("table ")
    source = (default_table if fmt == "table" else fmt).removeprefix("table").strip()
    template = Template(_unescape(source))
    rendered = [template.render(row) for row in rows]
    if not table:
        out.write("".join(text + "\n" for text in rendered))
        return
    header = template.render(
        Struct({key: headers.get(key, key.upper()) for key in _keys(rows, headers)})
    )
    out.write(tabwrite([header, *rendered]))


def _keys(rows: Sequence[Struct], headers: Mapping[str, str]) -> list[str]:
    return list(rows[0]) if rows else list(headers)


def write_objects(out: TextIO, objects: Sequence[Struct], fmt: str) -> None:
    """``inspect``: a JSON array (docker's indentation), or the template per object."""
    if not fmt:
        out.write(json.dumps(list(objects), indent=4, ensure_ascii=False) + "\n")
        return
    if fmt == "json":
        for item in objects:
            out.write(json.dumps(item, ensure_ascii=False) + "\n")
        return
    template = Template(_unescape(fmt))
    for item in objects:
        out.write(template.render(item) + "\n")
