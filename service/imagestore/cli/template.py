"""Go text/template, the subset docker's ``--format`` users write.

Field access (``{{.ID}}``, ``{{.Config.Env}}``), variables (``$``, ``$x``),
pipelines (``{{.Labels | json}}``), ``if``/``else if``/``else``, ``range``
(with ``$i, $v :=``), ``with``, comments, ``{{-``/``-}}`` trimming, and
docker's functions: ``json``, ``join``, ``split``, ``index``, ``len``,
``println``, ``print``, ``printf``, ``upper``, ``lower``, ``title``,
``truncate``, ``pad``, and the comparisons ``eq ne lt le gt ge and or not``.
Values print the way Go's ``%v`` prints them (``[a b]``, ``map[k:v]``).

Objects are dicts. A :class:`Struct` (docker's structs: an image, its
config) refuses unknown fields as Go does; a plain dict is a map and gives
``<no value>`` for missing keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from imagestore import errors
from imagestore.cli.sanitize import safe_json
from imagestore.cli.struct import Struct as Struct  # where callers have found it


class _NoValue:
    def __str__(self) -> str:
        return "<no value>"


NO_VALUE = _NoValue()


def _error(message: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(f"template: {message}")


#: docker's prefix for a template that does not parse (its formatter's words)
PARSE_ERROR = "template parsing error: "


def _parse_error(line: int, message: str) -> errors.InvalidArgument:
    """Go's ``template: NAME:LINE: message``; docker's templates have no name."""
    return errors.InvalidArgument(f"{PARSE_ERROR}template: :{line}: {message}")


# ---- printing --------------------------------------------------------------


def go_string(value: Any) -> str:
    """Go's ``%v``."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, Struct):
        return "{" + " ".join(go_string(v) for v in value.values()) + "}"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{go_string(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_string(v) for v in value) + "]"
    return str(value)


def _truthy(value: Any) -> bool:
    if value is NO_VALUE or value is None:
        return False
    if isinstance(value, bool | int | float | str | list | tuple | dict):
        return bool(value)
    return True


def _json(value: Any) -> str:
    # exact, and nothing in it a terminal obeys (the output is sanitised after)
    return safe_json(json.dumps(_plain(value), separators=(",", ":"), ensure_ascii=False))


def _plain(value: Any) -> Any:
    if value is NO_VALUE:
        return None
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _last(name: str, values: tuple[Any, ...]) -> Any:
    """and/or return their last argument when none decides; Go wants at least one."""
    if not values:
        raise TypeError(f"wrong number of args for {name}: want at least 1 got 0")
    return values[-1]


#: ``pad`` and ``printf`` widths beyond this are refused rather than allocated
MAX_PAD = 4096


def _spaces(count: Any) -> str:
    width = int(count)
    if not 0 <= width <= MAX_PAD:
        raise ValueError(f"pad width {width} is outside 0..{MAX_PAD}")
    return " " * width


#: one verb of Go's fmt: flags, width, precision, verb (``%-10s``, ``%.3s``, ``%5d``)
_VERB = re.compile(r"%%|%([-+# 0]*)(\d+)?(?:\.(\d*))?([a-zA-Z])")


def _printf(fmt: str, *args: Any) -> str:
    """Go's ``fmt.Sprintf`` for the verbs templates use: v s q d t x X f e g,
    with flags, width and precision ("%.3s" keeps 3 characters, "%-10s" pads)."""
    values = iter(args)

    def verb(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%"
        flags, width, precision, letter = match.groups()
        for number in (width, precision):
            if number and int(number) > MAX_PAD:  # Go allows ~10**7; each would be allocated
                raise ValueError(f"printf width or precision {number} is outside 0..{MAX_PAD}")
        value = next(values, _MISSING)
        if value is _MISSING:
            return f"%!{letter}(MISSING)"
        return _format_one(flags, width or "", precision, letter, value)

    text = _VERB.sub(verb, fmt)
    extra = list(values)
    if extra:  # Go appends what no verb took
        text += "%!(EXTRA " + ", ".join(f"{_go_type(v)}={go_string(v)}" for v in extra) + ")"
    return text


_MISSING = object()


def _go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def _format_one(flags: str, width: str, precision: str | None, letter: str, value: Any) -> str:
    """One verb, through Python's %-formatting (C's flags, as Go's)."""
    dot = "" if precision is None else "." + (precision or "0")
    spec = "%" + flags + width
    if letter in "vs":
        return (spec + dot + "s") % go_string(value)
    if letter == "q":
        return (spec + "s") % json.dumps(go_string(value), ensure_ascii=False)
    if letter == "t":
        if not isinstance(value, bool):
            return f"%!t({_go_type(value)}={go_string(value)})"
        return (spec + "s") % go_string(value)
    if letter in "dxXo" and isinstance(value, int) and not isinstance(value, bool):
        return (spec + dot + letter) % value
    if letter in "xX" and isinstance(value, str):
        digits = value.encode().hex()
        return (spec + "s") % (digits.upper() if letter == "X" else digits)
    if letter in "feEgG" and isinstance(value, int | float) and not isinstance(value, bool):
        return (spec + (dot or ("" if letter in "gG" else ".6")) + letter) % float(value)
    return f"%!{letter}({_go_type(value)}={go_string(value)})"


def _index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(item, Mapping):
            item = item.get(key, "")
        elif isinstance(item, list | tuple):
            if not isinstance(key, int) or not 0 <= key < len(item):
                raise _error(f"error calling index: index out of range: {key}")
            item = item[key]
        else:
            raise _error(f"can't index item of type {type(item).__name__}")
    return item


def _compare(op: Callable[[Any, Any], bool]) -> Callable[..., bool]:
    def compare(a: Any, *others: Any) -> bool:
        return any(op(a, b) for b in others) if op is _eq else all(op(a, b) for b in others)

    return compare


def _eq(a: Any, b: Any) -> bool:
    return bool(a == b)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "json": _json,
    "join": lambda items, sep: sep.join(go_string(i) for i in items),
    "split": lambda text, sep: text.split(sep),
    "index": _index,
    "len": lambda value: len(value),
    "print": lambda *a: "".join(go_string(v) for v in a),
    "println": lambda *a: " ".join(go_string(v) for v in a) + "\n",
    "printf": _printf,
    "upper": lambda text: go_string(text).upper(),
    "lower": lambda text: go_string(text).lower(),
    "title": lambda text: go_string(text).title(),
    "truncate": lambda text, n: go_string(text)[: int(n)],
    "pad": lambda text, left, right: _spaces(left) + go_string(text) + _spaces(right),
    "eq": _compare(_eq),
    "ne": _compare(lambda a, b: a != b),
    "lt": _compare(lambda a, b: a < b),
    "le": _compare(lambda a, b: a <= b),
    "gt": _compare(lambda a, b: a > b),
    "ge": _compare(lambda a, b: a >= b),
    "not": lambda value: not _truthy(value),
    "and": lambda *a: next((v for v in a if not _truthy(v)), _last("and", a)),
    "or": lambda *a: next((v for v in a if _truthy(v)), _last("or", a)),
}


# ---- parsing ----------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<declare>:=)
    | (?P<punct>[|(),])
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<variable>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
    | (?P<field>(?:\.[A-Za-z0-9_]+)+|\.)
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


@dataclass
class _Pipeline:
    commands: list[list[tuple[str, Any]]]
    declares: list[str] = field(default_factory=list)


@dataclass
class _Node:
    kind: str  # text, action, if, range, with
    text: str = ""
    pipeline: _Pipeline | None = None
    body: list[_Node] = field(default_factory=list)
    otherwise: list[_Node] = field(default_factory=list)
    chained: bool = False  # an "else if": ends with the if it hangs from


def _tokens(source: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    position = 0
    source = source.rstrip()
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None or match.end() == position:
            raise _error(f"unexpected {source[position:].strip()[:20]!r} in action")
        kind = match.lastgroup
        assert kind is not None
        found.append((kind, match.group(kind)))
        position = match.end()
    return found


def _pipeline(tokens: list[tuple[str, str]]) -> _Pipeline:
    declares: list[str] = []
    if any(kind == "declare" for kind, _ in tokens):
        split = next(i for i, (kind, _) in enumerate(tokens) if kind == "declare")
        declares = [v for kind, v in tokens[:split] if kind == "variable"]
        tokens = tokens[split + 1 :]
    commands: list[list[tuple[str, Any]]] = [[]]
    depth = 0
    group: list[tuple[str, str]] = []
    for kind, value in tokens:
        if depth:
            if value == "(" and kind == "punct":
                depth += 1
            elif value == ")" and kind == "punct":
                depth -= 1
                if depth == 0:
                    commands[-1].append(("pipeline", _pipeline(group)))
                    group = []
                    continue
            group.append((kind, value))
        elif kind == "punct" and value == "(":
            depth = 1
        elif kind == "punct" and value == "|":
            commands.append([])
        elif kind == "punct" and value == ",":
            continue
        else:
            commands[-1].append((kind, value))
    if depth or not all(commands):
        raise _error("malformed pipeline")
    return _Pipeline(commands, declares)


def _parse(source: str) -> list[_Node]:
    parts = re.split(r"(\{\{-?\s*/\*.*?\*/\s*-?\}\}|\{\{.*?\}\})", source, flags=re.DOTALL)
    root: list[_Node] = []
    stack: list[tuple[_Node | None, list[_Node]]] = [(None, root)]
    seen = 0  # characters of source before this part: the line of an error
    for i, part in enumerate(parts):
        start, seen = seen, seen + len(part)
        if i % 2 == 0:
            if "{{" in part:  # an action that never closes, as Go's lexer says it
                opened = start + part.index("{{")
                what = (
                    "comment"
                    if part[part.index("{{") + 2 :].lstrip("- ").startswith("/*")
                    else "action"
                )
                raise _parse_error(source[:opened].count("\n") + 1, f"unclosed {what}")
            if part:
                stack[-1][1].append(_Node("text", part))
            continue
        inner = part[2:-2]
        if inner.startswith("-"):
            _trim_last(stack[-1][1])
            inner = inner[1:]
        if inner.endswith("-"):
            inner = inner[:-1]
            if i + 1 < len(parts):
                parts[i + 1] = parts[i + 1].lstrip()
        inner = inner.strip()
        if inner.startswith("/*"):
            continue
        word, _, rest = inner.partition(" ")
        if word in ("if", "range", "with"):
            node = _Node(word, pipeline=_pipeline(_tokens(rest)))
            stack[-1][1].append(node)
            stack.append((node, node.body))
        elif word == "else":
            owner = stack[-1][0]
            if owner is None:
                raise _error("unexpected {{else}}")
            stack.pop()
            if rest.startswith("if "):  # else if: a nested if in the else branch
                nested = _Node("if", pipeline=_pipeline(_tokens(rest[3:])), chained=True)
                owner.otherwise.append(nested)
                stack.append((owner, owner.otherwise))
                stack.append((nested, nested.body))
            else:
                stack.append((owner, owner.otherwise))
        elif word == "end":
            if len(stack) == 1:
                raise _error("unexpected {{end}}")
            closed, _ = stack.pop()
            while closed is not None and closed.chained:
                closed, _ = stack.pop()
        else:
            stack[-1][1].append(_Node("action", pipeline=_pipeline(_tokens(inner))))
    if len(stack) != 1:
        raise _error("unexpected EOF: missing {{end}}")
    return root


def _trim_last(nodes: list[_Node]) -> None:
    if nodes and nodes[-1].kind == "text":
        nodes[-1].text = nodes[-1].text.rstrip()


# ---- executing --------------------------------------------------------------


class Template:
    """A parsed template; :meth:`render` runs it against one value."""

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._nodes = _parse(source)
        except errors.InvalidArgument as failure:  # docker says where it failed: parsing
            if failure.message.startswith(PARSE_ERROR):
                raise
            raise errors.InvalidArgument(PARSE_ERROR + failure.message) from None

    def render(self, data: Any) -> str:
        out: list[str] = []
        self._run(self._nodes, data, {"$": data}, out)
        return "".join(out)

    def _run(self, nodes: Sequence[_Node], dot: Any, scope: dict[str, Any], out: list[str]) -> None:
        for node in nodes:
            if node.kind == "text":
                out.append(node.text)
                continue
            assert node.pipeline is not None
            if node.kind == "action":
                value = self._pipe(node.pipeline, dot, scope)
                if not node.pipeline.declares:
                    out.append(go_string(value))
            elif node.kind in ("if", "with"):
                value = self._pipe(node.pipeline, dot, scope)
                if _truthy(value):
                    self._run(node.body, value if node.kind == "with" else dot, scope, out)
                else:
                    self._run(node.otherwise, dot, scope, out)
            elif node.kind == "range":
                self._range(node, dot, scope, out)

    def _range(self, node: _Node, dot: Any, scope: dict[str, Any], out: list[str]) -> None:
        assert node.pipeline is not None
        value = self._pipe(node.pipeline, dot, {**scope})
        if isinstance(value, Mapping):
            items = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, list | tuple):
            items = list(enumerate(value))
        elif value is None or value is NO_VALUE:
            items = []
        else:
            raise _error(f"range can't iterate over {go_string(value)}")
        if not items:
            self._run(node.otherwise, dot, scope, out)
        names = node.pipeline.declares
        for key, item in items:
            inner = dict(scope)
            if len(names) == 1:
                inner[names[0]] = item
            elif len(names) == 2:
                inner[names[0]], inner[names[1]] = key, item
            self._run(node.body, item, inner, out)

    def _pipe(self, pipeline: _Pipeline, dot: Any, scope: dict[str, Any]) -> Any:
        value: Any = NO_VALUE
        for position, command in enumerate(pipeline.commands):
            extra = [] if position == 0 else [value]
            value = self._command(command, dot, scope, extra)
        for name in pipeline.declares:
            scope[name] = value
        return value

    def _command(
        self, command: list[tuple[str, Any]], dot: Any, scope: dict[str, Any], extra: list[Any]
    ) -> Any:
        kind, first = command[0]
        if kind == "word" and first not in ("true", "false", "nil"):
            function = FUNCTIONS.get(first)
            if function is None:
                raise _error(f'function "{first}" not defined')
            args = [self._operand(k, v, dot, scope) for k, v in command[1:]] + extra
            try:
                return function(*args)
            except errors.InvalidArgument:
                raise
            except (TypeError, ValueError, AttributeError) as exc:
                raise _error(f"error calling {first}: {exc}") from None
        if len(command) > 1 or extra:
            raise _error(f"can't give argument to non-function {first}")
        return self._operand(kind, first, dot, scope)

    def _operand(self, kind: str, value: Any, dot: Any, scope: dict[str, Any]) -> Any:
        if kind == "pipeline":
            return self._pipe(value, dot, scope)
        if kind == "string":
            try:
                return json.loads(value)
            except ValueError:
                raise _error(f"malformed string literal {value[:40]}") from None
        if kind == "raw":
            return value[1:-1]
        if kind == "number":
            return float(value) if "." in value else int(value)
        if kind == "word":
            return {"true": True, "false": False, "nil": None}.get(value, NO_VALUE)
        if kind == "field":
            return _fields(dot, value.split(".")[1:] if value != "." else [])
        if kind == "variable":
            name, *path = value.split(".")
            if name not in scope:
                raise _error(f"undefined variable: {name}")
            return _fields(scope[name], path)
        raise _error(f"unexpected {value!r}")


def _fields(value: Any, path: list[str]) -> Any:
    for name in path:
        if isinstance(value, Struct):
            if name not in value:
                raise _error(f"can't evaluate field {name}")
            value = value[name]
        elif isinstance(value, Mapping):
            value = value.get(name, NO_VALUE)
        elif value is NO_VALUE or value is None:
            return NO_VALUE
        else:
            raise _error(f"can't evaluate field {name} in {go_string(value)[:40]}")
    return value
