"""Per-layer progress of pull, push and load, printed as docker's jsonmessage
prints it.

On a terminal each layer has one line, rewritten in place as its progress comes
(cursor up to the layer's line, erase it, write, cursor back down, as docker
does): ``<id>: Downloading [=========>          ]  14.8MB/30.01MB``; the bar
shows when the terminal is wider than 110 columns (docker's rule), the counts
always. Without a terminal (logs, pipes, CI) docker prints only the lines without
byte counts, one per status change: ``<id>: Pull complete``.

A line reads as docker's: ``<subject>: <text>`` (the subject is a layer's short
ID, a tag or nothing); the phase says which lines are per layer and which are
about the whole operation. The counts are the bytes that cross the network: a
layer's compressed blob, downloaded by a pull or sent by a push (not the
uncompressed tar docker's own push counts); a load counts the archive's bytes.

Subjects and texts come from the server (a registry's words may be in them):
they are escaped like every other line (:mod:`imagestore.cli.sanitize`)."""

from __future__ import annotations

import os
from types import TracebackType
from typing import TYPE_CHECKING, Self, TextIO

from imagestore.cli import humanize
from imagestore.cli.sanitize import printable
from imagestore.client import CheckProgress, Phase
from imagestore.client import Progress as Event

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

#: phases of lines about the whole operation or a tag, never a layer's line
HEADINGS = frozenset({Phase.RESOLVING, Phase.SUMMARY})
#: docker's bar: 50 columns of ``=`` with ``>`` at its head
BAR_WIDTH = 50
#: docker draws the bar only on a terminal wider than this
BAR_MIN_COLUMNS = 110
#: what a pull says of every layer before it knows whether it has it
PULLING_FS_LAYER = "Pulling fs layer"
#: docker's (and ANSI's) erase-line, cursor up and cursor down
ERASE_LINE = "\x1b[2K"


def _up(lines: int) -> str:
    return f"\x1b[{lines}A" if lines else ""


def _down(lines: int) -> str:
    return f"\x1b[{lines}B" if lines else ""


def counts(current: int, total: int | None, columns: int) -> str:
    """docker's ``JSONProgress.String()``: the bar (on a wide terminal) and the
    sizes in go-units with 4 significant digits, current padded to 8."""
    if current <= 0 and not total:
        return ""
    here = humanize.size(current, 4)
    if not total or total <= 0:
        return f"{here:>8}"
    filled = min(int(current / total * 100) // 2, BAR_WIDTH)
    bar = ""
    if columns > BAR_MIN_COLUMNS:
        bar = "[" + "=" * filled + ">" + " " * (BAR_WIDTH - filled) + "] "
    if current > total:  # docker drops a total the count has passed
        return f"{bar}{here:>8}"
    return f"{bar}{here:>8}/{humanize.size(total, 4)}"


class ProgressView:
    """Shows a stream of progress events; use as a context manager.

    ``hide_present``: a pull's ``Pulling fs layer`` and ``Already exists`` lines
    wait until some layer has work to do; when none has (the image is up to
    date) they are dropped at the ``Digest:`` line, as docker prints only
    ``Digest:`` and ``Status:`` then. A layer that is already stored shows only
    ``Already exists`` (docker never says it pulls it)."""

    def __init__(
        self,
        out: TextIO,
        *,
        terminal: bool | None = None,
        columns: int | None = None,
        hide_present: bool = False,
    ) -> None:
        self._out = out
        self._terminal = out.isatty() if terminal is None else terminal
        self._columns = columns if columns is not None else _columns(out)
        self._hide_present = hide_present
        self._lines: dict[str, int] = {}  # a layer's line, counted from the first
        self._last: dict[str, str] = {}  # without a terminal: a layer's last text
        self._held: dict[str, Event] = {}  # hide_present: lines not shown yet
        self._working = False  # hide_present: some layer did more than exist

    @property
    def terminal(self) -> bool:
        return self._terminal

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._out.flush()

    def line(self, text: str) -> None:
        """A line of its own: below the layers' lines, which it ends (docker
        starts a new set of layer lines after it)."""
        self._lines.clear()
        self._last.clear()
        self._out.write(printable(text) + "\n")
        self._out.flush()

    def show(self, event: Event) -> None:
        """One progress message: a line, or a layer's line written or rewritten."""
        counted = event.current > 0 or bool(event.total)
        if event.phase in HEADINGS or not (event.subject or counted):
            self._heading(event)
            return
        if self._hide_present and not self._working:
            if event.phase is Phase.ALREADY_EXISTS or (
                event.phase is Phase.WAITING and event.text == PULLING_FS_LAYER
            ):
                self._held[event.subject] = event
                return
            self._working = True
            for held in self._held.values():
                self._layer(held)
            self._held.clear()
        self._layer(event)

    def _heading(self, event: Event) -> None:
        if event.phase in HEADINGS:  # a tag's start or its digest: a new set of layers
            self._held.clear()  # none did work: the image was up to date
            self._working = False
        self.line(f"{event.subject}: {event.text}" if event.subject else event.text)

    def _layer(self, event: Event) -> None:
        subject, text = printable(event.subject), printable(event.text)
        prefix = f"{subject}: " if subject else ""
        if not self._terminal:
            # docker prints no byte counts without a terminal: status changes only
            if event.current > 0 or event.total:
                return
            if self._last.get(event.subject) != event.text:
                self._last[event.subject] = event.text
                self._out.write(f"{prefix}{text}\n")
                self._out.flush()
            return
        shown = f"{prefix}{text} {counts(event.current, event.total, self._columns)}"
        line = self._lines.get(event.subject)
        if line is None:  # a new layer: a new line below the others
            line = self._lines[event.subject] = len(self._lines)
            self._out.write("\n")
        distance = len(self._lines) - line
        self._out.write(f"{_up(distance)}{ERASE_LINE}\r{shown}\r{_down(distance)}")
        self._out.flush()


def _columns(out: TextIO) -> int:
    """The terminal's width; docker assumes 200 when it cannot tell."""
    try:
        return os.get_terminal_size(out.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 200


class CheckMeter:
    """A check's progress: on a terminal, one bar of blobs checked that goes
    away at the end, with each problem printed above it as it comes; otherwise
    only the problems, one line each. Use as a context manager."""

    def __init__(self, out: TextIO, *, terminal: bool | None = None) -> None:
        self._out = out
        self._bars: Progress | None = None
        self._task: TaskID | None = None
        if out.isatty() if terminal is None else terminal:
            # rich only here: the other commands start without importing it
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._bars = Progress(
                TextColumn("Checking blobs", markup=False),
                BarColumn(bar_width=40),
                MofNCompleteColumn(),
                TextColumn("{task.fields[size]}", markup=False),
                console=Console(file=out, highlight=False, markup=False, emoji=False),
                transient=True,
            )

    def __enter__(self) -> Self:
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._bars is not None:
            self._bars.stop()

    def update(self, done: CheckProgress) -> None:
        """Move the bar (blobs checked of all; bytes beside them)."""
        if self._bars is None:
            return
        size = f"{humanize.size(done.bytes_checked)}/{humanize.size(done.bytes_total)}"
        if self._task is None:
            self._task = self._bars.add_task("check", total=done.blobs_total, size=size)
        self._bars.update(
            self._task, completed=done.blobs_checked, total=done.blobs_total, size=size
        )

    def line(self, text: str) -> None:
        """A finding: printed at once, above the bar on a terminal."""
        text = printable(text)
        if self._bars is not None:
            self._bars.console.print(text, markup=False, highlight=False, emoji=False)
        else:
            self._out.write(text + "\n")
            self._out.flush()
