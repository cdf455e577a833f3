"""`reidaug metrics`: image-quality metrics of a generation output against the real images it should match."""

from __future__ import annotations

from pathlib import Path

import typer

from reidaug.commands._common import ConfigOpt, SetOpt


def command(
    generated: Path = typer.Option(..., "--generated", "-g", help="A generate / augment output (images + manifest.csv)."),
    data: Path = typer.Option(..., "--data", "-d", help="Market-1501 root holding the real target images."),
    pairs: Path | None = typer.Option(None, "--pairs", help="Score exactly these from,to pairs (all must be generated)."),
    split: str | None = typer.Option(
        None, "--split", help="test: the 12,000 standard Market test pairs (give their CSV with --pairs)."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="JSON to write (default GENERATED/metrics.json)."),
    annotations: list[Path] = typer.Option([], "--annotations", "-a", help="Keypoint CSV(s) of the targets."),
    metrics: str | None = typer.Option(None, "--metrics", "-m", help="Comma list (default: all)."),
    weights: list[str] = typer.Option([], "--weights", help="NAME=PATH network weights: inception, lpips."),
    allow_random_weights: bool = typer.Option(
        False, "--allow-random-weights", help="Compute network metrics on seeded random weights (marked)."
    ),
    pose_backend: str | None = typer.Option(None, "--pose-backend", help="reidaug poses backend for PCKh."),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda."),
    config: str | None = ConfigOpt,
    set_: list[str] = SetOpt,
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """[bold]Score generated images[/]: SSIM (the reference scripts' data-range quirk and range 255),
    mask-SSIM, L1, IS, mask-IS, FID, KID, LPIPS and PCKh over a generation folder, each generated image against
    the real image its manifest names. Network metrics use weights from the libraries' caches or
    [cyan]--weights NAME=PATH[/] and are skipped (one line each) without them. Writes JSON and prints a table.
    Config: [cyan]configs/metrics.yaml[/]; definitions: docs/metrics.md."""
    from reidaug.config import load_config
    from reidaug.data.market import check_root
    from reidaug.errors import ReidaugError
    from reidaug.metrics.generated import MetricsConfig, compute_metrics, skipped_lines, write_metrics
    from reidaug.utils.io import check_writable
    from reidaug.utils.progress import console

    check_root(data)
    overrides = list(set_)
    if metrics is not None:
        overrides.append(f"metrics=[{metrics}]")
    for item in weights:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ReidaugError(f"--weights expects NAME=PATH, got {item!r}")
        overrides.append(f"weights.{name}={path}")
    for key, value in (("pose_backend", pose_backend), ("device", device)):
        if value is not None:
            overrides.append(f"{key}={value}")
    if allow_random_weights:
        overrides.append("allow_random_weights=true")
    if split not in (None, "test"):
        raise ReidaugError(f"--split must be test, got {split!r}")
    if split == "test":
        if pairs is None:
            raise ReidaugError("--split test scores the 12,000 standard test pairs: give their CSV with --pairs")
        from reidaug.data.pairs import read_pairs

        if len(read_pairs(pairs)) != 12_000:
            raise ReidaugError(f"--split test expects the 12,000 standard test pairs; {pairs} has {len(read_pairs(pairs))}")
    cfg = load_config(MetricsConfig, config or "metrics", overrides)
    out = out or generated / "metrics.json"
    if out.suffix.lower() != ".json":
        raise ReidaugError(f"metrics output {out} must be a .json file")
    check_writable(out, "file")  # before the work, not after it
    result = compute_metrics(generated, data, pairs=pairs, annotations=annotations or None, cfg=cfg,
                             show_progress=not no_progress)  # fmt: skip
    write_metrics(result, out)
    from rich.table import Table

    t = Table(title=f"{result['images']:,} generated images", show_header=True)
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in result["metrics"].items():
        mark = " (random weights)" if k.split("_std")[0] in result["random_weights"] else ""
        t.add_row(k, (f"{v:,}" if isinstance(v, int) else f"{v:.4f}") + mark)
    console.print(t)
    for line in skipped_lines(result):
        console.print(line, style="yellow", soft_wrap=True, markup=False)
    console.print(f"[green]metrics[/] {out}")
