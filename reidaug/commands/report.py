"""`reidaug report`: one HTML page of an experiment folder."""

from __future__ import annotations

from pathlib import Path

import typer


def command(
    experiment: Path = typer.Argument(..., help="An experiment folder (reidaug experiment --out)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="HTML file to write (default EXPERIMENT/report.html)."),
) -> None:
    """[bold]Experiment report[/]: a self-contained HTML page (plus PNGs) with the Table 6 table and plot, the
    gap closed per portion, each generator's image metrics, samples and training losses, and the configs,
    versions and checkpoints used. Opens from disk in a browser."""
    from reidaug.report import write_html_report
    from reidaug.utils.progress import console

    path = write_html_report(experiment, out)
    console.print(f"[green]report[/] {path}")
