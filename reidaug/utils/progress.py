"""Rich progress bars with rates and ETA, shared by every long job.

On a terminal a live bar; anywhere else (a CI log, `make demo > log`) the same columns as plain lines, each on
one line: one when a task finishes and one every `log_every_s` seconds while it runs (rich's own display would
print its final state only, wrapped at 80 columns)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True, soft_wrap=True)  # messages are never wrapped: a log line stays one line


class RateColumn(ProgressColumn):
    """Items per second, with the unit of the task (`unit` field)."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "it")
        return Text("?" if speed is None else f"{speed:,.1f} {unit}/s", style="progress.data.speed")


class LogProgress(Progress):
    """A Progress that writes its tasks as log lines instead of a live display (the columns' text, no bar).
    A finished task's line waits for the next event (another task, the end), so it shows its final `info`; a task
    added with `summary=False` has none (its caller logs a summary line of its own)."""

    def __init__(self, *columns, log_every_s: float, **kwargs):
        super().__init__(*columns, **kwargs)
        self.log_every_s, self.logged_at, self.done_ids, self.pending = log_every_s, {}, set(), None

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.flush()
        for task in self.tasks:
            if task.id not in self.done_ids and task.completed and task.fields.get("summary", True):
                self.write_line(task)

    def add_task(self, *args, **kwargs):
        self.flush()
        return super().add_task(*args, **kwargs)

    def update(self, task_id, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self.tick(task_id)

    def advance(self, task_id, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self.tick(task_id)

    def flush(self) -> None:
        if self.pending is not None:
            task, self.pending = self._tasks[self.pending], None
            self.write_line(task)

    def tick(self, task_id) -> None:
        if self.pending not in (None, task_id):
            self.flush()
        if self.disable or task_id in self.done_ids:
            return
        task = self._tasks[task_id]
        if task.finished:
            self.done_ids.add(task_id)
            self.pending = task_id if task.fields.get("summary", True) else None
        elif time.monotonic() - self.logged_at.get(task_id, task.start_time or time.monotonic()) >= self.log_every_s:
            self.write_line(task)

    def line(self, task) -> str:
        parts = []
        for column in self.columns:
            if isinstance(column, BarColumn):
                continue
            cell = column(task) if isinstance(column, ProgressColumn) else Text(column.format(task=task))
            parts.append(cell.plain if isinstance(cell, Text) else str(cell))
        return "  ".join(p.strip() for p in parts if p.strip())

    def write_line(self, task) -> None:
        if self.disable:
            return
        self.logged_at[task.id] = time.monotonic()
        self.console.print(self.line(task), soft_wrap=True, markup=False, highlight=False)


def _make(*columns, disable: bool, log_every_s: float) -> Progress:
    kwargs = dict(console=console, disable=disable, transient=False)
    if console.is_terminal:
        return Progress(*columns, **kwargs)
    return LogProgress(*columns, log_every_s=log_every_s, **kwargs)


def progress(disable: bool = False, log_every_s: float = 30.0) -> Progress:
    """A progress bar: description, bar, n/total, %, rate, elapsed, ETA, and a free `info` field.

    Add tasks with `info=""` (and `unit="img"` to name the rate's unit).
    """
    return _make(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        disable=disable,
        log_every_s=log_every_s,
    )


def status_progress(disable: bool = False, log_every_s: float = 30.0) -> Progress:
    """A progress bar for long units of work whose ETA the caller computes: description, bar, n/total, elapsed
    and a free `info` field (rich's rate-based ETA is blank while no unit finished in its last 30 s)."""
    return _make(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        disable=disable,
        log_every_s=log_every_s,
    )
