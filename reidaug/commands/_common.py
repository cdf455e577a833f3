"""Options every command shares."""

from __future__ import annotations

import typer

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config: a path or a name under configs/.")
SetOpt = typer.Option(
    [], "--set", "-s", help="Override any config value, e.g. [cyan]--set train.batch_size=16[/]. Repeatable."
)
OverwriteOpt = typer.Option(False, "--overwrite", help="Replace an existing non-empty output.")
SeedOpt = typer.Option(None, "--seed", help="Random seed (overrides the config's).")
