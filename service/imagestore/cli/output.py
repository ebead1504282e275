"""What the CLI prints: docker's ``--format`` machinery (``table``, aligned with a
header; ``table TEMPLATE``; ``json``, one object per line; or a raw TEMPLATE) and
its message lines.

Everything here goes out through :mod:`imagestore.cli.sanitize`, because the
values come from archives and registries: table cells and message lines have
every control character escaped; a raw template's output keeps only the newlines
and tabs (the user's format) and escapes the rest, on a terminal or not (docker
prints templates raw; a pipe often ends on a terminal too, and the exact value of
a field stays one ``{{json .Field}}`` or ``--format json`` away); JSON is exact
and valid, with unsafe characters as ``\\uHHHH`` escapes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from imagestore.cli.sanitize import printable, printable_lines, safe_json
from imagestore.cli.struct import Struct

# the template engine is imported when a format needs it (not for `images -q`)
if TYPE_CHECKING:
    from imagestore import errors

#: Go's tabwriter as docker sets it up: minwidth 10, padding 3
MIN_WIDTH, PADDING = 10, 3


def say(text: str = "", *, out: TextIO | None = None) -> None:
    """Print one line the CLI composed, which may quote untrusted text (a name, a
    server's message): every control character in it is escaped."""
    print(printable(text), file=out or sys.stdout)


def daemon_error(error: errors.ImageStoreError) -> str:
    """The line for an error the server returned, in docker's words for its
    daemon's errors (scripts matching docker's output keep working)."""
    return f"Error response from daemon: {error.message}"


def local_error(text: str) -> str:
    """The line for an error the CLI found itself, before or without a call."""
    return f"Error: {text}"


#: modules whose errors are the CLI's own findings (a bad argument, a local
#: file), not answers of the server
_LOCAL_MODULES = (
    "imagestore.cli.",
    "imagestore.oci.",
    "imagestore.dockerconfig",
    "imagestore.client.models",
    "imagestore.client.requests",
    "imagestore.client.settings",
)


def error_line(error: errors.ImageStoreError) -> str:
    """:func:`daemon_error` or :func:`local_error`, by where ``error`` was raised
    (the client raises the server's answers; the CLI and the client's argument
    checks raise their own)."""
    trace = error.__traceback__
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    module = str(trace.tb_frame.f_globals.get("__name__", "")) if trace is not None else ""
    if module == "imagestore.cli" or module.startswith(_LOCAL_MODULES):
        return local_error(error.message)
    return daemon_error(error)


def tabwrite(lines: Iterable[str]) -> str:
    """Align tab-separated cells into columns; the last cell of a line is free.
    A newline ends a row (as in Go's tabwriter); anything else unsafe in a cell is
    escaped before the widths are measured."""
    rows = [
        [printable(cell) for cell in row.split("\t")] for line in lines for row in line.split("\n")
    ]
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
    """docker's ``json`` template function: compact, and <, > and & as they are
    (its encoder has SetEscapeHTML(false)); unlike Go, every character a
    terminal would obey is escaped (see :func:`safe_json`)."""
    import json

    return safe_json(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


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
    if not table and (values := _field_values(rows, source)) is not None:
        out.write("".join(printable_lines(value) + "\n" for value in values))
        return
    from imagestore.cli.template import Template

    template = Template(_unescape(source))
    if not table:
        out.write("".join(printable_lines(template.render(row)) + "\n" for row in rows))
        return
    # a cell's own tab or newline must not start a column or a row: escaped first
    rendered = [template.render(_printable_values(row)) for row in rows]
    header = template.render(
        Struct({key: headers.get(key, key.upper()) for key in _keys(rows, headers)})
    )
    out.write(tabwrite([header, *rendered]))


def _field_values(rows: Sequence[Struct], source: str) -> list[str] | None:
    """What the template ``{{.Field}}`` renders for each row, when every row's
    field is a string (which a template prints as it is); None for any other
    template, which the engine renders."""
    field = source.removeprefix("{{.").removesuffix("}}")
    if len(field) + 5 != len(source) or not field.isidentifier():
        return None
    texts = [value for row in rows if isinstance(value := row.get(field), str)]
    return texts if len(texts) == len(rows) else None


def _keys(rows: Sequence[Struct], headers: Mapping[str, str]) -> list[str]:
    return list(rows[0]) if rows else list(headers)


def _printable_values(value: Any) -> Any:
    """``value`` with :func:`printable` applied to every string in it."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, Struct):
        return Struct({key: _printable_values(item) for key, item in value.items()})
    if isinstance(value, Mapping):
        return {printable(str(key)): _printable_values(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_printable_values(item) for item in value]
    return value


def check_template(fmt: str) -> None:
    """Refuse a malformed ``--format`` template before any call, as docker
    parses it before it asks the daemon anything ("json" and "" are no templates)."""
    if fmt and fmt not in ("json", "table"):
        from imagestore.cli.template import Template

        Template(_unescape(fmt))


def write_objects(out: TextIO, objects: Sequence[Struct], fmt: str) -> None:
    """``inspect``: a JSON array (docker's indentation), or the template per object."""
    import json

    if not fmt:
        out.write(safe_json(json.dumps(list(objects), indent=4, ensure_ascii=False)) + "\n")
        return
    if fmt == "json":
        for item in objects:
            out.write(safe_json(json.dumps(item, ensure_ascii=False)) + "\n")
        return
    from imagestore.cli.template import Template

    template = Template(_unescape(fmt))
    for item in objects:
        out.write(printable_lines(template.render(item)) + "\n")
