"""Rich progress bars with rates and ETA, shared by every long job."""

from __future__ import annotations

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


def progress(disable: bool = False) -> Progress:
    """A progress bar: description, bar, n/total, %, rate, elapsed, ETA, and a free `info` field.

    Add tasks with `info=""` (and `unit="img"` to name the rate's unit).
    """
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=disable,
        transient=False,
    )


def status_progress(disable: bool = False) -> Progress:
    """A progress bar for long units of work whose ETA the caller computes: description, bar, n/total, elapsed
    and a free `info` field (rich's rate-based ETA is blank while no unit finished in its last 30 s)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=disable,
        transient=False,
    )
