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
    executor: str | None = typer.Option(
        None, "--executor", help="local (this process, the default) | ray (one Ray task per cell on a cluster)."
    ),
    jobs: int | None = typer.Option(
        None, "--jobs", "-j", help="local: cells and generations in this many worker processes at once (default 1)."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray head HOST:PORT (default: RAY_ADDRESS, else the Ray cluster on this machine)."
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
) -> int:
    """[bold]Table 6 experiment[/]: for each seed and portion p, re-ID on the reduced set (none), on the set
    augmented by each generator, and on the full real set (p = 1); writes [cyan]results.csv[/],
    [cyan]table6.md[/] (mean ± sd over seeds) and [cyan]map_vs_portion.png[/]. Finished cells are skipped on a
    rerun. [cyan]--jobs N[/] runs the cells in N worker processes on this machine, [cyan]--executor ray[/] as
    Ray tasks on a cluster (OUT on a shared filesystem); cells that fail there (on Ray after
    [cyan]cluster.retries[/]) are listed, marked in the table, and the exit code is 1; the same command completes
    them. Config: [cyan]configs/experiments/table6.yaml[/] (demo:
    [cyan]experiments/demo[/]); cluster guide: docs/cluster.md."""
    from reidaug.errors import ReidaugError
    from reidaug.experiment import CellsFailed, load_experiment, run_experiment
    from reidaug.utils.progress import console

    overrides = list(set_)
    if data is not None:
        overrides.append(f"data={data}")
    if out is not None:
        overrides.append(f"out={out}")
    if executor is not None:
        overrides.append(f"cluster.executor={executor}")
    if jobs is not None:
        overrides.append(f"cluster.jobs={jobs}")
    cfg = load_experiment(config, overrides)
    if address is not None:  # as given: a YAML reading of HOST:PORT could turn it into a number
        if cfg.cluster.executor != "ray":
            raise ReidaugError("--address is the Ray head's: use it with --executor ray")
        cfg.cluster.address = address
    failed: dict[str, str] = {}
    try:
        paths = run_experiment(cfg, show_progress=not no_progress)
    except CellsFailed as e:
        paths, failed = e.paths, e.failed
    if "table" in paths:
        print(paths["table"].read_text())  # plain stdout: a Markdown table must not be wrapped
    for what, path in paths.items():
        console.print(f"  {what:9s} {path}")
    if failed:
        retried = " after their retries" if cfg.cluster.executor == "ray" else ""
        console.print(f"{len(failed)} cell(s) failed{retried} (rerun the same command to complete them):",
                      style="red", markup=False)  # fmt: skip
        for name, reason in failed.items():
            console.print(f"  {name}: {reason}", style="red", markup=False, soft_wrap=True)
        return 1
    return 0
