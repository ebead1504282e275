"""Per-layer progress of pull, push and load: live bars on a terminal (rich),
one plain line per status change otherwise (logs, pipes, CI).

A line reads as docker's: ``<subject>: <text>`` (the subject is a layer's short
ID, a tag or nothing); the phase says which lines are per layer, which end a
layer, and which are about the whole operation; the bars count current/total.

Subjects and texts come from the server (a registry's words may be in them):
they are escaped like every other line (:mod:`imagestore.cli.sanitize`), and rich
is told to read them as plain text, neither markup (``[bold]``) nor emoji codes."""

from __future__ import annotations

from types import TracebackType
from typing import Self, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from imagestore.cli import humanize
from imagestore.cli.sanitize import printable
from imagestore.client import CheckProgress, Phase
from imagestore.client import Progress as Event

#: phases after which a layer's line stays as it is
FINAL = frozenset(
    {Phase.COMPLETE, Phase.ALREADY_EXISTS, Phase.PUSHED, Phase.EXISTS_REMOTELY, Phase.MOUNTED}
)
#: phases of lines about the whole operation or a tag, never a layer's bar
HEADINGS = frozenset({Phase.RESOLVING, Phase.SUMMARY})


class _LiveBars:
    """Rich bars started and stopped by a ``with`` block (None: not a terminal)."""

    _bars: Progress | None = None

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
            self._stopped()

    def _stopped(self) -> None:
        """What follows the bars once they stop."""


class ProgressView(_LiveBars):
    """Shows a stream of progress events; use as a context manager."""

    def __init__(self, out: TextIO, *, terminal: bool | None = None) -> None:
        self._out = out
        self._terminal = out.isatty() if terminal is None else terminal
        self._last: dict[str, str] = {}
        self._tasks: dict[str, TaskID] = {}
        self._bars: Progress | None = None
        self._after: list[str] = []  # lines that follow the bars (docker's order)
        if self._terminal:
            self._bars = Progress(
                TextColumn("{task.fields[layer]}", markup=False),
                TextColumn("{task.description:<18}", markup=False),
                BarColumn(bar_width=40),
                DownloadColumn(binary_units=False),
                TransferSpeedColumn(),
                console=Console(file=out, highlight=False, markup=False, emoji=False),
                transient=False,
            )

    @property
    def terminal(self) -> bool:
        return self._terminal

    def _stopped(self) -> None:
        for text in self._after:
            self._out.write(text + "\n")
        self._out.flush()

    def line(self, text: str) -> None:
        """A line: above the bars before any layer showed, after them once one has."""
        text = printable(text)
        if self._bars is not None and self._tasks:
            self._after.append(text)
        elif self._bars is not None:
            self._bars.console.print(text, markup=False)
        else:
            self._out.write(text + "\n")
            self._out.flush()

    def show(self, event: Event) -> None:
        """One progress message: a line, or a layer's bar (or line) updated."""
        subject = event.subject
        if not subject or self._is_heading(event):
            self.line(f"{subject}: {event.text}" if subject else event.text)
            return
        if self._bars is None:
            if self._last.get(subject) != event.text:
                self._last[subject] = event.text
                self.line(f"{subject}: {event.text}")
            return
        status = printable(event.text)
        task = self._tasks.get(subject)
        if task is None:
            task = self._bars.add_task(status, layer=printable(f"{subject}:"), total=None)
            self._tasks[subject] = task
        if event.total:
            self._bars.update(task, description=status, completed=event.current, total=event.total)
        elif event.phase in FINAL:
            total = self._bars.tasks[self._index(task)].total
            self._bars.update(task, description=status, completed=total or 1, total=total or 1)
        else:
            self._bars.update(task, description=status)

    def _index(self, task: TaskID) -> int:
        assert self._bars is not None
        return next(i for i, t in enumerate(self._bars.tasks) if t.id == task)

    @staticmethod
    def _is_heading(event: Event) -> bool:
        """``latest: Pulling from library/x`` names a tag, not a layer."""
        return event.phase in HEADINGS


class CheckMeter(_LiveBars):
    """A check's progress: on a terminal, one bar of blobs checked that goes
    away at the end, with each problem printed above it as it comes; otherwise
    only the problems, one line each. Use as a context manager."""

    def __init__(self, out: TextIO, *, terminal: bool | None = None) -> None:
        self._out = out
        self._bars: Progress | None = None
        self._task: TaskID | None = None
        if out.isatty() if terminal is None else terminal:
            self._bars = Progress(
                TextColumn("Checking blobs", markup=False),
                BarColumn(bar_width=40),
                MofNCompleteColumn(),
                TextColumn("{task.fields[size]}", markup=False),
                console=Console(file=out, highlight=False, markup=False, emoji=False),
                transient=True,
            )

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
