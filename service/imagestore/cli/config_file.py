"""`imagestore serve`'s settings: flags, IMAGESTORE_* variables and a TOML file.

Every long option of `serve` is also a variable and a key of the configuration
file, named after the flag: ``--max-concurrent-rpcs`` ↔ ``IMAGESTORE_MAX_CONCURRENT_RPCS``
↔ ``max-concurrent-rpcs = 64``. The table is derived from the parser's actions
(:class:`Settings`), so an option added to the parser joins all three. A value comes
from the command line, else the variable, else the file, else the built-in default;
each remembers where it came from, for ``--print-config``.

The file is TOML: repeatable flags are arrays, switches booleans; an option's
``type`` (an :class:`OptionType`) says which TOML values it takes and converts them
as it converts a flag's text. Standard library only, and light to import: every
command loads this module (serve's stub), only `serve` reads a file.
"""

from __future__ import annotations

import argparse
import copy
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: read when present, unless --config or IMAGESTORE_CONFIG names another file (or none)
DEFAULT_PATH = Path("/etc/imagestore/config.toml")
PATH_VARIABLE = "IMAGESTORE_CONFIG"
#: what a variable says to turn a switch on ...
_TRUE_WORDS = ("1", "true", "yes", "on")
#: ... and off (empty: set but blank, as `IMAGESTORE_INSECURE=` leaves it)
_FALSE_WORDS = ("0", "false", "no", "off", "")
#: how much of a value an error message quotes
_QUOTED = 100


class _NotGiven(list[Any]):
    """The default of every setting: the value a flag left alone. A list, copied
    as a new empty one, so that a repeatable flag can append to it; written over
    the namespace by the subcommand, so a global option of the same name (the
    client's --tls-cert) never passes for serve's."""

    def __copy__(self) -> list[Any]:
        return []


NOT_GIVEN = _NotGiven()


class ConfigError(Exception):
    """A setting that cannot be used, said in one line (without the command's name)."""


class OptionType:
    """An argparse ``type`` that also says which TOML values the file may give.

    ``parse`` converts text and raises ValueError; a TOML value of one of the
    ``toml`` types goes through ``parse`` as text too, so the file is checked
    exactly as the flag is. ``show`` turns a value into what ``--print-config``
    writes (a duration as ``"1m30s"`` rather than ``90.0``)."""

    __name__: str

    def __init__(
        self,
        parse: Callable[[str], Any],
        what: str,
        *,
        expected: str,
        toml: tuple[type, ...],
        explains: bool = False,
        show: Callable[[Any], Any] | None = None,
    ) -> None:
        self.parse, self.what, self.expected, self.toml = parse, what, expected, toml
        #: parse's ValueError already says what is wrong and what is accepted
        self.explains = explains
        self.show = show
        self.__name__ = what  # argparse names the type by it

    def __call__(self, text: str) -> Any:
        try:
            return self.parse(text)
        except ValueError as exc:
            detail = str(exc) if self.explains else f"invalid {self.what}: {text[:_QUOTED]!r}"
            raise argparse.ArgumentTypeError(detail) from None


@dataclass(frozen=True)
class Setting:
    """One option of the parser, as a variable and a key of the file."""

    key: str
    action: argparse.Action
    default: Any

    @property
    def variable(self) -> str:
        return "IMAGESTORE_" + self.key.upper().replace("-", "_")

    @property
    def hidden(self) -> bool:
        return self.action.help == argparse.SUPPRESS


@dataclass(frozen=True)
class Resolved:
    """A setting's effective value and where it came from: ``flag``,
    ``env IMAGESTORE_…``, ``file /path`` or ``default``."""

    setting: Setting
    value: Any
    origin: str


@dataclass(frozen=True)
class Source:
    """The configuration file in use, and what named it (``--config``,
    ``IMAGESTORE_CONFIG`` or ``default``)."""

    path: Path
    named_by: str


class Settings:
    """The parser's long options as settings. Built once every option is added:
    it takes over the defaults (an option the command line left alone is
    :data:`NOT_GIVEN`), and :meth:`resolve` fills each in from the other layers."""

    def __init__(self, parser: argparse.ArgumentParser, *, exclude: frozenset[str]) -> None:
        self._settings: dict[str, Setting] = {}
        #: options of the command line that are not settings (--config, --print-config)
        self.command_line_only: set[str] = set()
        for action in parser._actions:
            long = [option for option in action.option_strings if option.startswith("--")]
            if long and action.dest in exclude:
                self.command_line_only.add(long[0].removeprefix("--"))
            if not long or action.dest in exclude or (action.nargs == 0 and action.const is None):
                continue  # not a setting: --help, --version, the file options themselves
            default = action.default
            if isinstance(default, str) and callable(action.type):
                default = action.type(default)  # as argparse would have converted it
            key = long[0].removeprefix("--")
            self._settings[key] = Setting(key, action, default)
            action.default = NOT_GIVEN

    def __iter__(self) -> Iterator[Setting]:
        return iter(self._settings.values())

    def get(self, key: str) -> Setting | None:
        return self._settings.get(key)

    def resolve(
        self,
        args: argparse.Namespace,
        environ: Mapping[str, str],
        from_file: Mapping[str, Any],
        source: Source | None,
    ) -> list[Resolved]:
        """Each setting's value (set on ``args`` too): the flag, else the variable,
        else the file, else the default. ConfigError for a malformed variable."""
        resolved = []
        for setting in self:
            dest = setting.action.dest
            given = getattr(args, dest, NOT_GIVEN)
            if given is not NOT_GIVEN:
                value, origin = given, "flag"
            elif setting.variable in environ:
                value = _from_variable(setting, environ[setting.variable])
                origin = f"env {setting.variable}"
            elif setting.key in from_file and source is not None:
                value, origin = from_file[setting.key], f"file {source.path}"
            else:
                value, origin = copy.copy(setting.default), "default"
            setattr(args, dest, value)
            resolved.append(Resolved(setting, value, origin))
        return resolved


def locate(named: str | None, environ: Mapping[str, str]) -> Source | None:
    """The configuration file: --config's (``named``), else IMAGESTORE_CONFIG's,
    else the default one when it exists; an empty name means none at all."""
    if named is not None:
        return Source(Path(named), "--config") if named else None
    if PATH_VARIABLE in environ:
        value = environ[PATH_VARIABLE]
        return Source(Path(value), PATH_VARIABLE) if value else None
    return Source(DEFAULT_PATH, "default") if os.path.lexists(DEFAULT_PATH) else None


def read(source: Source, settings: Settings) -> dict[str, Any]:
    """The file's settings, key → value converted as its flag's would be;
    ConfigError (one line naming the file and the key) for anything else."""
    import tomllib

    path = source.path
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        named = "" if source.named_by == "default" else f"{source.named_by} "
        raise ConfigError(f"{named}{path}: {reason}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    values = {}
    for key, value in document.items():
        setting = settings.get(key)
        if setting is None:
            raise ConfigError(f"{path}: unknown key {key!r}{_suggestion(key, settings)}")
        try:
            values[key] = _from_toml(setting, value)
        except ConfigError as exc:
            raise ConfigError(f"{path}: key {key!r}: {exc}") from None
    return values


def dump(resolved: list[Resolved], source: Source | None) -> str:
    """The effective configuration as TOML that reads back as the same settings,
    each value's origin in a comment after it; an unset option is a comment."""
    if source is None:
        shown = f"none ({DEFAULT_PATH} is not present)"
    else:
        shown = (
            f"{source.path} ({'the default' if source.named_by == 'default' else source.named_by})"
        )
    lines = [
        "# imagestore serve: the effective configuration, each value's origin after it",
        f"# configuration file: {_comment(shown)}",
    ]
    for item in resolved:
        setting = item.setting
        if setting.hidden and item.origin == "default":
            continue  # test-only options stay out of sight unless someone set them
        origin = _comment(item.origin)
        if item.value is None:
            lines.append(f"# {setting.key}: not set  # {origin}")
            continue
        try:
            text = _toml(_shown(setting, item.value))
        except ValueError as exc:
            raise ConfigError(f"{setting.key}: {exc}") from None
        lines.append(f"{setting.key} = {text}  # {origin}")
    return "\n".join(lines) + "\n"


def _from_variable(setting: Setting, text: str) -> Any:
    action = setting.action
    if action.nargs == 0:  # a switch: on or off, said in any of the usual words
        word = text.strip().lower()
        if word in _TRUE_WORDS:
            return action.const
        if word in _FALSE_WORDS:
            return setting.default
        raise ConfigError(
            f"{setting.variable}: expected a boolean (1, true, yes, on or 0, false, no, off),"
            f" got {text[:_QUOTED]!r}"
        )
    if isinstance(action, argparse._AppendAction):  # repeatable: comma-separated
        items = [item.strip() for item in text.split(",") if item.strip()]
        return [_parsed(action, item, setting.variable) for item in items]
    return _parsed(action, text, setting.variable)


def _parsed(action: argparse.Action, text: str, variable: str) -> Any:
    """A variable's text converted as the flag's would be; the error names the variable."""
    try:
        return _converted(action, text)
    except ConfigError as exc:
        raise ConfigError(f"{variable}: {exc}") from None


def _converted(action: argparse.Action, text: str) -> Any:
    """``text`` converted by the option's type and checked against its choices,
    as argparse does for the flag."""
    try:
        value = action.type(text) if callable(action.type) else text
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    if action.choices is not None and value not in action.choices:
        raise ConfigError(_not_a_choice(action, value))
    return value


def _from_toml(setting: Setting, value: Any) -> Any:
    action = setting.action
    if action.nargs == 0:
        if not isinstance(value, bool):
            raise ConfigError(f"expected a boolean (true or false), got {_quoted(value)}")
        return action.const if value else setting.default
    if isinstance(action, argparse._AppendAction):
        expected = "an array of " + (
            "strings" if action.type is None else f"values, each {_expected(action)}"
        )
        if not isinstance(value, list):
            raise ConfigError(f"expected {expected}, got {_quoted(value)}")
        return [_scalar(action, item, expected) for item in value]
    return _scalar(action, value, _expected(action))


def _scalar(action: argparse.Action, value: Any, expected: str) -> Any:
    kind = action.type
    accepted = kind.toml if isinstance(kind, OptionType) else (str,)
    if (isinstance(value, bool) and bool not in accepted) or not isinstance(value, accepted):
        raise ConfigError(f"expected {expected}, got {_quoted(value)}")
    return _converted(action, value if isinstance(value, str) else repr(value))


def _expected(action: argparse.Action) -> str:
    if isinstance(action.type, OptionType):
        return action.type.expected
    if action.choices is not None:
        return "one of " + ", ".join(_toml(choice) for choice in action.choices)
    return "a string"


def _not_a_choice(action: argparse.Action, value: Any) -> str:
    choices = ", ".join(str(choice) for choice in action.choices or ())
    return f"invalid choice: {str(value)[:_QUOTED]!r} (choose from {choices})"


def _suggestion(key: str, settings: Settings) -> str:
    import difflib

    if key in settings.command_line_only:
        return f" (--{key} is a command-line option only)"
    keys = [setting.key for setting in settings if not setting.hidden]
    dashed = key.replace("_", "-").lower()
    close = [dashed] if dashed in keys else difflib.get_close_matches(dashed, keys, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _shown(setting: Setting, value: Any) -> Any:
    show = setting.action.type.show if isinstance(setting.action.type, OptionType) else None
    if show is None:
        return value
    return [show(item) for item in value] if isinstance(value, list) else show(value)


def _quoted(value: Any) -> str:
    """A value as an error message shows it: as it was written in TOML, cut short."""
    try:
        text = _toml(value)
    except ValueError:
        text = repr(value)
    return text if len(text) <= _QUOTED else text[:_QUOTED] + "…"


def _toml(value: Any) -> str:
    """``value`` as a TOML value; ValueError for what TOML cannot hold."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, str):
        return '"' + _escaped(value) + '"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml(str(k))} = {_toml(v)}" for k, v in value.items()) + "}"
    return _toml(str(value))  # dates and times, as text


def _escaped(text: str) -> str:
    """The inside of a TOML basic string."""
    out = []
    for char in text:
        code = ord(char)
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:  # undecodable bytes of a name: no TOML for them
            raise ValueError(f"not UTF-8 text: {text[:_QUOTED]!r}")
        else:
            out.append(char)
    return "".join(out)


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _comment(text: str) -> str:
    """``text`` fit for a comment: one line, valid UTF-8."""
    escaped = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(f"\\x{ord(c):02x}" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in escaped)
