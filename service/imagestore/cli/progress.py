"""Per-layer progress of pull, push and load: live bars on a terminal (rich),
one plain line per status change otherwise (logs, pipes, CI).

Layer ids and statuses come from the server (a registry's words may be in them):
they are escaped like every other line (:mod:`imagestore.cli.sanitize`), and rich
is told to read them as plain text, neither markup (``[bold]``) nor emoji codes."""

from __future__ import annotations

from types import TracebackType
from typing import Self, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from imagestore.cli.sanitize import printable
from imagestore.client import Progress as Event

#: statuses after which a layer's line stays as it is
FINAL = ("Pull complete", "Already exists", "Pushed", "Layer already exists", "Mounted from")


class ProgressView:
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
        if not event.id or self._is_heading(event):
            self.line(f"{event.id}: {event.status}" if event.id else event.status)
            return
        if self._bars is None:
            if self._last.get(event.id) != event.status:
                self._last[event.id] = event.status
                self.line(f"{event.id}: {event.status}")
            return
        status = printable(event.status)
        task = self._tasks.get(event.id)
        if task is None:
            task = self._bars.add_task(status, layer=printable(f"{event.id}:"), total=None)
            self._tasks[event.id] = task
        if event.total:
            self._bars.update(task, description=status, completed=event.current, total=event.total)
        elif event.status.startswith(FINAL):
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
        return event.status.startswith("Pulling from ")
