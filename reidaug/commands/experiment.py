"""`reidaug experiment`: the Table 6 sweep (portions x generators x re-ID configs x seeds) and its report."""

from __future__ import annotations

from pathlib import Path

import typer

from reidaug.commands._common import ConfigOpt, SetOpt


def command(
    config: str | None = ConfigOpt,
    set_: list[str] = SetOpt,
    data: Path | None = typer.Option(None, "--data", "-d", help="Market root (overrides the config's data)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (overrides the config's out)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
) -> None:
    """[bold]Table 6 experiment[/]: for each seed and portion p, re-ID on the reduced set (none), on the set
    augmented by each generator, and on the full real set (p = 1); writes [cyan]results.csv[/],
    [cyan]table6.md[/] (mean ± sd over seeds) and [cyan]map_vs_portion.png[/]. Finished cells are skipped on a
    rerun. Config: [cyan]configs/experiments/table6.yaml[/] (demo: [cyan]experiments/demo[/])."""
    from reidaug.experiment import load_experiment, run_experiment
    from reidaug.utils.progress import console

    overrides = list(set_)
    if data is not None:
        overrides.append(f"data={data}")
    if out is not None:
        overrides.append(f"out={out}")
    cfg = load_experiment(config, overrides)
    paths = run_experiment(cfg, show_progress=not no_progress)
    print(paths["table"].read_text())  # plain stdout: a Markdown table must not be wrapped
    for what, path in paths.items():
        console.print(f"  {what:9s} {path}")
